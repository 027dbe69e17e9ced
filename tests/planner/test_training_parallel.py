"""Tensor, sequence, pipeline and context parallel training: Megatron shards, Korthikanti activations, the bubble."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from planner import SpecError, TrainingRequest, TrainingSpec, estimate_training, load_catalog
from planner.training.memory import training_phases
from planner.training.parallel import (
    block_activation_fraction,
    in_flight_fraction,
    model_shard_fraction,
    pipeline_bubble_fraction,
)
from planner.training.peft_params import trainable_params
from planner.training.spec import Checkpointing

CATALOG = load_catalog()
LLAMA_70B = CATALOG.model("llama-3-70b")
GIB = 1 << 30


def test_most_loaded_shard_is_megatrons() -> None:
    # Llama-3-70B: N = 70,553,706,496; V·h = 128,256 · 8,192 = 1,050,673,152 (embedding, and again the lm_head);
    # final norm 8,192; layers = N − 2·V·h − 8,192 = 68,452,352,000.
    c = LLAMA_70B.params
    layers = c.total - 2 * 1_050_673_152 - 8_192
    assert layers == 68_452_352_000
    # TP 8, PP 1: (layers + V·h + V·h)/8 (the untied lm_head on the one stage)
    assert model_shard_fraction(c, 8, 1) == pytest.approx((layers + 2 * 1_050_673_152) / 8 / c.total)
    # TP 2, PP 4: the first stage has 20 of 80 layers and the embedding, (layers/4 + V·h)/2 = 9.08e9 parameters
    assert model_shard_fraction(c, 2, 4) * c.total == pytest.approx(layers / 4 / 2 + 1_050_673_152 / 2)
    assert model_shard_fraction(c, 1, 1) == 1.0


def test_activation_fractions_follow_korthikanti_table_2() -> None:
    assert block_activation_fraction(8, True, Checkpointing.NONE) == 1 / 8  # sbh(34/t): everything splits
    assert block_activation_fraction(8, False, Checkpointing.NONE) == pytest.approx((10 + 24 / 8) / 34)  # 0.382
    assert block_activation_fraction(8, False, Checkpointing.FULL) == 1.0  # 2sbh block inputs stay replicated
    assert block_activation_fraction(1, False, Checkpointing.NONE) == 1.0


def test_pipeline_in_flight_and_bubble() -> None:
    # first stage of 4 with 16 micro-batches: 20 layers × 4 in flight = all 80 layers' worth; with 2: half
    assert in_flight_fraction(4, 16) == 1.0
    assert in_flight_fraction(4, 2) == 0.5
    assert in_flight_fraction(4, 16, first_stage=False) == 0.25
    assert pipeline_bubble_fraction(4, 16) == 3 / 16


def _phases(**training: object) -> dict[str, int]:
    t = TrainingSpec.model_validate(training)
    spec = LLAMA_70B.spec
    return {k: v.total_bytes for k, v in training_phases(spec, t, trainable_params(spec, t.method)).phases.items()}


def test_tensor_parallel_divides_weights_and_states_by_the_shard() -> None:
    # full fine-tuning, bf16, torch AdamW (bf16 states): the optimizer step holds weights 2 + grads 2 + m, v 4 +
    # foreach temporaries 2 = 10 B per parameter, and RoPE's inv_freq and original_inv_freq (2 · 4·64 B); TP 8 keeps
    # 1/8 of the shard (less the replicated final norm)
    one = _phases()["optimizer_step"]
    assert one == 10 * LLAMA_70B.params.total + 2 * 4 * 64
    eight = _phases(tensor_parallel=8)["optimizer_step"]
    assert eight == pytest.approx(one / 8, rel=1e-6)


def test_sequence_parallel_divides_saved_activations() -> None:
    spec = LLAMA_70B.spec
    base = TrainingSpec(micro_batch_size=1)
    blocks = (
        training_phases(spec, base, trainable_params(spec, base.method))
        .phases["loss_backward"]
        .get("activations/blocks")
    )
    for sp, fraction in ((True, 1 / 4), (False, (10 + 24 / 4) / 34)):
        t = base.model_copy(update={"tensor_parallel": 4, "sequence_parallel": sp})
        phase = training_phases(spec, t, trainable_params(spec, t.method)).phases["loss_backward"]
        assert phase.get("activations/blocks") == int(blocks * fraction)


def test_pipeline_stages_are_both_candidate_peaks() -> None:
    phases = _phases(tensor_parallel=4, pipeline_parallel=2, gradient_accumulation_steps=8)
    assert {"first_stage/loss_backward", "last_stage/loss_backward", "optimizer_step"} <= set(phases)
    spec = LLAMA_70B.spec
    t = TrainingSpec(tensor_parallel=4, pipeline_parallel=2, gradient_accumulation_steps=8)
    detail = training_phases(spec, t, trainable_params(spec, t.method)).phases
    # the logits live on the last stage only (÷ TP by the vocabulary-parallel cross-entropy)
    assert detail["first_stage/loss_backward"].get("activations/logits_grads") == 0
    single = TrainingSpec(gradient_accumulation_steps=8)
    logits = training_phases(spec, single, trainable_params(spec, single.method)).phases["loss_backward"]
    assert detail["last_stage/loss_backward"].get("activations/logits_grads") == int(
        logits.get("activations/logits_grads") / 4
    )
    # first stage: 2 of 2 micro-batches in flight over 40 layers = 80 layers' worth; last stage: 40 layers' worth
    first = detail["first_stage/loss_backward"].get("activations/blocks")
    last = detail["last_stage/loss_backward"].get("activations/blocks")
    assert first == pytest.approx(2 * last, rel=1e-6)


@pytest.mark.parametrize(
    "method",
    [
        {"kind": "full"},
        {"kind": "lora", "rank": 8},
        {"kind": "lora", "rank": 8, "target_modules": "all-linear", "dropout": 0.1},  # the forward's own moment
        {"kind": "qlora", "rank": 8},
        {"kind": "prefix"},
        {"kind": "prompt"},
        {"kind": "ia3"},
        {"kind": "adapter"},
    ],
)
@pytest.mark.parametrize("checkpointing", ["none", "full"])
def test_every_ledger_term_has_a_parallel_rule(method: dict[str, object], checkpointing: str) -> None:
    for attention in ("sdpa", "eager"):
        phases = _phases(
            method=method,
            gradient_checkpointing=checkpointing,
            attention=attention,
            tensor_parallel=2,
            pipeline_parallel=2,
            context_parallel=2,
            gradient_accumulation_steps=2,
        )
        assert all(v > 0 for v in phases.values())
        if method.get("target_modules") == "all-linear" and checkpointing == "none":
            assert {"first_stage/forward", "last_stage/forward"} <= set(phases)


def test_offload_moves_the_optimizer_to_the_cpu() -> None:
    spec = LLAMA_70B.spec
    t = TrainingSpec(data_parallel=8, zero_stage=3, offload_optimizer=True)
    step = training_phases(spec, t, trainable_params(spec, t.method)).phases["optimizer_step"]
    assert not [term.name for term in step.terms if term.name.startswith("optimizer/")]
    with pytest.raises(ValidationError, match="offload_optimizer needs zero_stage"):
        TrainingSpec(offload_optimizer=True)


def test_throughput_adds_the_bubble_and_the_collectives() -> None:
    request = TrainingRequest(
        model="llama-3-70b",
        gpu="h100-sxm",
        training={
            "tensor_parallel": 8,
            "pipeline_parallel": 4,
            "data_parallel": 2,
            "gradient_accumulation_steps": 16,
            "gradient_checkpointing": "full",
        },
    )
    e = estimate_training(request, CATALOG)
    assert e.num_gpus == 64
    tp = e.throughput
    assert tp.pipeline_bubble_fraction == 3 / 16
    assert tp.tensor_parallel_s > 0 and tp.pipeline_send_s > 0
    assert tp.step_time_s == pytest.approx(
        max(tp.compute_s * (1 + 3 / 16) + tp.tensor_parallel_s + tp.pipeline_send_s, tp.communication_s)
    )
    # 64 GPUs: 64× the single-GPU compute rate, less the bubble and the exposed collectives
    assert e.fits


@pytest.mark.parametrize(
    ("training", "field"),
    [
        ({"tensor_parallel": 3}, "tensor_parallel"),
        ({"pipeline_parallel": 81}, "pipeline_parallel"),
        ({"context_parallel": 3}, "context_parallel"),
        ({"context_parallel": 2, "attention": "eager"}, "context_parallel"),
    ],
)
def test_impossible_layouts_are_spec_errors(training: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        estimate_training(TrainingRequest(model="llama-3-70b", training=training), CATALOG)
    assert info.value.problems[0].loc == ("training", field)


def test_context_parallel_divides_activations_and_costs_ring_transfers() -> None:
    long = {"sequence_length": 65536, "gradient_checkpointing": "full", "tensor_parallel": 8}
    one = estimate_training(TrainingRequest(model="llama-3-70b", training=long), CATALOG)
    four = estimate_training(TrainingRequest(model="llama-3-70b", training={**long, "context_parallel": 4}), CATALOG)
    saved = "activations/checkpoint_inputs"
    assert four.phases["loss_backward"].get(saved) == pytest.approx(one.phases["loss_backward"].get(saved) / 4, 1e-6)
    assert four.num_gpus == 32
    assert four.throughput.context_parallel_s >= 0.0
