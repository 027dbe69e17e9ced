"""The randomized probe campaign, bounded for CI: hypothesis draws training configurations across every imported
family × method × precision × optimizer × checkpointing × attention kernel × shapes (models.campaign), probes each
on the cpu backend and asserts that the peak is within 1 % and that weights, trainable weights and saved
activations are exact; a planner refusal must be one peft makes too. Draws the probe cannot run (QLoRA, Houlsby
adapters, 8-bit AdamW: no bitsandbytes, no peft method) are refused by name. The seed is fixed (derandomize);
`benchmarks/validate.py --random N --seed S` runs the long campaign and shrinks every miss.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings

from models.campaign import UNPROBEABLE, Draw, check_draw, draws

CI_DRAWS = 24  # ~1 s a draw on this project's 2-core machine


@settings(max_examples=CI_DRAWS, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(draws())
def test_random_training_probe_matches_planner(d: Draw) -> None:
    outcome = check_draw(d)
    assert not outcome.misses, f"{d.label()}: {outcome.misses}"
    if outcome.refused:  # the probe cannot run it (named in UNPROBEABLE or models.support), or peft refuses it too
        assert (
            d.method in UNPROBEABLE
            or d.optimizer in UNPROBEABLE
            or "(peft:" in outcome.refused
            or ("training." in outcome.refused)
        ), outcome.refused
    if outcome.result is not None:
        assert outcome.result.training is not None and outcome.result.training.device == "cpu"


def test_a_miss_is_reported_and_shrunk() -> None:
    # a planner that overstates every peak by 2 % and undercounts saved tensors by one byte misses on every draw;
    # shrinking keeps the miss while it simplifies the draw
    from models.campaign import shrink
    from models.runner import run_probe
    from planner.probe import ProbeRequest, ProbeResult

    def biased(request: ProbeRequest) -> ProbeResult:
        r = run_probe(request)
        off = tuple(
            c.model_copy(update={"estimated_bytes": c.estimated_bytes - 1, "rel_error": -1 / c.measured_bytes})
            if c.name == "saved_activations"
            else c.model_copy(update={"rel_error": 0.02})
            if c.name.startswith("peak/")
            else c
            for c in r.comparisons
        )
        return r.model_copy(update={"comparisons": off})

    d = Draw("llama", 4, "gqa", 12, 2.25, 4, 200, method="lora", targets=("q_proj", "v_proj"), batch=2, seq=24)
    outcome = check_draw(d, run=biased)
    assert any(m.startswith("saved_activations") for m in outcome.misses)
    assert any(m.startswith("peak/steady") for m in outcome.misses)
    simpler = shrink(d, lambda x: bool(check_draw(x, run=biased).misses), max_tries=6)
    assert simpler != d and bool(check_draw(simpler, run=biased).misses)
