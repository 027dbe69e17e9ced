"""The backward of one decoder block: what it holds besides the block's saved tensors, at its peak.

Backward reaches a block with the gradient of its output (p·T·h). Under full checkpointing (non-reentrant,
per block) it first recomputes the block's forward, which torch stops as soon as the last tensor the block
saves has been rebuilt (torch.utils.checkpoint, early stop). Two moments bound the block's peak:

- recompute: the rebuilt saved tensors, plus the forward's live locals when the MLP runs (the residual, the
  MLP input and the down projection's input where no trainable weight keeps them), plus what backward had
  allocated before it needed the block (an MoE layer: the fp32 gradient of its k weighted expert outputs);
- mlp_backward: the saved tensors, plus the MLP's first gradients: SwiGLU's product and factor gradients
  (3·p·T·f, less the product once down_proj's backward releases it), fp32 ones with an adapter on
  down_proj, the routing-weights backward of an MoE layer, and down_proj's weight gradient when it trains.

Source: derived here from the transformers 5 block code (LlamaMLP, grouped-mm experts) and peft's LoRA/IA3
layers; measured by the probe grid (models/: live storages and the op at the peak of each step).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from planner.model.params import block_layout
from planner.model.spec import ModelSpec
from planner.training.activations import FP32, LayerGrads, TrainShapes, mlp_width, moe_combine_bytes

__all__ = ["BlockBackward", "block_backward"]

# fp32 [k·T, h] tensors alive in the routing-weights backward of a grouped-mm MoE layer: the gradient scattered
# back to expert order, its product with the routing weights and its product with the expert outputs
# (transformers sums the k weighted outputs in fp32); the expert-output gradient is then cast to p.
MOE_ROUTING_GRADS = 3
LORA_DOWN_GRAD_FP32 = 2  # peft LoRA on down_proj: fp32 gradients of the adapted input and of the product
IA3_DOWN_GRAD_FP32 = 3  # peft IA3 on down_proj: the fp32 gradient, its scaled copy, and its product with x
SWIGLU_SAVED = ("mlp/gate_output", "mlp/up_output", "mlp/act_output", "mlp_down_in/input")  # p·T·f wide each
SWIGLU_GRADS = 3  # gradients of the product and of both factors, live at once


@dataclass(frozen=True, slots=True)
class BlockBackward:
    """Bytes a block's backward holds beyond its saved tensors and its output gradient, at its peak moment."""

    moment: str  # "recompute" or "mlp_backward"
    bytes: int
    formula: str


def _recompute_locals(spec: ModelSpec, shp: TrainShapes, saved: Mapping[str, int], moe_layer: bool) -> BlockBackward:
    """The recomputed forward at the down projection: the residual; the MLP input, an MoE layer's gathered
    tokens and the product unless a trainable weight keeps them (they are then in the ledger); an MoE layer's
    fp32 k·T·h output gradient, materialized by backward before it needed the block."""
    p, t, h = shp.act_bytes, shp.tokens, spec.hidden_size
    nbytes, parts = p * t * h, ["p·T·h residual"]
    if "mlp_in/input" not in saved:
        nbytes += p * t * h
        parts.append("p·T·h MLP input")
    if "mlp_down_in/input" not in saved:
        nbytes += p * t * mlp_width(spec, moe_layer)
        parts.append("p·T·f down_proj input")
    if moe_layer and spec.moe is not None:
        rows = spec.moe.experts_per_token * t
        if "moe/gathered_tokens" not in saved:
            nbytes += p * rows * h
            parts.append("p·k·T·h gathered tokens")
        nbytes += moe_combine_bytes(spec, p) * rows * h
        parts.append("c·k·T·h expert-output gradient")
    return BlockBackward("recompute", nbytes, " + ".join(parts))


def _shared_expert_done(
    spec: ModelSpec, shp: TrainShapes, grads: LayerGrads, saved: Mapping[str, int], grad_bytes: int
) -> int:
    """An MoE layer's shared expert is differentiated before the routed experts: its input gradient (p·T·h) and
    weight gradients exist, its saved tensors (intermediates, and its input when it trains) are released."""
    assert spec.moe is not None
    f_s, p, t, h = spec.moe.shared_expert_ffn_dim, shp.act_bytes, shp.tokens, spec.hidden_size
    if not f_s:
        return 0
    released = p * t * f_s * sum(1 for name in SWIGLU_SAVED if name in saved) + saved.get("mlp_in/input", 0)
    weights = 3 * h * f_s * grad_bytes if grads.weights else 0
    return p * t * h + weights - released


def _experts_done(
    spec: ModelSpec, shp: TrainShapes, grads: LayerGrads, saved: Mapping[str, int], grad_bytes: int
) -> BlockBackward:
    """Trained experts at the end of their backward: their weight gradients (3·E·h·f_e·b_g) exist, their
    intermediates are released, the gate/up output gradient and the gathered tokens' gradient are live,
    p·k·T·(2·f_e + h). Sets the block's peak when experts are large next to the tokens' activations."""
    assert spec.moe is not None
    if not grads.weights:
        return BlockBackward("experts_backward", 0, "")
    moe, p, h = spec.moe, shp.act_bytes, spec.hidden_size
    rows = moe.experts_per_token * shp.tokens
    weight_grads = 3 * moe.num_experts * h * moe.expert_ffn_dim * grad_bytes
    live = p * rows * (2 * moe.expert_ffn_dim + h)
    released = sum(saved.get(name, 0) for name in SWIGLU_SAVED)
    return BlockBackward(
        "experts_backward",
        weight_grads + live - released,
        "3·E·h·f_e·b_g + p·k·T·(2f_e + h) − the experts' intermediates",
    )


def _mlp_backward(
    spec: ModelSpec,
    shp: TrainShapes,
    grads: LayerGrads,
    saved: Mapping[str, int],
    grad_bytes: int,
    moe_layer: bool,
    recomputed: bool,
) -> BlockBackward:
    """The first gradients of the MLP's backward, with the down projection's weight gradient (full training)."""
    p, t, h = shp.act_bytes, shp.tokens, spec.hidden_size
    if moe_layer and spec.moe is not None:
        # the bf16 cast of the expert-output gradient; a recomputed block has already released the expert
        # outputs by then (checkpoint frees a recomputed tensor once backward has unpacked it)
        rows = spec.moe.experts_per_token * t
        combine = moe_combine_bytes(spec, p)
        cast = 0 if recomputed or combine == p else p * rows * h
        nbytes = (
            MOE_ROUTING_GRADS * combine * rows * h + cast + _shared_expert_done(spec, shp, grads, saved, grad_bytes)
        )
        formula = "3·c·k·T·h" + (" + p·k·T·h" if cast else "") + " routing-weights backward (c = 4, Qwen-MoE p)"
        routing = BlockBackward(
            "mlp_backward", nbytes, formula + (", shared expert done" if spec.moe.shared_expert_ffn_dim else "")
        )
        return max(routing, _experts_done(spec, shp, grads, saved, grad_bytes), key=lambda m: m.bytes)
    f = spec.ffn_dim
    if "down_proj" in grads.lora:
        nbytes, formula = LORA_DOWN_GRAD_FP32 * FP32 * t * f, "2·4·T·f (LoRA on down_proj)"
    elif "down_proj" in grads.ia3:
        nbytes, formula = IA3_DOWN_GRAD_FP32 * FP32 * t * f, "3·4·T·f (IA3 on down_proj)"
    elif "mlp_down_in/input" in saved:  # the product, kept for down_proj's weight, is released by then
        nbytes, formula = (SWIGLU_GRADS - 1) * p * t * f, "2·p·T·f"
    else:
        nbytes, formula = SWIGLU_GRADS * p * t * f, "3·p·T·f"
    if grads.weights:
        down = next(lin for lin in block_layout(spec, False).mlp if lin.name == "down_proj")
        nbytes += down.weight_params * grad_bytes
        formula += " + down_proj gradient"
    return BlockBackward("mlp_backward", nbytes, formula)


def block_backward(
    spec: ModelSpec,
    shp: TrainShapes,
    grads: LayerGrads,
    saved: Mapping[str, int],
    *,
    moe_layer: bool,
    recomputed: bool,
    grad_bytes: int,
) -> BlockBackward:
    """The larger of the block's two candidate moments (the recompute only under full checkpointing)."""
    mlp = _mlp_backward(spec, shp, grads, saved, grad_bytes, moe_layer, recomputed)
    if not recomputed:
        return mlp
    forward = _recompute_locals(spec, shp, saved, moe_layer)
    return max(mlp, forward, key=lambda m: m.bytes)
