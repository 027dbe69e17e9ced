"""The forward's own peak at the loss under full gradient checkpointing and autocast.

A checkpointed forward saves only each block's input, but torch.autocast caches the bf16 cast of every trained
weight it feeds a matmul (a leaf that requires grad) until the autocast region exits: the whole model's trained
weights in bf16 are alive at the loss, beside lm_head's logits. The cache is emptied before backward (the probe's
backward, like a training loop's, runs outside autocast), so no backward moment holds it; with gradient
accumulation, the second micro-batch's forward holds it beside every gradient of the first.
"""

from __future__ import annotations

from planner.explain import Term
from planner.model.params import block_layout
from planner.model.spec import ModelSpec
from planner.training.activations import SavedActivations, TrainShapes
from planner.training.peft_params import TrainableParams
from planner.training.spec import Checkpointing, TrainingSpec

__all__ = ["checkpointed_loss_forward"]

FP32_BYTES = 4
INT64_BYTES = 8
AUTOCAST_BYTES = 2  # torch.autocast(bf16) casts
CAST_SOURCE = (
    "torch 2.13 aten/src/ATen/autocast_mode.cpp `cached_cast` (a cast is cached when the argument is an fp32 leaf "
    "that requires grad, until the autocast region exits); measured by the cpu probe (the storages live at "
    "nll_loss's forward, tests/models/test_training_misses_9.py)"
)
# the expert stacks' grouped matmul is no autocast op (transformers 5 integrations/moe.py `_grouped_mm` casts the
# tokens to the weights' fp32): neither their weights nor peft's parametrized expert LoRA are cast
UNCAST_PREFIXES = ("experts.",)
IDS_KEY = "embedding/input_ids"  # the embedding's saved indices are the batch itself


def _cached_casts(spec: ModelSpec, t: TrainingSpec, tp: TrainableParams) -> int:
    """Trained elements of the blocks that reach an autocast matmul: every block linear's weight and bias (full
    fine-tuning; the routed experts' grouped matmul excepted), LoRA's lora_A and lora_B (nn.Linear, peft 0.21.2
    tuners/lora/layer.py `Linear.forward`). lm_head's cast is saved, in the outer ledger; embeddings, norms, IA3
    vectors and soft prompts reach no matmul."""
    if t.method.kind == "full":
        n = 0
        for layer in range(spec.num_layers):
            layout = block_layout(spec, bool(spec.moe and spec.moe.is_moe_layer(layer)))
            n += sum(lin.params for lin in layout.linears if not lin.name.startswith(UNCAST_PREFIXES))
        return n
    return sum(
        m.trainable_params
        for m in tp.modules
        if m.rank and not m.name.startswith(UNCAST_PREFIXES) and m.name != "gate.weight" and m.layers > 1
    )


def checkpointed_loss_forward(
    spec: ModelSpec, t: TrainingSpec, tp: TrainableParams, shp: TrainShapes, a: SavedActivations, blocks: Term
) -> list[Term] | None:
    """Full checkpointing under autocast: the forward at the loss (nll_loss of the fp32 log-probs).

    Alive: the checkpoints' inputs (the blocks' ledger), what outside the blocks is saved (the final norm's, lm_head's
    input and bf16 weight cast, the log-probs, the labels), and beyond them
    - autocast's cached bf16 casts of the blocks' trained weights, 2·N_cast (`_cached_casts`), not saved: the
      checkpoints drop what their blocks save;
    - the final norm's output, lm_head's input (4·T·h, the fp32 residual stream; lm_head keeps its bf16 cast);
    - lm_head's bf16 logits (2·T·V) and their fp32 copy (4·T·V; log_softmax keeps its output only);
    - the labels padded by one (8·b·(s + 1), when the shifted labels are a copy: b > 1) and the loss (4).
    None without full checkpointing or autocast (the casts are then saved, or there are none).
    Source: transformers 5.23 loss_utils.py ForCausalLMLoss (logits.float(), nn.functional.pad of the labels);
      torch 2.13 `cached_cast` (CAST_SOURCE); measured by the cpu probe.
    """
    if not shp.autocast or t.gradient_checkpointing is not Checkpointing.FULL or shp.prefix_tokens:
        return None
    tokens, h, v = shp.tokens, spec.hidden_size, spec.vocab_size
    casts = AUTOCAST_BYTES * _cached_casts(spec, t, tp)
    logits = AUTOCAST_BYTES * tokens * v + FP32_BYTES * tokens * v
    labels = INT64_BYTES * shp.batch * (shp.seq + 1) if shp.batch > 1 else 0
    outer = {k: b for k, b in a.outer.items() if k != IDS_KEY}  # the batch's ids: inputs/input_ids
    return [
        blocks,
        Term(
            name="activations/outside_blocks",
            bytes=sum(outer.values()),
            formula="final norm, lm_head input, 4·T·V log-probs, labels",
            detail=", ".join(f"{k} {b:,} B" for k, b in sorted(outer.items(), key=lambda kv: -kv[1])[:4]),
            source="derived here from the tensors autograd saves (planner.training.activations)",
        ),
        Term(
            name="activations/autocast_cached_casts",
            bytes=casts,
            formula="2·N_cast",
            detail=f"bf16 casts of {casts // AUTOCAST_BYTES:,} trained block parameters in autocast's cache",
            source=CAST_SOURCE,
        ),
        Term(
            name="activations/loss_forward_temporaries",
            bytes=FP32_BYTES * tokens * h + logits + labels + FP32_BYTES,
            formula="4·T·h + 2·T·V + 4·T·V + 8·b·(s + 1) [b > 1] + 4",
            detail="the final norm's output, bf16 logits and their fp32 copy, padded labels, the loss",
            source="transformers 5.23 loss_utils.py ForCausalLMLoss; measured by the cpu probe",
        ),
    ]
