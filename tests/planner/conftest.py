"""Fixtures shared by the planner tests."""

from __future__ import annotations

import pytest

from planner import load_catalog
from planner.calibration.kernels import load_kernel_tables
from planner.serving import scheduler, steady_state
from planner.serving.step_time import ServingShape, StepModel, build_step_model


@pytest.fixture(scope="module")
def llama8b_h100_vllm() -> StepModel:
    """Llama-3.1-8B on one H100 with vLLM's kernel tables: the step model the scheduler tests simulate."""
    spec = load_catalog().model("llama-3.1-8b").spec
    tables = load_kernel_tables("h100-sxm", "vllm")
    assert tables is not None
    return build_step_model(ServingShape(spec, 1, 1, 1, "bf16", "bf16", "bf16", 0.0, 0.0), tables)


@pytest.fixture
def jumps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The periods each steady-state jump of a test skipped (planner.serving.steady_state.jump, counted)."""
    taken: list[int] = []
    jump = steady_state.jump

    def counting(sim: scheduler._Simulation, before: steady_state.Mark, now: steady_state.Mark, k: int) -> None:
        taken.append(k)
        jump(sim, before, now, k)

    monkeypatch.setattr(steady_state, "jump", counting)
    return taken
