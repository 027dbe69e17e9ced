"""`memplan probe`: flags and request files map onto one ProbeRequest; the runner is patched (no torch here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import service.cli_probe
from planner import FieldProblem, ServingSpec, SpecError
from planner.probe import ProbeRequest, ProbeResult
from planner.serving.spec import Engine
from planner.training.spec import AttentionImpl, Checkpointing, LoRASpec, TrainingSpec
from service.cli import app
from tests.service import probe_runners
from tests.service.probe_runners import canned

runner = CliRunner()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[ProbeRequest]:
    """Record every request the CLI hands to the runner, and answer with the canned result."""
    seen: list[ProbeRequest] = []

    def recording(request: ProbeRequest, progress: object = None) -> ProbeResult:
        seen.append(request)
        return canned(request)

    monkeypatch.setattr(service.cli_probe, "run_probe", recording)
    return seen


def probe(*args: str) -> Any:
    return runner.invoke(app, ["probe", *args])


def test_training_flags_map_onto_one_request(calls: list[ProbeRequest]) -> None:
    args = [
        "--model", "qwen2.5-7b", "--backend", "cpu", "--method", "lora", "--rank", "8",
        "--checkpointing", "full", "--attention", "eager", "--seq-len", "256", "--micro-batch", "4",
    ]  # fmt: skip
    result = probe(*args)
    assert result.exit_code == 0, result.output
    training = TrainingSpec(
        method=LoRASpec(rank=8),
        gradient_checkpointing=Checkpointing.FULL,
        attention=AttentionImpl.EAGER,
        sequence_length=256,
        micro_batch_size=4,
    )
    assert calls == [ProbeRequest(model="qwen2.5-7b", backend="cpu", training=training)]


def test_no_flags_is_the_default_probe(calls: list[ProbeRequest]) -> None:
    assert probe().exit_code == 0
    assert calls == [ProbeRequest()]


def test_one_flag_keeps_the_small_default_workload(calls: list[ProbeRequest]) -> None:
    assert probe("--seq-len", "256").exit_code == 0
    assert calls[0].training == TrainingSpec(sequence_length=256, micro_batch_size=2)


def test_inference_flags(calls: list[ProbeRequest]) -> None:
    result = probe("--kind", "inference", "--model", "deepseek-v2-lite", "--seq-len", "64", "--micro-batch", "3")
    assert result.exit_code == 0, result.output
    serving = ServingSpec(engine=Engine.TRANSFORMERS, prompt_tokens=64, output_tokens=8, concurrency=3)
    assert calls == [ProbeRequest(kind="inference", model="deepseek-v2-lite", serving=serving)]


def test_flags_override_the_request_file(calls: list[ProbeRequest], tmp_path: Path) -> None:
    file = tmp_path / "probe.json"
    body = {"model": "llama-3-8b", "training": {"method": {"kind": "lora", "rank": 16}, "sequence_length": 512}}
    file.write_text(json.dumps(body))
    assert probe("--request", str(file), "--rank", "4", "--backend", "fake").exit_code == 0
    expected = ProbeRequest.model_validate(body).model_copy(
        update={"backend": "fake", "training": TrainingSpec(method=LoRASpec(rank=4), sequence_length=512)}
    )
    assert calls == [expected]


def test_table_and_json_output(calls: list[ProbeRequest]) -> None:
    table = probe().output
    assert "component  measured B  estimated B  rel error  exact?" in table
    assert "weights" in table and "+25.00%" in table
    assert ProbeResult.model_validate_json(probe("--json").output) == canned(ProbeRequest())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "inference", "--rank", "4"], "--rank: applies to training probes only"),
        (["--kind", "eval"], "kind"),
        (["--backend", "tpu"], "backend"),
        (["--model", "gpt-9"], "unknown model id 'gpt-9'"),
        (["--method", "lora", "--rank", "0"], "training.method.lora.rank"),
        (["--model", "llama-3-8b", "--seq-len", "0"], "training.sequence_length"),
        (["--request", "/nonexistent/probe.json"], "probe.json"),
    ],
)
def test_bad_input_exits_2_before_running(calls: list[ProbeRequest], args: list[str], message: str) -> None:
    result = probe(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert calls == []


def _raising(exc: BaseException) -> Any:
    def run(request: ProbeRequest, progress: object = None) -> ProbeResult:
        raise exc

    return run


@pytest.mark.parametrize(
    ("exc", "code", "message"),
    [
        (MemoryError(), 1, "error: the probe failed: out of memory"),
        (RuntimeError("CUDA error: device-side assert"), 1, "RuntimeError: CUDA error: device-side assert"),
        (ModuleNotFoundError("No module named 'torch'"), 1, "pip install -e '.[probe]'"),
        (SpecError([FieldProblem(("serving", "engine"), "the probe serves with transformers")]), 2, "serving.engine"),
    ],
)
def test_runner_failures(monkeypatch: pytest.MonkeyPatch, exc: BaseException, code: int, message: str) -> None:
    monkeypatch.setattr(service.cli_probe, "run_probe", _raising(exc))
    result = probe()
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_run_probe_calls_the_configured_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEMPLAN_PROBE_RUNNER", f"{probe_runners.MODULE}:canned")
    result = probe("--json")
    assert result.exit_code == 0, result.output
    assert ProbeResult.model_validate_json(result.output) == canned(ProbeRequest())
