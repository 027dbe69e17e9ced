"""Qwen2-MoE's shared-expert gate: the MoE layer's last node, and so the first its backward reaches.

Qwen2MoeSparseMoeBlock runs the shared expert first, then the router and the routed experts, and last scales the
shared output by sigmoid(shared_expert_gate(x)) (transformers builds the shared expert and its h→1 gate whatever
the shared width, 0 included). Backward therefore starts the layer at the gating product's MulBackward:

- under full checkpointing its first unpack recomputes the block before any expert-output gradient exists, and
  the recompute runs on through the routed experts to the gate (torch stops once the gating product's inputs are
  saved, before it computes): its peak is at the experts' restoring permutation or in the gate;
- without the recompute, the gate's backward runs before the routed experts', and the shared expert's after them:
  the shared output's gradient waits through the routed experts' backward, beside the gate's input gradient.

Source: transformers 5.23 models/qwen2_moe/modeling_qwen2_moe.py Qwen2MoeSparseMoeBlock.forward,
  Qwen2MoeTopKRouter.forward, integrations/moe.py grouped_mm_experts_forward; torch/utils/checkpoint.py
  (non-reentrant recompute on the first unpack, early stop once the last saved tensor is packed; autograd packs an
  op's saved inputs before the op runs); torch autograd (nodes run latest-created first); measured by the cpu probe
  (tests/models/test_training_misses_13.py, the storages live at the peak op).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from planner.model.spec import ModelSpec
from planner.training.activations import (
    FP32,
    INT64,
    LayerGrads,
    TrainShapes,
    moe_combine_bytes,
)

__all__ = ["GatedRecompute", "gated_recompute", "has_shared_gate", "shared_gate_pending"]

GATE = "shared_expert_gate"  # planner.model.params' name of Qwen2-MoE's h→1 gate linear
GATED_PRODUCT = "moe/shared_expert_gated"  # the ledger's sigmoid(gate(x)) · shared(x) factors
MLP_INPUT_NAMES = ("mlp_in/input", "moe_shared_in/input")  # the ledger's MLP input, where a linear keeps it
GATE_SAVED_PREFIXES = (f"lora/{GATE}/", f"ia3/{GATE}/")  # what the gate's adapter keeps
HISTC_BYTES = 4  # the expert histogram and its input: fp32 on the CPU (`.float()`), int32 on CUDA (`.int()`)
LORA_GATE_LOCALS = 2  # lora_B's fp32 output and its copy scaled by α/r, both alive in peft's Linear.forward


@dataclass(frozen=True, slots=True)
class GatedRecompute:
    """Bytes the recompute of a gated MoE layer holds beyond the block's saved tensors, at its peak moment."""

    bytes: int
    formula: str


def has_shared_gate(spec: ModelSpec, moe_layer: bool) -> bool:
    """An MoE layer whose last node is Qwen2-MoE's shared-expert gate."""
    return moe_layer and spec.moe is not None and spec.moe.shared_expert_gate


def _layer_locals(spec: ModelSpec, shp: TrainShapes, saved: Mapping[str, int]) -> tuple[int, list[str]]:
    """What the recomputed forward holds from the layer's start to its gate, beyond the saved tensors: the
    residual (unless the post-attention norm keeps it: an fp32 residual stream), the MLP input (unless a linear
    keeps it), the shared output (p·T·h, the ledger's gated product counted here instead: its sigmoid is not made
    yet), the router's logits (p·T·E, returned as `_`) and its top-k weights in the logits' dtype (p·k·T: the cast,
    or in fp32 topk's output itself, divided in place by a renormalizing router, which keeps a copy)."""
    assert spec.moe is not None
    moe, t, h, p = spec.moe, shp.tokens, spec.hidden_size, shp.act_bytes
    nbytes, parts = 0, []
    if not (shp.residual_bytes == FP32 and "post_attention_norm/input_fp32" in saved):
        nbytes += shp.act_bytes * t * h
        parts.append("p·T·h residual")
    if not any(name in saved for name in MLP_INPUT_NAMES):
        nbytes += shp.residual_bytes * t * h
        parts.append("p·T·h MLP input")
    nbytes += p * t * h - saved.get(GATED_PRODUCT, 0) + p * t * moe.num_experts + p * moe.experts_per_token * t
    parts += ["p·T·h shared output − the gated product's saved factors", "p·T·E router logits", "p·k·T top-k weights"]
    return nbytes, parts


def _at_restoring_permutation(spec: ModelSpec, shp: TrainShapes, saved: Mapping[str, int]) -> tuple[int, str]:
    """Inside the routed experts, at `weighted_out[inv_perm]`: the gathered tokens (p·k·T·h, unless kept), the
    weighted outputs and their restored copy (2·c·k·T·h), the sorted expert ids (8·k·T), the histogram's input and
    bins (4·k·T + 4·E); the gate's adapter has not saved anything yet."""
    assert spec.moe is not None
    moe, t, h, p = spec.moe, shp.tokens, spec.hidden_size, shp.act_bytes
    rows = moe.experts_per_token * t
    nbytes = 2 * moe_combine_bytes(spec, p) * rows * h + INT64 * rows + HISTC_BYTES * (rows + moe.num_experts)
    formula = "2·c·k·T·h weighted and restored outputs + 8·k·T sorted ids + 4·(k·T + E) histogram"
    if "moe/gathered_tokens" not in saved:
        nbytes += p * rows * h
        formula = "p·k·T·h gathered tokens + " + formula
    nbytes -= sum(v for k, v in saved.items() if k.startswith(GATE_SAVED_PREFIXES))
    return nbytes, formula + " − the gate adapter's saved tensors, not made yet"


def _at_gate(spec: ModelSpec, shp: TrainShapes, grads: LayerGrads) -> tuple[int, str]:
    """In the gate, the routed output summed (p·T·h, alive to the layer's sum) beside the gate's locals: frozen, its
    output and sigmoid (2·p·T, at the sigmoid); LoRA-adapted, at the scaling of lora_B's output, the base output
    (p·T), lora_B's fp32 output and its scaled copy (2·4·T) and, with dropout and p ≠ 4, x cast to the adapter's
    fp32 (4·T·h, read by dropout only)."""
    t, h, p = shp.tokens, spec.hidden_size, shp.act_bytes
    nbytes, formula = p * t * h, "p·T·h routed output"
    if GATE not in grads.lora:
        return nbytes + 2 * p * t, formula + " + 2·p·T gate output and sigmoid"
    nbytes += p * t + LORA_GATE_LOCALS * FP32 * t
    formula += " + p·T + 2·4·T the gate's base and LoRA outputs"
    if shp.act_bytes != FP32 and grads.lora_dropout:
        nbytes += FP32 * t * h
        formula += " + 4·T·h adapter input cast"
    return nbytes, formula


def gated_recompute(spec: ModelSpec, shp: TrainShapes, grads: LayerGrads, saved: Mapping[str, int]) -> GatedRecompute:
    """The recompute of a gated MoE layer (has_shared_gate) at its larger moment: the experts' restoring
    permutation or the gate, with the layer's locals (_layer_locals). No expert-output gradient exists yet: the
    gating product's MulBackward, the layer's first node, triggered the recompute."""
    common, parts = _layer_locals(spec, shp, saved)
    moment, formula = max(_at_restoring_permutation(spec, shp, saved), _at_gate(spec, shp, grads))
    return GatedRecompute(common + moment, " + ".join([*parts, formula]))


def shared_gate_pending(
    spec: ModelSpec, shp: TrainShapes, grads: LayerGrads, saved: Mapping[str, int], grad_bytes: int, x_grad: bool
) -> int:
    """What the gate's backward leaves while the routed experts' runs (it comes first, the shared expert's after
    them): the shared output's gradient (p·T·h), the gate's input gradient (p·T·h, when the MLP input needs grad)
    and its new weight gradients (h·b_g full fine-tuning, r·(h + 1)·b_g LoRA; `grad_bytes` 0 when they are added
    into held ones); the gated product's saved factors and the gate adapter's saved tensors are released."""
    t, h, p = shp.tokens, spec.hidden_size, shp.act_bytes
    nbytes = p * t * h + (p * t * h if x_grad else 0) - saved.get(GATED_PRODUCT, 0)
    nbytes -= sum(v for k, v in saved.items() if k.startswith(GATE_SAVED_PREFIXES))
    if grads.weights:
        nbytes += h * grad_bytes
    if GATE in grads.lora:
        nbytes += grads.lora_rank * (h + 1) * grad_bytes
    return nbytes
