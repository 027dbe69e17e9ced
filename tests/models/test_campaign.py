"""The randomized probe campaign in CI (models.campaign): training configurations drawn across every imported
family × method × precision × optimizer × checkpointing × attention kernel × shapes, each probed on the cpu backend.

Two bounded runs (about 20 draws, under a minute on this project's 2-core machine):
- hypothesis draws (derandomized: a fixed seed, no example database): weights and trainable weights exact on every
  draw, a planner refusal is one peft (or the probe) makes too, and the probe compares with the device it ran on;
- seeded draws (random.Random(CI_SEED), the generator of `benchmarks/validate.py --random`): each draw holds every
  claim (peak within 1 %, saved activations exact) or is one of the misses the README lists as open, which must
  still miss (strict: a fix updates KNOWN_MISSES and the README).
"""

from __future__ import annotations

import random

import pytest

pytest.importorskip("torch")
pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, Phase, given, settings

from models.campaign import Draw, check_draw, draws, random_draw, shrink
from models.runner import run_probe
from planner.probe import ProbeRequest, ProbeResult

HYPOTHESIS_DRAWS = 10
CI_SEED, SEEDED_DRAWS = 19, 12
# seeded draws that miss today, by index, with what misses (measured on torch 2.13 CPU, transformers 5.23, peft 0.21.2);
# the classes are the README's open misses (#2, LoRA dropout on gate/q/k/o checkpointed, peak −2.9 %, holds since the
# recompute's moment at gate_proj's lora_B scaling; #9, Qwen3 full fine-tuning under autocast on SDPA math, saved
# +2.5 %, peak +1.5 %, holds since Qwen3's q/k norms keep their normalized x in bf16; #11, Mixtral full fine-tuning
# with for-loop AdamW, first-step peak −3.3 %, holds since the for-loop's temporaries follow the fused expert
# parameters and the previous tensor's denominator; #5, Gemma prefix MLP under autocast, saved −0.65 %, peak −3.85 %,
# and #6, Qwen2-MoE prefix MLP under autocast on eager, saved +1.68 %, hold since the prefix MLP keeps bf16 casts
# under autocast, the loss_forward moment and the bf16 gated shared expert: tests/models/test_training_misses_8.py)
KNOWN_MISSES: dict[int, str] = {}


@settings(max_examples=HYPOTHESIS_DRAWS, derandomize=True, database=None, deadline=None,
          phases=[Phase.explicit, Phase.generate], suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(draws())
def test_random_draws_have_exact_weights_and_peft_refusals(d: Draw) -> None:
    outcome = check_draw(d)
    if outcome.result is None:
        assert not outcome.misses, outcome.misses  # a planner refusal peft does not make is a miss
        assert outcome.refused is not None
        return
    assert outcome.result.training is not None and outcome.result.training.device == "cpu"
    by_name = {c.name: c for c in outcome.result.comparisons}
    for name in ("weights", "trainable_weights"):
        assert by_name[name].measured_bytes == by_name[name].estimated_bytes, (d.label(), name)


def _seeded() -> list[Draw]:
    rng = random.Random(CI_SEED)
    return [random_draw(rng) for _ in range(SEEDED_DRAWS)]


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors:UserWarning")  # Qwen2-MoE's 0-wide shared expert
@pytest.mark.parametrize("index", range(SEEDED_DRAWS))
def test_seeded_draw_holds_every_claim_or_is_a_known_miss(index: int) -> None:
    d = _seeded()[index]
    outcome = check_draw(d)
    if index in KNOWN_MISSES:
        assert outcome.misses, f"#{index} ({KNOWN_MISSES[index]}) no longer misses: update KNOWN_MISSES and the README"
    else:
        assert not outcome.misses, f"#{index} {d.label()}: {outcome.misses}"


def test_a_miss_is_reported_and_shrunk() -> None:
    # a planner that overstates every peak by 2 % and undercounts saved tensors by one byte misses on every draw;
    # shrinking keeps the miss while it simplifies the draw
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
