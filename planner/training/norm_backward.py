"""The backward of an RMSNorm: five fp32 T·h tensors at once, a candidate peak where the FFN is narrow or the
vocabulary small.

transformers' RMSNorm (LlamaRMSNorm, and GemmaRMSNorm with its fp32 (1 + w)) computes x · rsqrt(mean(x²) + ε) on
x.float(). Its backward passes x · rsqrt's MulBackward (x's direct gradient g·rsqrt, 4·T·h, waits for the second
one), RsqrtBackward, MeanBackward (the gradient expanded and divided by h: 4·T·h) and then PowBackward, which
computes grad · (2 · x.pow(1)): x.pow(1), 2·x.pow(1) and their product with the gradient (3·4·T·h) are alive with
the two before. Where x's gradient is needed at all (x needs grad), these five fp32 tensors are the norm's peak,
whatever the activation dtype (the norm's math is fp32), beside what is still saved:

- Gemma-2's post-feedforward norm (on the MLP output, the first node of the block's backward to keep anything):
  every saved tensor of the block is alive (under full checkpointing its first unpack has just recomputed them
  all) but what the norm's own MulBackwards have released: its rsqrt, (1 + w) and, when w trains, the normalized x;
  its weight's gradient exists;
- the post-attention norm: the MLP's saved tensors are released (its backward has run), the attention's are not;
  the gradient entering the block waits for the residual sum; the MLP's weight gradients (and the norm's) exist;
- the input norm: only the norm's own input is still saved in the block; every weight gradient of the block exists;
- the final norm: every block's saved tensors (or checkpoint inputs) are alive, the loss's and lm_head's released.

Source: transformers 5.23 models/llama/modeling_llama.py LlamaRMSNorm.forward, models/gemma/modeling_gemma.py
  GemmaRMSNorm, models/gemma2/modeling_gemma2.py Gemma2DecoderLayer.forward; torch 2.13
  tools/autograd/templates + torch/csrc/autograd/FunctionsManual.cpp `pow_backward`
  (grad * (exponent * self.pow(exponent - 1))), `mean_backward` (grad.expand(sizes) / n); measured by the cpu
  probe (tests/models/test_training_misses.py: the storages live at the peak op are the five fp32 tensors;
  tests/models/test_training_misses_11.py for Gemma-2's post-feedforward norm).
"""

from __future__ import annotations

from collections.abc import Mapping

from planner.model.params import block_layout
from planner.model.spec import ModelSpec
from planner.training.activations import (
    ATTENTION_OUT_NORM,
    FP32,
    MLP_OUT_NORM,
    PRE_MLP_PREFIXES,
    LayerGrads,
    TrainShapes,
)

__all__ = [
    "RMSNORM_BACKWARD_FP32",
    "block_norm_backward",
    "mlp_out_norm_saved",
    "norm_backward_bytes",
    "post_attention_kept",
]

RMSNORM_BACKWARD_FP32 = 5  # fp32 T·h tensors alive in an RMSNorm's PowBackward (module docstring)
# saved tensors of a block still alive when its post-attention norm is differentiated: the attention's, o_proj's
# and the norm's own input (the MLP's have been released by its backward)
KEPT_THROUGH_POST_NORM = (
    *PRE_MLP_PREFIXES, "o_proj_in/", "lora/o_proj/", "ia3/o_proj/", "adapter_attention/", f"{ATTENTION_OUT_NORM}/",
    "post_attention_norm/input_fp32",
)  # fmt: skip
# what a norm's MulBackwards (x · rsqrt, then · (1 + w) or · w) release before its PowBackward runs
RELEASED_BEFORE_POW = ("rsqrt", "weight_plus_one_fp32", "normalized")


def norm_backward_bytes(shp: TrainShapes, width: int) -> int:
    """The five fp32 tensors of an RMSNorm's backward over `width` features: 5·4·T·width."""
    return RMSNORM_BACKWARD_FP32 * FP32 * shp.tokens * width


def post_attention_kept(saved: Mapping[str, int]) -> int:
    """Bytes of a block's saved tensors still alive at its post-attention norm's backward."""
    return sum(v for k, v in saved.items() if k.startswith(KEPT_THROUGH_POST_NORM))


def mlp_out_norm_saved(saved: Mapping[str, int]) -> int:
    """Bytes the block saves in Gemma-2's post-feedforward norm (0 without one): not yet rebuilt while a recompute
    runs the MLP, released once backward has passed the norm."""
    return sum(v for k, v in saved.items() if k.startswith(f"{MLP_OUT_NORM}/"))


def _adapter_grads(spec: ModelSpec, grads: LayerGrads, linears: tuple[str, ...], moe_layer: bool) -> int:
    """Elements of the LoRA gradients of the named linears: r·(d_in + d_out) each."""
    layout = block_layout(spec, moe_layer)
    return sum(
        grads.lora_rank * (lin.d_in + lin.d_out) * lin.count
        for lin in layout.linears
        if lin.name in linears and lin.name in grads.lora
    )


def block_norm_backward(
    spec: ModelSpec, shp: TrainShapes, grads: LayerGrads, saved: Mapping[str, int], grad_bytes: int, moe_layer: bool
) -> tuple[int, str]:
    """Bytes beyond the block's saved tensors at the largest of its norms' backward (0, "" where no norm's input
    needs grad): 5·4·T·h, less the saved tensors released by then, plus the weight gradients made by then."""
    h, layout = spec.hidden_size, block_layout(spec, moe_layer)
    mlp_names = tuple(lin.name for lin in layout.mlp)
    every_name = tuple(lin.name for lin in layout.linears)
    norm_temps = norm_backward_bytes(shp, h)
    moments = []
    if f"{MLP_OUT_NORM}/input_fp32" in saved:
        made = h if grads.weights else 0
        released = sum(saved.get(f"{MLP_OUT_NORM}/{name}", 0) for name in RELEASED_BEFORE_POW)
        moments.append((norm_temps + made * grad_bytes - released, "5·4·T·h post-feedforward norm backward"))
    if "post_attention_norm/input_fp32" in saved:
        norm_weights = h * (2 if f"{MLP_OUT_NORM}/input_fp32" in saved else 1)  # the post-feedforward norm's too
        adapters = _adapter_grads(spec, grads, mlp_names, moe_layer)
        made = (layout.mlp_params + norm_weights) if grads.weights else adapters
        released = sum(saved.values()) - post_attention_kept(saved)
        moments.append((norm_temps + made * grad_bytes - released, "5·4·T·h post-attention norm backward"))
    if "input_norm/input_fp32" in saved:
        made = layout.params if grads.weights else _adapter_grads(spec, grads, every_name, moe_layer)
        released = sum(saved.values()) - saved["input_norm/input_fp32"]
        moments.append((norm_temps + made * grad_bytes - released, "5·4·T·h input norm backward"))
    nbytes, formula = max(moments, default=(0, ""))
    return nbytes, formula + " − released saved tensors + the block's weight gradients made"
