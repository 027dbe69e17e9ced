"""The backward of one decoder block: what it holds besides the block's saved tensors, at its peak.

Backward reaches a block with the gradient of its output (p·T·h). Under full checkpointing (non-reentrant,
per block) it first recomputes the block's forward, which torch stops as soon as the last tensor the block
saves has been rebuilt (torch.utils.checkpoint, early stop). Two moments bound the block's peak:

- recompute: the rebuilt saved tensors, plus the forward's live locals when the MLP runs (the residual, the
  MLP input and the down projection's input where no trainable weight keeps them), plus what backward had
  allocated before it needed the block (an MoE layer: the fp32 gradient of its k weighted expert outputs);
- mlp_backward: the saved tensors, plus the MLP's first gradients: SwiGLU's product and factor gradients
  (3·p·T·f, less the product once down_proj's backward releases it), fp32 ones with an adapter on
  down_proj, the routing-weights backward of an MoE layer or its frozen experts' SwiGLU backward
  (3·p·k·T·f_e), and down_proj's weight gradient when it trains.

The forward's own peak (no checkpointing; forward_peak) is the last block's LoRA-adapted MLP linear at the
scaling of lora_B's output, with every block's saved tensors alive.

Source: derived here from the transformers 5 block code (LlamaMLP, grouped-mm experts) and peft's LoRA/IA3
layers; measured by the probe grid (models/: live storages and the op at the peak of each step).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from planner.model.params import block_layout
from planner.model.spec import ModelSpec
from planner.training.activations import (
    AUTOCAST_BYTES,
    FP32,
    FUSED_QKV_FAMILIES,
    INT64,
    MLP_OUT_NORM,
    PRE_MLP_PREFIXES,
    LayerGrads,
    MoEGrads,
    TrainShapes,
    mlp_width,
    moe_combine_bytes,
)
from planner.training.attention_core import attention_kernel_locals
from planner.training.norm_backward import block_norm_backward, mlp_out_norm_saved
from planner.training.shared_gate import gated_recompute, has_shared_gate, shared_gate_pending

__all__ = ["BlockBackward", "block_backward", "forward_peak"]

# fp32 [k·T, h] tensors alive in the routing-weights backward of a grouped-mm MoE layer: the gradient scattered
# back to expert order, its product with the routing weights and its product with the expert outputs
# (transformers sums the k weighted outputs in fp32); the expert-output gradient is then cast to p.
MOE_ROUTING_GRADS = 3
IA3_DOWN_GRAD_FP32 = 3  # peft IA3 on down_proj: the fp32 gradient, its scaled copy, and its product with x
SWIGLU_SAVED = ("mlp/gate_output", "mlp/up_output", "mlp/act_output", "mlp_down_in/input")  # p·T·f wide each
SWIGLU_GRADS = 3  # gradients of the product and of both factors, live at once
NORM_INPUT = "input_norm/input_fp32"  # the input norm's saved input: the block input itself in an fp32 stream


@dataclass(frozen=True, slots=True)
class BlockBackward:
    """Bytes a block's backward holds beyond its saved tensors and its output gradient, at its peak moment."""

    moment: str  # "recompute" or "mlp_backward"
    bytes: int
    formula: str


def _lora_down_recompute(spec: ModelSpec, shp: TrainShapes, grads: LayerGrads) -> tuple[int, list[str]]:
    """LoRA on a dense down_proj: the recompute's peak is at lora_A's output inside down_proj, and backward has
    already run the nodes of the block that keep no saved tensor.

    peft's Linear.forward: `result = base_layer(x)` (p·T·h, alive to the sum), `x = x.to(lora_A.weight.dtype)`:
    with dropout and a p ≠ 4 input the cast is a new 4·T·f tensor that only dropout reads (dropout keeps its
    output and mask, in the ledger); without dropout lora_A keeps the cast itself (the ledger's input_fp32).
    Backward, before lora_B's MmBackward unpacks a_output and so triggers the recompute: the cast of the result
    back to p (ToCopyBackward, when p ≠ 4: the sum base + 4-byte lora output is fp32), the sum's AddBackward (the
    base branch's gradient cast to p, p·T·h, when p ≠ 4; in fp32 the block output gradient itself) and the
    scaling's MulBackward (the scaled gradient, 4·T·h).
    Source: peft 0.21.2 tuners/lora/layer.py Linear.forward; torch/utils/checkpoint.py (non-reentrant recompute
      on the first unpack, early stop after the last saved tensor); measured by the cpu probe
      (tests/models/test_training_misses.py, the storages live at the peak op).
    """
    p, t, h, f = shp.act_bytes, shp.tokens, spec.hidden_size, spec.ffn_dim
    nbytes, parts = p * t * h + FP32 * t * h, ["p·T·h base down_proj output", "4·T·h scaled LoRA gradient"]
    if p != FP32:
        nbytes += p * t * h
        parts.append("p·T·h base branch gradient")
        if grads.lora_dropout:
            nbytes += FP32 * t * f
            parts.append("4·T·f adapter input cast")
    return nbytes, parts


def _lora_down_recompute_autocast(spec: ModelSpec, shp: TrainShapes, grads: LayerGrads) -> tuple[int, list[str]]:
    """LoRA on a dense down_proj under autocast: the recompute's peak inside down_proj, where the recompute stops
    (the last saved tensor of the block is an input of lora_B's matmul: its bf16 weight cast, 2·h·r of the ledger).

    peft's Linear.forward on the bf16 product x: `result = base_layer(x)` (p·T·h), `x = x.to(fp32)` (4·T·f, alive as
    the local x), with dropout its output x·noise (4·T·f, the argument of lora_A, which keeps its bf16 cast, in the
    ledger). Backward, before lora_B's MmBackward unpacks a_output and so triggers the recompute: the sum's
    AddBackward casts the fp32 block output gradient to the bf16 branch (p·T·h), and the scaling's MulBackward
    scales it in bf16 (p·T·h: lora_B's output is bf16 under autocast). Without dropout the peak is at lora_B's
    weight cast (the recompute stops as lora_B's matmul saves its inputs); with dropout at lora_A's matmul, while
    the dropout output is alive and lora_B's cast is not made yet, 4·T·f − 2·h·r more.
    Source: peft 0.21.2 tuners/lora/layer.py Linear.forward; torch/utils/checkpoint.py (non-reentrant recompute on
      the first unpack); measured by the cpu probe (tests/models/test_training_misses_9.py, the storages live at
      the peak op).
    """
    p, t, h, f, r = shp.act_bytes, shp.tokens, spec.hidden_size, spec.ffn_dim, grads.lora_rank
    nbytes = p * t * h + FP32 * t * f + 2 * p * t * h
    parts = ["p·T·h base down_proj output", "4·T·f adapter input cast", "2·p·T·h base branch and scaled gradients"]
    dropout_output = FP32 * t * f - AUTOCAST_BYTES * h * r
    if grads.lora_dropout and dropout_output > 0:
        nbytes += dropout_output
        parts.append("4·T·f dropout output − 2·h·r lora_B's weight cast, not yet made")
    return nbytes, parts


def _lora_down_recompute_sandwich(spec: ModelSpec, shp: TrainShapes, grads: LayerGrads) -> tuple[int, list[str]]:
    """LoRA on a dense down_proj in a block with norms after its sublayers (Gemma-2): the recompute runs past
    down_proj (the block's last saved tensors are its post-feedforward norm's), and its peak in down_proj is at the
    scaling of lora_B's output: the base output (p·T·h), lora_B's output and its scaled copy (2·b_l·T·h, b_l = 4,
    2 under autocast, where lora_B runs in bf16), and x cast to the adapter's fp32 (4·T·f, alive as peft's local x)
    where dropout reads it (p ≠ 4) or autocast does (lora_A keeps a bf16 cast of it). Under autocast with dropout
    the peak can come earlier, at lora_A's matmul: dropout's fp32 output is alive as lora_A's argument (4·T·f;
    the ledger holds its bf16 cast) and lora_B's weight cast (2·h·r, in the ledger) is not made yet, in place of
    lora_B's output and its copy. Backward made nothing of the MLP's before it needed the block (_sandwich_pending).
    Source: peft 0.21.2 tuners/lora/layer.py Linear.forward; transformers 5.23 Gemma2DecoderLayer.forward;
      torch/utils/checkpoint.py (non-reentrant recompute on the first unpack, early stop after the last saved
      tensor); measured by the cpu probe (tests/models/test_training_misses_11.py, the storages live at the peak op).
    """
    p, t, h, f = shp.act_bytes, shp.tokens, spec.hidden_size, spec.ffn_dim
    lora_out = AUTOCAST_BYTES if shp.autocast else FP32
    nbytes, parts = p * t * h, ["p·T·h base down_proj output"]
    if shp.autocast or (p != FP32 and grads.lora_dropout):
        nbytes += FP32 * t * f
        parts.append("4·T·f adapter input cast")
    scaling = 2 * lora_out * t * h
    at_lora_a = FP32 * t * f - AUTOCAST_BYTES * h * grads.lora_rank if shp.autocast and grads.lora_dropout else 0
    if at_lora_a > scaling:
        return nbytes + at_lora_a, [*parts, "4·T·f dropout output − 2·h·r lora_B's weight cast, not yet made"]
    return nbytes + scaling, [*parts, "2·b_l·T·h lora_B output and its scaled copy"]


def _sandwich_pending(spec: ModelSpec, shp: TrainShapes, saved: Mapping[str, int]) -> tuple[int, str]:
    """What backward holds when a block with a post-feedforward norm (Gemma-2) first needs it: the norm's first
    node to unpack a saved tensor is its · (1 + w) MulBackward, whose incoming gradient is the fp32 cast of the
    block output gradient (ToCopyBackward of `.type_as(x)`, 4·T·h, where the MLP output is not fp32: p ≠ 4 or
    autocast; in fp32 the cast is a no-op). (0, "") for other blocks.
    Source: transformers 5.23 models/gemma2/modeling_gemma2.py Gemma2RMSNorm.forward, Gemma2DecoderLayer.forward;
      measured by the cpu probe (tests/models/test_training_misses_11.py)."""
    if f"{MLP_OUT_NORM}/input_fp32" not in saved or (shp.act_bytes == FP32 and not shp.autocast):
        return 0, ""
    return FP32 * shp.tokens * spec.hidden_size, "4·T·h post-feedforward norm's fp32 output gradient"


GATE_UP_NOT_YET = {  # saved tensors a SwiGLU MLP has not made yet while gate_proj's / up_proj's LoRA runs
    "gate_proj": ("mlp/gate_output", "mlp/act_output", "mlp/up_output", "lora/up_proj/", "ia3/up_proj/"),
    "up_proj": ("mlp/up_output",),
}
DOWN_SAVED = ("mlp_down_in/", "lora/down_proj/", "ia3/down_proj/")


def _gate_up_linears(spec: ModelSpec, grads: LayerGrads) -> list[tuple[str, int, tuple[str, ...]]]:
    """The LoRA-adapted dense gate/up linears as transformers builds them, each with its output width and the
    saved tensors the MLP has not made yet while its LoRA runs: gate_proj and up_proj (f wide), or Phi-3's fused
    gate_up_proj (2f wide, one adapter for both; it runs before any product: Phi3MLP.forward chunks its output)."""
    f = spec.ffn_dim
    if spec.family in FUSED_QKV_FAMILIES:
        adapted = bool({"gate_proj", "up_proj"} & grads.lora)
        return [("gate_up_proj", 2 * f, GATE_UP_NOT_YET["gate_proj"])] if adapted else []
    return [(name, f, GATE_UP_NOT_YET[name]) for name in ("gate_proj", "up_proj") if name in grads.lora]


def _lora_gate_up_moments(
    spec: ModelSpec, shp: TrainShapes, grads: LayerGrads, saved: Mapping[str, int]
) -> list[tuple[int, str]]:
    """LoRA on a dense gate_proj or up_proj, at the scaling of lora_B's output (the forward's, or the
    recompute's, peak op): the base output (p·T·f), lora_B's fp32 output and its scaled copy (2·4·T·f, both
    alive in `lora_B(lora_A(dropout(x))) * scaling`) and, with dropout and p ≠ 4, x cast to fp32 (4·T·h, read
    by dropout only), less the saved tensors the MLP makes later (its products, down_proj's). Phi-3's fused
    gate_up_proj: the same at 2f wide, before any of the MLP's saved tensors (_gate_up_linears).
    Source: peft 0.21.2 tuners/lora/layer.py Linear.forward; transformers 5.23 LlamaMLP.forward, Phi3MLP.forward;
      measured by the cpu probe (tests/models/test_training_misses.py, test_training_misses_9.py: the storages
      live at the peak op).
    """
    p, t, h, f = shp.act_bytes, shp.tokens, spec.hidden_size, spec.ffn_dim
    moments = []
    for name, width, not_yet in _gate_up_linears(spec, grads):
        later = not_yet + DOWN_SAVED
        nbytes = p * t * width + 2 * FP32 * t * width - sum(v for k, v in saved.items() if k.startswith(later))
        w = "2f" if width != f else "f"
        formula = f"p·T·{w} + 2·4·T·{w} ({name}'s base and LoRA outputs) − later saved tensors"
        if p != FP32 and grads.lora_dropout:
            nbytes += FP32 * t * h
            formula += " + 4·T·h adapter input cast"
        moments.append((nbytes, formula))
    return moments


def _recompute_locals(
    spec: ModelSpec,
    shp: TrainShapes,
    grads: LayerGrads,
    saved: Mapping[str, int],
    moe_layer: bool,
    lora_down: bool = True,
) -> BlockBackward:
    """The recomputed forward at the down projection: the residual (unless the post-attention norm keeps it, an
    fp32 residual stream's); the MLP input, an MoE layer's gathered
    tokens and the product unless a trainable weight keeps them (they are then in the ledger); an MoE layer's
    fp32 k·T·h output gradient, materialized by backward before it needed the block; LoRA on a dense down_proj:
    its locals and the gradients backward made before it needed the block (_lora_down_recompute); LoRA on
    gate_proj / up_proj: the moment at its lora_B scaling where larger (_lora_gate_up_moments). A block with a
    post-feedforward norm (Gemma-2) is first needed at that norm: the recompute runs past down_proj
    (_lora_down_recompute_sandwich) and backward holds the norm's fp32 output gradient (_sandwich_pending).
    `lora_down` False: the MLP's own locals only. A layer ending in Qwen2-MoE's shared-expert gate recomputes
    through its routed experts before any gradient of theirs exists (planner.training.shared_gate)."""
    if has_shared_gate(spec, moe_layer):
        gated = gated_recompute(spec, shp, grads, saved)
        return BlockBackward("recompute", gated.bytes, gated.formula)
    p, t, h = shp.act_bytes, shp.tokens, spec.hidden_size
    nbytes, parts = p * t * h, ["p·T·h residual"]
    if shp.residual_bytes == FP32 and "post_attention_norm/input_fp32" in saved:
        # an fp32 residual stream (fp32, autocast): `.float()` is a no-op, the norm keeps the residual itself
        nbytes, parts = 0, []
    if "mlp_in/input" not in saved:  # the post-attention norm's output: fp32 under autocast
        nbytes += shp.residual_bytes * t * h
        parts.append("p·T·h MLP input")
    if "mlp_down_in/input" not in saved:
        nbytes += p * t * mlp_width(spec, moe_layer)
        parts.append("p·T·f down_proj input")
    sandwich = f"{MLP_OUT_NORM}/input_fp32" in saved  # Gemma-2: backward needs the block at its last norm
    if lora_down and not moe_layer and "down_proj" in grads.lora:
        recompute = _lora_down_recompute_autocast if shp.autocast else _lora_down_recompute
        lora_bytes, lora_parts = (_lora_down_recompute_sandwich if sandwich else recompute)(spec, shp, grads)
        nbytes += lora_bytes
        parts += lora_parts
    if lora_down and not moe_layer and not shp.autocast:  # the recompute passes gate/up's LoRA first
        pending = 0
        if "down_proj" in grads.lora and not sandwich:  # gradients backward made before it needed the block
            pending = FP32 * t * h + (p * t * h if p != FP32 else 0)
        kept = [part for part in parts[:2] if part in ("p·T·h residual", "p·T·h MLP input")]
        base = p * t * h * len(kept)
        for extra, formula in _lora_gate_up_moments(spec, shp, grads, saved):
            if base + pending + extra > nbytes:
                nbytes = base + pending + extra
                parts = [*kept, formula, *(["4·T·h + p·T·h down_proj's LoRA gradients"] if pending else [])]
    if moe_layer and spec.moe is not None:
        rows = spec.moe.experts_per_token * t
        if "moe/gathered_tokens" not in saved:
            nbytes += p * rows * h
            parts.append("p·k·T·h gathered tokens")
        nbytes += moe_combine_bytes(spec, p) * rows * h
        parts.append("c·k·T·h expert-output gradient")
    pending_bytes, pending_formula = _sandwich_pending(spec, shp, saved)
    if pending_bytes:
        nbytes += pending_bytes
        parts.append(pending_formula)
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
    spec: ModelSpec,
    shp: TrainShapes,
    grads: LayerGrads,
    saved: Mapping[str, int],
    grad_bytes: int,
    shared: int,
    accumulating: bool,
) -> BlockBackward:
    """Trained experts, at the larger of their two grouped matmuls' input-gradient products (each one's weight
    gradient, E·h·f_e·b_g for down and twice that for gate_up, is made first). Both come after the routing-weights
    backward: the routing weights' gradient waits (c·k·T), and it has released the expert outputs, the gathered
    routing weights (a renormalizing router's top-k values and sum are kept until the router's backward) and the
    restoring permutation (8·k·T).

    - down: its new weight gradient, the product's gradient (p·k·T·f_e) and the expert outputs' gradient
      (p·k·T·h, cast to p from the fp32 routing product for Mixtral and DeepSeek);
    - gate_up: its new weight gradient, down's unless it was added into a held one (`accumulating`), SwiGLU's
      concatenated gradient and the gathered tokens' (p·k·T·(2f_e + h)), the routed SwiGLU tensors released
      (p·k·T·f_e for each of the product and its factors that the ledger keeps).
    p is the weights' dtype (fp32 under autocast); `shared`: what a shared expert or gate differentiated before
    leaves. Sets the block's peak when the experts are large next to the tokens' activations.
    Source: transformers 5.23 integrations/moe.py grouped_mm_experts_forward; torch autograd (a node's saved
    tensors are released once it has run, nodes run latest-created first; a gradient accumulated into a held
    .grad is added in place); measured by the cpu probe (tests/models/test_training_misses_13.py, the storages live
    at the peak op)."""
    assert spec.moe is not None
    if not grads.weights:
        return BlockBackward("experts_backward", 0, "")
    # the grouped matmuls run in the weights' dtype: fp32 under autocast, which does not cast them
    moe, p, h, f_e = spec.moe, FP32 if shp.autocast else shp.act_bytes, spec.hidden_size, spec.moe.expert_ffn_dim
    rows = moe.experts_per_token * shp.tokens
    weight_grad = moe.num_experts * h * f_e * grad_bytes
    renormalized = FP32 * (rows + shp.tokens) if moe.renormalize_top_k else 0
    released = saved.get("moe/expert_outputs", 0) + saved.get("moe/routing_weights", 0) - renormalized + INT64 * rows
    waiting = moe_combine_bytes(spec, p) * rows - released + shared
    down = weight_grad + p * rows * (f_e + h) + waiting
    swiglu = p * rows * f_e * sum(1 for name in SWIGLU_SAVED if name in saved)
    gate_up = (2 if accumulating else 3) * weight_grad + p * rows * (2 * f_e + h) + waiting - swiglu
    if down > gate_up:
        return BlockBackward("experts_backward", down, "E·h·f_e·b_g + p·k·T·(f_e + h) + c·k·T − released (down)")
    held = "2" if accumulating else "3"
    formula = f"{held}·E·h·f_e·b_g + p·k·T·(2f_e + h) + c·k·T − released − SwiGLU's saved (gate_up)"
    return BlockBackward("experts_backward", gate_up, formula)


def _frozen_experts_backward(
    spec: ModelSpec, shp: TrainShapes, grads: LayerGrads, saved: Mapping[str, int], shared: int
) -> BlockBackward:
    """Frozen routed experts whose input needs grad, at SwiGLU's product backward: the gradient of the product (the
    down grouped matmul's input gradient) and of both factors, 3·p·k·T·f_e, with the routing weights' gradient
    waiting (c·k·T); the routing-weights backward and the down grouped matmul's have run and released the expert
    outputs, the gathered routing weights (c·k·T of moe/routing_weights; a renormalizing router's top-k values
    and sum are kept until the router's backward) and the restoring permutation (8·k·T). Sets the layer's peak
    over the routing-weights backward (3·c·k·T·h) when f_e is large next to h (fp32, or Qwen-MoE's c = p). p is the
    weights' dtype: fp32 under autocast, which does not cast the grouped matmuls (test_training_misses_14.py).
    `shared`: what a shared expert differentiated before leaves (_shared_expert_done).
    Source: transformers 5.23 integrations/moe.py grouped_mm_experts_forward (act(gate)·up, then the down
      grouped matmul, then the routing weights); torch autograd (a node's saved tensors are released once it has
      run, nodes run latest-created first); measured by the cpu probe (live storages at the peak op,
      tests/models/test_training_misses_12.py)."""
    assert spec.moe is not None
    moe, t = spec.moe, shp.tokens
    m = MoEGrads.of(grads, "post_attention_norm/input_fp32" in saved)
    if not m.x or m.weights or m.gate_up or m.down:  # trained experts: _experts_done, _expert_lora_backward
        return BlockBackward("experts_backward", 0, "")
    w = FP32 if shp.autocast else shp.act_bytes  # the grouped matmuls run in the weights' dtype: autocast skips them
    rows, c = moe.experts_per_token * t, moe_combine_bytes(spec, w)
    renormalized = FP32 * (rows + t) if moe.renormalize_top_k and m.routing else 0
    released = saved.get("moe/expert_outputs", 0) + saved.get("moe/routing_weights", 0) - renormalized + INT64 * rows
    routing_grad = c * rows if m.routing else 0
    return BlockBackward(
        "experts_backward",
        SWIGLU_GRADS * w * rows * moe.expert_ffn_dim + routing_grad - released + shared,
        "3·p·k·T·f_e + c·k·T − expert outputs, gathered routing weights, 8·k·T (frozen experts' SwiGLU backward)",
    )


def _expert_lora_backward(
    spec: ModelSpec, shp: TrainShapes, grads: LayerGrads, saved: Mapping[str, int], grad_bytes: int, shared: int
) -> BlockBackward:
    """LoRA on the stacked expert parameters (peft ParamWrapper): the backward of each grouped matmul materializes
    the gradient of its whole parametrized weight W' before baddbmm's backward folds it into the factors.

    At the down grouped matmul (its two outputs alive): W'_down's gradient (p·E·h·f_e), the product's (p·k·T·f_e,
    when it needs grad), and what waits: the expert-output gradient (p·k·T·h, the cast of the fp32 product's for
    Mixtral and DeepSeek), the routing weights' gradient (c·k·T); the expert outputs, the routing weights and the
    restoring permutation (8·k·T) are released by then.
    At the gate/up grouped matmul: W'_gate_up's gradient (p·E·2f_e·h), the gathered tokens' (p·k·T·h, when the
    input needs grad), SwiGLU's concatenated gradient (p·k·T·2f_e) and the waiting routing gradient; down's W', its
    input and SwiGLU's saved tensors are released (down's factor casts have given way to their gradients, bf16
    ones of the same size; fp32 ones are the parameters' new gradients, b_g·E·r·(f_e + h)).
    p is the weights' dtype (fp32 under autocast); `shared`: what a shared expert differentiated before leaves
    (_shared_expert_done).
    Source: peft 0.21.2 tuners/lora/layer.py ParamWrapper, _LoraFactorsProxy; transformers 5.23
      integrations/moe.py grouped_mm_experts_forward; torch autograd (a node's saved tensors are released once it
      has run, nodes run latest-created first); measured by the cpu probe (live storages per op,
      tests/models/test_training_misses.py).
    """
    assert spec.moe is not None
    moe, t, h = spec.moe, shp.tokens, spec.hidden_size
    m = MoEGrads.of(grads, "post_attention_norm/input_fp32" in saved)
    if not (m.gate_up or m.down):
        return BlockBackward("expert_lora_backward", 0, "")
    w = FP32 if shp.autocast else shp.act_bytes
    e, f_e, k, r = moe.num_experts, moe.expert_ffn_dim, moe.experts_per_token, grads.lora_rank
    rows, c = k * t, moe_combine_bytes(spec, w)
    routing_grad = c * rows if m.routing else 0
    released = (
        saved.get("moe/expert_outputs", 0)
        + saved.get("moe/routing_weights", 0)
        - (FP32 * (t * k + t) if moe.renormalize_top_k and m.routing else 0)
    )
    released += INT64 * rows  # the restoring permutation's IndexBackward has run
    down = (w * e * h * f_e if m.down else 0) + (w * rows * f_e if m.gate_up_out else 0)
    down += w * rows * h + routing_grad - released + shared
    formula_down = "p·E·h·f_e + p·k·T·f_e + p·k·T·h + c·k·T − expert outputs, routing weights, 8·k·T (down W' gradient)"
    moments = [(down, formula_down)]
    if m.gate_up:
        gate_up = w * e * 2 * f_e * h + (w * rows * h if m.x else 0) + w * rows * 2 * f_e + routing_grad
        gate_up -= released + saved.get("moe/expert_lora/down_weight", 0) + saved.get("mlp_down_in/input", 0)
        gate_up -= sum(saved.get(name, 0) for name in ("mlp/gate_output", "mlp/up_output", "mlp/act_output"))
        if m.down and w == FP32:
            gate_up += grad_bytes * e * r * (f_e + h)
        gate_up += shared
        formula_gate_up = "p·E·2f_e·h + p·k·T·(h + 2f_e) + c·k·T − down's and SwiGLU's saved (gate/up W' gradient)"
        moments.append((gate_up, formula_gate_up))
    nbytes, formula = max(moments)
    return BlockBackward("expert_lora_backward", nbytes, formula)


def _lora_down_backward(
    spec: ModelSpec, shp: TrainShapes, grads: LayerGrads, saved: Mapping[str, int], grad_bytes: int, accumulating: bool
) -> tuple[int, str]:
    """LoRA on a dense down_proj, in lora_A's MmBackward (the MLP backward's peak): the gradient of lora_A's fp32
    input (4·T·f) is allocated while lora_A still keeps that input; the base branch's gradient of the summed
    output waits (p·T·h, a cast when p ≠ 4: base + 4-byte lora output is fp32; in fp32 it is the block output
    gradient itself); lora_A's new weight gradient (r·f·b_g) and lora_B's, already produced (h·r·b_g; added in
    place into the held one when accumulating). With dropout, dropout's backward next frees lora_A's input (the
    dropout output) as it allocates the masked gradient: no higher. In fp32 without dropout lora_A's input is the
    product itself, shared with the base down_proj, which saves nothing (frozen): once lora_A's node has run, the
    base branch's MmBackward makes its own gradient of the product (4·T·f) and autograd sums the two out of place
    (4·T·f), while the product and lora_A's output are released.
    Source: peft 0.21.2 tuners/lora/layer.py Linear.forward; torch autograd (MmBackward keeps its saved tensors
      until it has run; an input buffer sums two gradients out of place); measured by the cpu probe
      (tests/models/test_training_misses.py, test_training_misses_9.py).
    """
    p, t, h, f, r = shp.act_bytes, shp.tokens, spec.hidden_size, spec.ffn_dim, grads.lora_rank
    nbytes, parts = FP32 * t * f + r * f * grad_bytes, ["4·T·f lora_A input gradient", "r·f·b_g lora_A gradient"]
    if p != FP32:
        nbytes += p * t * h
        parts.append("p·T·h base branch gradient")
    if not accumulating:
        nbytes += h * r * grad_bytes
        parts.append("h·r·b_g lora_B gradient")
    if p == FP32 and not grads.lora_dropout:
        # the base branch's MmBackward runs next (created earlier): its gradient of the product and their sum
        summed = 3 * FP32 * t * f - saved.get("mlp_down_in/input", 0) - saved.get("lora/down_proj/a_output", 0)
        summed += 0 if accumulating else (r * f + h * r) * grad_bytes  # else added into the held ones, freed
        if summed > nbytes:
            released = "the product and lora_A's output released" + ("" if accumulating else ", LoRA gradients")
            return summed, f"3·4·T·f the product's two gradients and their sum, {released} (LoRA on down_proj)"
    return nbytes, " + ".join(parts) + " (LoRA on down_proj)"


def _ia3_gate_up_backward(
    shp: TrainShapes, grads: LayerGrads, saved: Mapping[str, int], f: int, h: int, recomputed: bool
) -> int:
    """IA3 scaling gate_proj's or up_proj's output in a dense SwiGLU MLP, (W·x · l).to(p): each one's backward,
    once the product's backward has released silu(gate(x)) and up(x) and down_proj's backward its own saved
    tensors, holds k fp32 T·f tensors at once: the output gradient cast to fp32 (ToCopyBackward, p != 4), its
    product with l (W·x's gradient) and its product with W·x (for l's gradient, summed), k = 3 (2 in fp32).
    up_proj (differentiated first, its nodes being the later): silu's output gradient waits (p·T·f). gate_proj:
    silu's backward has released gate's output, up's backward its W·x and left the MLP input's gradient (p·T·h).
    Without checkpointing W·x's gradient is then cast to p (p·T·f, p != 4) with all of them alive (the peak op);
    in a recomputed block the cast adds nothing: the peak is the second fp32 product (measured: the recomputed
    W·x, unpacked through checkpoint's hook, is gone by the cast). Under autocast the same: W·x is autocast's bf16
    matmul output (measured in a recomputed block, tests/models/test_training_misses_11.py).
    Bytes beyond the block's saved tensors, at the larger of the two (0 without such a target).
    Source: peft 0.21.2 tuners/ia3/layer.py Linear.forward; transformers 5.23 LlamaMLP.forward; torch autograd
      (a node's saved tensors are released once it has run, nodes run latest-created first); measured by the
      cpu probe (tests/models/test_training_misses.py).
    """
    p, t = shp.act_bytes, shp.tokens
    fp32_grads = (3 if p != FP32 else 2) * FP32 * t * f + (p * t * f if p != FP32 and not recomputed else 0)
    released = saved.get("mlp/act_output", 0) + saved.get("mlp/up_output", 0)
    released += sum(v for k, v in saved.items() if k.startswith(("mlp_down_in/", "lora/down_proj/", "ia3/down_proj/")))
    scaled = grads.ia3 - grads.ia3_feedforward
    moments = []
    if "up_proj" in scaled:
        moments.append(p * t * f + fp32_grads - released)
    if "gate_proj" in scaled:
        released += saved.get("mlp/gate_output", 0) + saved.get("ia3/up_proj/output", 0)
        moments.append(p * t * h + fp32_grads - released)
    return max(moments, default=0)


def _routing_backward(spec: ModelSpec, shp: TrainShapes, recomputed: bool, shared: int) -> BlockBackward:
    """An MoE layer's routing-weights backward, at the larger of two moments:

    - the restoring permutation's IndexBackward: the gradient of the k-way sum expanded and copied to k·T rows
      (a view when k = 1), its zeros and the scattered copy, c·k·T·h each;
    - the routing product's MulBackward: the scattered gradient, its products with the weights and with the expert
      outputs (3·c·k·T·h) and, where c ≠ p, the expert outputs' gradient cast to p (p·k·T·h; a recomputed block
      has already released the expert outputs by then: checkpoint frees a recomputed tensor once backward has
      unpacked it), the IndexBackward having released its permutation (8·k·T).
    `shared`: what a shared expert or gate differentiated before leaves.
    Source: transformers 5.23 integrations/moe.py grouped_mm_experts_forward; torch autograd (a node's saved
      tensors are released once it has run); measured by the cpu probe (tests/models/test_training_misses_13.py).
    """
    assert spec.moe is not None
    p, h, k = shp.act_bytes, spec.hidden_size, spec.moe.experts_per_token
    rows = k * shp.tokens
    combine = moe_combine_bytes(spec, p)
    cast = 0 if recomputed or combine == p else p * rows * h
    at_index = (MOE_ROUTING_GRADS if k > 1 else MOE_ROUTING_GRADS - 1) * combine * rows * h
    at_mul = MOE_ROUTING_GRADS * combine * rows * h + cast - INT64 * rows
    done = ", shared expert done" if spec.moe.shared_expert_ffn_dim or spec.moe.shared_expert_gate else ""
    if at_index >= at_mul:
        formula = f"{'3' if k > 1 else '2'}·c·k·T·h at the restoring permutation's backward (c = 4, Qwen-MoE p)"
        return BlockBackward("mlp_backward", at_index + shared, formula + done)
    formula = "3·c·k·T·h" + (" + p·k·T·h" if cast else "") + " − 8·k·T routing-weights backward (c = 4, Qwen-MoE p)"
    return BlockBackward("mlp_backward", at_mul + shared, formula + done)


def _mlp_backward(
    spec: ModelSpec,
    shp: TrainShapes,
    grads: LayerGrads,
    saved: Mapping[str, int],
    grad_bytes: int,
    moe_layer: bool,
    recomputed: bool,
    accumulating: bool = False,
) -> BlockBackward:
    """The first gradients of the MLP's backward, with the down projection's weight gradient (full training)."""
    p, t, h = shp.act_bytes, shp.tokens, spec.hidden_size
    if moe_layer and spec.moe is not None:
        made = 0 if accumulating else grad_bytes  # accumulating: new gradients are added into held ones
        if has_shared_gate(spec, moe_layer):  # the gate's backward ran first, the shared expert's comes last
            shared = shared_gate_pending(spec, shp, grads, saved, made, "post_attention_norm/input_fp32" in saved)
        else:
            shared = _shared_expert_done(spec, shp, grads, saved, made)
        routing = _routing_backward(spec, shp, recomputed, shared)
        lora = _expert_lora_backward(spec, shp, grads, saved, grad_bytes, shared)
        frozen = _frozen_experts_backward(spec, shp, grads, saved, shared)
        trained = _experts_done(spec, shp, grads, saved, grad_bytes, shared, accumulating)
        return max(routing, trained, lora, frozen, key=lambda m: m.bytes)
    f = spec.ffn_dim
    if "down_proj" in grads.lora:
        nbytes, formula = _lora_down_backward(spec, shp, grads, saved, grad_bytes, accumulating)
    elif "down_proj" in grads.ia3:
        nbytes, formula = IA3_DOWN_GRAD_FP32 * FP32 * t * f, "3·4·T·f (IA3 on down_proj)"
        if "down_proj" in grads.ia3_feedforward and "mlp_down_in/autocast_weights" in saved:
            # input-scaled, the mul runs before the matmul: under autocast the matmul's bf16 weight cast, kept for
            # its input's gradient, is released by its MmBackward before the IA3 backward (measured at the peak op)
            nbytes -= saved["mlp_down_in/autocast_weights"]
            formula += " − down_proj's bf16 weight cast, released"
    elif "mlp_down_in/input" in saved:  # the product, kept for down_proj's weight, is released by then
        nbytes, formula = (SWIGLU_GRADS - 1) * p * t * f, "2·p·T·f"
    else:
        nbytes, formula = SWIGLU_GRADS * p * t * f, "3·p·T·f"
    if "down_proj" not in grads.lora | grads.ia3 and "mlp_down_in/autocast_weights" in saved:
        # under autocast down_proj's MmBackward, run before SwiGLU's gradients, has released its bf16 weight cast
        nbytes -= saved["mlp_down_in/autocast_weights"]
        formula += " − down_proj's bf16 weight cast, released"
    ia3 = _ia3_gate_up_backward(shp, grads, saved, f, h, recomputed)
    if ia3 > nbytes:
        nbytes, formula = ia3, "k·4·T·f IA3 gate/up gradients (k = 3, 2 in fp32) + p·T·f cast + pending − released"
    if grads.weights:
        down = next(lin for lin in block_layout(spec, False).mlp if lin.name == "down_proj")
        down_grad = down.weight_params * grad_bytes
        if not accumulating:
            nbytes += down_grad
            formula += " + down_proj gradient"
        elif p * t * f + down_grad > nbytes:
            # accumulating, AccumulateGrad adds the new gradient into the held one and frees it before SwiGLU's
            # gradients; at down_proj's MmBackward both its outputs are alive and the product is still saved
            nbytes, formula = p * t * f + down_grad, "p·T·f + h·f·b_g down_proj's input and new weight gradients"
    return BlockBackward("mlp_backward", nbytes, formula)


def _attention_recompute(spec: ModelSpec, shp: TrainShapes, saved: Mapping[str, int]) -> BlockBackward:
    """The recompute at the end of the attention kernel (SDPA math): the saved tensors rebuilt up to it, and the
    kernel's and the attention module's locals (attention_core.attention_kernel_locals); what the block saves after
    attention is not rebuilt yet. Bytes beyond the block's saved tensors."""
    local_bytes, formula = attention_kernel_locals(spec, shp, saved)
    if not local_bytes:
        return BlockBackward("recompute_attention", 0, "")
    if shp.autocast:  # the block output's gradient, cast to bf16 for the MLP output's branch before the recompute
        local_bytes += AUTOCAST_BYTES * shp.tokens * spec.hidden_size
        formula += " + 2·T·h pending output-gradient cast"
    later = sum(v for k, v in saved.items() if not k.startswith(PRE_MLP_PREFIXES))
    return BlockBackward("recompute_attention", local_bytes - later, formula + " − saved tensors after attention")


def block_backward(
    spec: ModelSpec,
    shp: TrainShapes,
    grads: LayerGrads,
    saved: Mapping[str, int],
    *,
    moe_layer: bool,
    recomputed: bool,
    grad_bytes: int,
    accumulating: bool = False,
) -> BlockBackward:
    """The largest of the block's candidate moments: the MLP's backward, its norms' (planner.training.norm_backward)
    and, under full checkpointing, the recompute at the down projection and at the attention kernel's end;
    `accumulating`: gradients from earlier micro-batches are held (new ones are added into them in place)."""
    made_grad_bytes = 0 if accumulating else grad_bytes  # accumulating: new gradients are added in place
    norm_bytes, norm_formula = block_norm_backward(spec, shp, grads, saved, made_grad_bytes, moe_layer)
    # Gemma-2's post-feedforward norm: released before the MLP's backward, not yet rebuilt by the MLP's recompute
    mlp_moments = [_mlp_backward(spec, shp, grads, saved, grad_bytes, moe_layer, recomputed, accumulating)]
    if recomputed:
        mlp_moments.append(_recompute_locals(spec, shp, grads, saved, moe_layer))
    moments = [_without_mlp_out_norm(m, saved) for m in mlp_moments]
    moments.append(BlockBackward("norm_backward", norm_bytes, norm_formula))
    if recomputed:
        moments.append(_attention_recompute(spec, shp, saved))
    return max(moments, key=lambda m: m.bytes)


def _without_mlp_out_norm(moment: BlockBackward, saved: Mapping[str, int]) -> BlockBackward:
    """A moment in or before the MLP, less what Gemma-2's post-feedforward norm saves (not alive then)."""
    out_norm = mlp_out_norm_saved(saved)
    if not out_norm:
        return moment
    formula = moment.formula + " − the post-feedforward norm's saved tensors"
    return BlockBackward(moment.moment, moment.bytes - out_norm, formula)


def _loop_held(
    spec: ModelSpec, shp: TrainShapes, saved: Mapping[str, int], first_saved: Mapping[str, int] | None, layers: int
) -> tuple[int, list[str]]:
    """What the model's layer loop holds through the last block's forward: the embedding output (`inputs_embeds`)
    and the last block's input (`hidden_states`; one tensor with one block), p·T·h each unless the block's input
    norm keeps it: in an fp32 residual stream `.float()` is a no-op, but block 0's norm saves nothing when its
    input needs no grad (`first_saved`: block 0's ledger; None: it keeps it)."""
    if shp.residual_bytes != FP32:
        held = 1 if layers == 1 else 2
        return held * shp.act_bytes * shp.tokens * spec.hidden_size, [f"{held}·p·T·h embedding output and block input"]
    ledgers = [saved] if first_saved is None or layers == 1 else [first_saved, saved]
    held = sum(NORM_INPUT not in ledger for ledger in ledgers)
    if not held:
        return 0, []
    return held * FP32 * shp.tokens * spec.hidden_size, [f"{held}·4·T·h embedding output or block input, not kept"]


def forward_peak(
    spec: ModelSpec,
    shp: TrainShapes,
    grads: LayerGrads,
    saved: Mapping[str, int],
    *,
    moe_layer: bool,
    layers: int,
    first_saved: Mapping[str, int] | None = None,
) -> BlockBackward | None:
    """The forward's own peak, in the last block's LoRA-adapted dense gate_proj, up_proj or down_proj: every
    saved tensor of every block is alive (less what the MLP saves later: _lora_gate_up_moments), with the
    forward's locals at the scaling of lora_B's output. Beyond the saved tensors, in down_proj:

    - the embedding output, held by the model's `inputs_embeds` through the loop, and the last block's input,
      held by the loop's `hidden_states` (one tensor with one block), p·T·h each unless a norm keeps them (an
      fp32 residual stream: `.float()` is a no-op);
    - the residual, the MLP input and the product (down_proj's input) unless the ledger holds them;
    - peft's Linear.forward: the base output (p·T·h), x cast to the adapter's fp32 (4·T·f, when dropout reads it
      and p ≠ 4; else lora_A keeps it, in the ledger), lora_B's fp32 output and its copy scaled by α/r
      (2·4·T·h, both alive in `lora_B(lora_A(dropout(x))) * scaling`).
    In gate_proj or up_proj: their base and LoRA outputs (_lora_gate_up_moments). None when no such moment is
    modelled (no LoRA on a dense MLP linear, autocast).
    Source: transformers 5.23 models/llama/modeling_llama.py LlamaModel.forward, LlamaDecoderLayer.forward;
      peft 0.21.2 tuners/lora/layer.py Linear.forward; measured by the cpu probe (the storages live at the
      forward's peak op, tests/models/test_training_misses.py).
    """
    if has_shared_gate(spec, moe_layer) and not shp.autocast:  # as its recompute, with every block's saved tensors
        held, held_parts = _loop_held(spec, shp, saved, first_saved, layers)
        gated = gated_recompute(spec, shp, grads, saved)
        return BlockBackward("forward", held + gated.bytes, " + ".join([*held_parts, gated.formula]))
    gate_up = _lora_gate_up_moments(spec, shp, grads, saved) if not (moe_layer or shp.autocast) else []
    if moe_layer or shp.autocast or ("down_proj" not in grads.lora and not gate_up):
        return None
    p, t, h, f = shp.act_bytes, shp.tokens, spec.hidden_size, spec.ffn_dim
    nbytes, parts = _loop_held(spec, shp, saved, first_saved, layers)
    mlp_in = 0 if "mlp_in/input" in saved else p * t * h
    residual = 0 if shp.residual_bytes == FP32 and "post_attention_norm/input_fp32" in saved else p * t * h
    nbytes += residual + mlp_in
    parts.append("p·T·h residual and MLP input unless kept")
    best, best_formula = max(gate_up, default=(0, ""))
    if "down_proj" in grads.lora:
        down = p * t * h + 2 * FP32 * t * h
        down_formula = "p·T·h base down_proj output + 2·4·T·h lora_B output and its scaled copy"
        if "mlp_down_in/input" not in saved:
            down += p * t * f
            down_formula += " + p·T·f down_proj input"
        if p != FP32 and grads.lora_dropout:
            down += FP32 * t * f
            down_formula += " + 4·T·f adapter input cast"
        if down > best:
            best, best_formula = down, down_formula
    return _without_mlp_out_norm(BlockBackward("forward", nbytes + best, " + ".join([*parts, best_formula])), saved)
