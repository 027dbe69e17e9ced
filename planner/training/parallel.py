"""Training with tensor, sequence, pipeline and context parallelism (Megatron-style), in memory and in time.

Memory: the single-GPU ledger (planner.training.memory) sizes every term for the whole model and one micro-batch;
each term is then divided as Megatron-LM divides it: parameters, gradients and optimizer states by the most loaded
TP × PP shard; the activations a block saves by TP with sequence parallelism (or Korthikanti's replicated share
without it), by the micro-batches in flight on a pipeline stage, and by CP; the logits by TP (vocabulary-parallel
cross-entropy) and CP. With PP > 1 the first stage (the most micro-batches in flight) and the last stage (the
logits) are both candidate peaks.
Time: compute over all GPUs, the pipeline bubble (p − 1)/m, and the exposed TP all-gathers/reduce-scatters, stage
sends and ring-attention transfers; the data-parallel gradient reduction overlaps backward.
"""

from __future__ import annotations

from collections.abc import Mapping

from planner.errors import FieldProblem, SpecError
from planner.explain import MemoryBreakdown, Term, breakdown
from planner.model.params import ParamCounts
from planner.model.spec import ModelSpec
from planner.training.spec import AttentionImpl, Checkpointing, TrainingSpec

__all__ = [
    "block_activation_fraction",
    "check_training_parallel",
    "context_parallel_ring_bytes",
    "in_flight_fraction",
    "is_parallel",
    "model_shard_fraction",
    "parallel_phases",
    "pipeline_bubble_fraction",
    "ring_allreduce_bytes",
    "tensor_parallel_collectives",
]

MEGATRON_SOURCE = (
    "Megatron-LM megatron/training/theoretical_memory_usage.py; Korthikanti et al. 2022 (arXiv:2205.05198)"
)
# Korthikanti et al. 2022, Table 2: per-layer activations sbh·(34 + 5as/h); with TP and no SP the 10·sbh of
# layer-norm inputs, dropout masks and residuals stay replicated while 24·sbh splits over t.
KORTHIKANTI_TOTAL = 34
KORTHIKANTI_REPLICATED = 10
KORTHIKANTI_SPLIT = 24
COLLECTIVES_PER_LAYER_FORWARD = 2  # all-gather before attention and MLP, reduce-scatter after (SP), or 2 all-reduces
COLLECTIVES_PER_LAYER_BACKWARD = 2
SENDS_PER_MICRO_BATCH = 2  # activations forward, their gradients backward, at each stage boundary
RING_PASSES_BACKWARD = 2  # ring attention's backward passes K/V and their gradients (dK, dV)

# Term names of the single-GPU ledger, by how they divide. Every name a phase can hold is listed (the tests check).
# prefix tuning's cache is held by every block of the stage through the forward: counted like their saved tensors
SAVED_BY_ALL_BLOCKS = frozenset(
    {"activations/blocks", "activations/earlier_blocks", "activations/checkpoint_inputs", "activations/prefix_kv_cache"}
)
ONE_BLOCK = frozenset(
    {
        "activations/last_block",
        "activations/first_block",
        "activations/recomputed_block",
        "activations/block_output_grad",
        "activations/block_backward_temporaries",
        "activations/first_block_input",
        "activations/block_through_attention",
        "activations/last_block_through_attention",
        "activations/attention_grad_temporaries",
        "activations/outside_blocks_kept",
        "activations/forward_temporaries",  # the last block's live locals at the forward's own peak
    }
)
OUTSIDE_BLOCKS = frozenset(
    {
        "activations/outside_blocks",
        "activations/outside_blocks_before",  # the forward moment: RoPE tables, soft-prompt indices, prefix MLP
        "activations/forward_inputs",  # the forward moment: position ids and attention masks
        "activations/embedding_backward",
        "activations/norm_backward_temporaries",  # the final norm's backward
        "activations/loss",  # the loss scalar and backward's seed
        "activations/loss_forward_temporaries",  # the forward at the loss: final norm output, logits, labels
        "inputs/input_ids",
    }
)
LOGITS = frozenset({"activations/logits_grads"})
LAST_STAGE_ONLY = frozenset(
    {
        "activations/logits_grads",
        "gradients/lm_head_and_final_norm",
        "activations/norm_backward_temporaries",
        "activations/loss",
        "activations/loss_forward_temporaries",
    }
)
PARAMETER_PREFIXES = ("weights/", "gradients", "optimizer/")


def is_parallel(t: TrainingSpec) -> bool:
    return t.tensor_parallel * t.pipeline_parallel * t.context_parallel > 1


def check_training_parallel(spec: ModelSpec, t: TrainingSpec) -> None:
    """SpecError unless TP splits the heads (and divides or is a multiple of the KV heads), PP ≤ L, and CP divides
    the sequence in 2·CP chunks with a fused attention kernel.

    Source: Megatron-LM arguments.py checks (num_attention_heads % tensor_model_parallel_size; num_layers divisible
      into stages; seq_length % (2·context_parallel_size) for the load-balanced ring of Megatron's CP).
    """
    problems = []
    tp, pp, cp = t.tensor_parallel, t.pipeline_parallel, t.context_parallel
    n_kv = spec.kv_heads
    if spec.num_heads % tp or (spec.mla is None and n_kv % tp and tp % n_kv):
        problems.append(
            FieldProblem(
                ("training", "tensor_parallel"),
                f"tensor_parallel={tp} must divide the {spec.num_heads} attention heads and divide or be a multiple "
                f"of the {n_kv} KV heads",
            )
        )
    if pp > spec.num_layers:
        problems.append(
            FieldProblem(("training", "pipeline_parallel"), f"pipeline_parallel={pp} exceeds {spec.num_layers} layers")
        )
    if cp > 1 and (t.sequence_length % (2 * cp) or t.attention is not AttentionImpl.SDPA):
        problems.append(
            FieldProblem(
                ("training", "context_parallel"),
                f"context_parallel={cp} needs a sequence_length divisible by 2·CP = {2 * cp} and attention 'sdpa' "
                "(ring attention runs flash-attention blocks)",
            )
        )
    if problems:
        raise SpecError(problems)


def model_shard_fraction(counts: ParamCounts, tp: int, pp: int) -> float:
    """Share of the model's parameters on the most loaded GPU of a TP × PP grid (the first stage).

    Formula: N_shard = (N_layers/PP + V·h)/TP (+ V·h/TP for an untied lm_head when PP = 1); fraction = N_shard/N.
    Source: Megatron-LM theoretical_memory_usage.py compute_weight_and_optimizer_memory
      (num_parameters_on_most_loaded_model_shard).
    Assumes: LoRA adapters and a frozen base divide the same way as the weights they sit on.
    """
    if tp == pp == 1:
        return 1.0
    layers = counts.total - counts.embedding - counts.lm_head - counts.final_norm
    shard = (layers / pp + counts.embedding) / tp
    if counts.lm_head and pp == 1:
        shard += counts.lm_head / tp
    return shard / counts.total


def block_activation_fraction(tp: int, sequence_parallel: bool, checkpointing: Checkpointing) -> float:
    """Share of a block's saved activations one TP rank keeps.

    Formula: SP: 1/t; no SP: (10 + 24/t)/34, or 1 with full recomputation (the block input is replicated).
    Source: Korthikanti et al. 2022 (arXiv:2205.05198) Table 2: sbh(34/t + 5as/(ht)) with SP, sbh(10 + 24/t +
      5as/(ht)) without, 2sbh/t and 2sbh for full recomputation; the attention-score term is absent with fused
      attention and selective recomputation, and divides by t like the rest.
    Assumes: the Llama ledger's terms split in the GPT block's proportions.
    """
    if tp == 1:
        return 1.0
    if sequence_parallel:
        return 1.0 / tp
    if checkpointing is Checkpointing.FULL:
        return 1.0
    return (KORTHIKANTI_REPLICATED + KORTHIKANTI_SPLIT / tp) / KORTHIKANTI_TOTAL


def in_flight_fraction(pp: int, micro_batches: int, first_stage: bool = True) -> float:
    """Saved activations of a pipeline stage, as a share of the whole model's for one micro-batch.

    Formula: first stage: (L/p layers) × min(p, m) micro-batches in flight = min(p, m)/p of L layers; last stage:
      1/p (1F1B runs a micro-batch's backward right after its forward there).
    Source: Narayanan et al. 2021 (arXiv:2104.04473) §2.2.1 (1F1B keeps at most p micro-batches in flight);
      Megatron-LM compute_activation_memory (× min(1, m/p) for the first stage).
    """
    if pp == 1:
        return 1.0
    return min(pp, micro_batches) / pp if first_stage else 1.0 / pp


def pipeline_bubble_fraction(pp: int, micro_batches: int) -> float:
    """Idle time of a 1F1B pipeline as a share of the ideal compute time.

    Formula: (p − 1)/m.
    Source: Narayanan et al. 2021 (arXiv:2104.04473) §2.2.1, bubble time fraction = (p − 1)/m.
    """
    return (pp - 1) / micro_batches


def ring_allreduce_bytes(payload_bytes: float, n: int) -> float:
    """Bytes each GPU sends in a ring all-reduce: 2·(n − 1)/n·payload (an all-gather + reduce-scatter pair too).

    Source: Patarasuk & Yuan 2009 (bandwidth-optimal all-reduce); SP replaces each all-reduce by its two halves
      (Korthikanti et al. 2022 §4.2.2).
    """
    return 2 * (n - 1) / n * payload_bytes if n > 1 else 0.0


def tensor_parallel_collectives(layers_per_stage: int, micro_batches: int, checkpointing: Checkpointing) -> int:
    """TP all-reduces (or all-gather + reduce-scatter pairs with SP) one GPU runs per optimizer step: 2 forward +
    2 backward per layer and micro-batch, and the forward's 2 again when the block is recomputed.

    Source: Shoeybi et al. 2019 §3 (Figure 4: f and g, two all-reduces forward and two backward per layer);
      Korthikanti et al. 2022 §4.2.2 (with SP: all-gather + reduce-scatter in their place).
    """
    per_layer = COLLECTIVES_PER_LAYER_FORWARD + COLLECTIVES_PER_LAYER_BACKWARD
    if checkpointing is Checkpointing.FULL:
        per_layer += COLLECTIVES_PER_LAYER_FORWARD
    return layers_per_stage * micro_batches * per_layer


def context_parallel_ring_bytes(spec: ModelSpec, t: TrainingSpec, act_bytes: int) -> float:
    """Bytes one GPU sends per layer and micro-batch in ring attention: CP − 1 passes of its K and V chunk forward,
    twice that backward (K/V again and their gradients).

    Formula: (1 + 2)·(CP − 1)·2·(s/CP)·b·n_kv·d_h·b_act.
    Source: Liu et al. 2023, Ring Attention (arXiv:2310.01889) §3; Megatron-Core context parallel (a ring of
      K/V chunks overlapped with the blockwise attention).
    """
    cp = t.context_parallel
    if cp == 1:
        return 0.0
    n_kv = spec.num_heads if spec.mla else spec.kv_heads
    chunk = 2 * t.sequence_length / cp * t.micro_batch_size * n_kv * spec.resolved_head_dim * act_bytes
    return (1 + RING_PASSES_BACKWARD) * (cp - 1) * chunk


def _scale(term: Term, factor: float, note: str) -> Term:
    if factor == 1.0:
        return term
    return term.model_copy(
        update={"bytes": int(term.bytes * factor), "formula": f"{term.formula} {note}", "detail": term.detail}
    )


def _factors(spec_counts: ParamCounts, t: TrainingSpec, first_stage: bool) -> dict[str, tuple[float, str]]:
    tp, pp, cp = t.tensor_parallel, t.pipeline_parallel, t.context_parallel
    block = block_activation_fraction(tp, t.sequence_parallel, t.gradient_checkpointing)
    flight = in_flight_fraction(pp, t.gradient_accumulation_steps, first_stage)
    sp = 1.0 / tp if t.sequence_parallel else 1.0
    return {
        "params": (model_shard_fraction(spec_counts, tp, pp), f"× shard(TP={tp}, PP={pp})"),
        "all_blocks": (block * flight / cp, f"× {block:.3g} (TP) × {flight:.3g} (PP in flight) ÷ CP={cp}"),
        "one_block": (block / cp, f"× {block:.3g} (TP) ÷ CP={cp}"),
        "outside": (sp / cp, f"× {sp:.3g} (SP) ÷ CP={cp}"),
        "logits": (1.0 / (tp * cp), f"÷ (TP·CP) = {tp * cp} (vocabulary-parallel cross-entropy)"),
    }


def _category(name: str) -> str:
    if name in SAVED_BY_ALL_BLOCKS:
        return "all_blocks"
    if name in ONE_BLOCK:
        return "one_block"
    if name in OUTSIDE_BLOCKS:
        return "outside"
    if name in LOGITS:
        return "logits"
    if name.startswith(PARAMETER_PREFIXES):
        return "params"
    raise KeyError(f"no parallel rule for memory term '{name}'")


def _stage_phase(
    phase: MemoryBreakdown, factors: Mapping[str, tuple[float, str]], drop: frozenset[str]
) -> MemoryBreakdown:
    kept = []
    for term in phase.terms:
        if term.name in drop:
            continue
        factor, note = factors[_category(term.name)]
        kept.append(_scale(term, factor, note))
    return breakdown(kept)


def parallel_phases(
    counts: ParamCounts, t: TrainingSpec, phases: Mapping[str, MemoryBreakdown]
) -> dict[str, MemoryBreakdown]:
    """The single-GPU phases divided for TP/SP/PP/CP: one set (PP = 1), or the first and the last stage (PP > 1)."""
    if t.pipeline_parallel == 1:
        factors = _factors(counts, t, first_stage=True)
        return {name: _stage_phase(p, factors, frozenset()) for name, p in phases.items()}
    first, last = _factors(counts, t, first_stage=True), _factors(counts, t, first_stage=False)
    out = {}
    for name, p in phases.items():
        if name == "optimizer_step":
            out[name] = _stage_phase(p, first, frozenset())
            continue
        out[f"first_stage/{name}"] = _stage_phase(p, first, LAST_STAGE_ONLY)
        out[f"last_stage/{name}"] = _stage_phase(p, last, frozenset())
    return out
