"""Which attention kernel a probe really runs: torch's SDPA dispatch, asked before the step, and the math override.

`torch.nn.functional.scaled_dot_product_attention` runs a fused kernel (flash, memory-efficient, cuDNN) when one
supports the shapes, dtype and device, and otherwise its math implementation, which upcasts bf16/fp16 inputs to
fp32 and materializes the s² scores. The planner sizes the two differently (AttentionImpl.SDPA, SDPA_MATH), so the
probe asks torch which one it will pick for the model's head dims and compares with the kernel that ran: MLA
(q/k head dim d_nope + d_rope ≠ v head dim d_v) gets the math kernel on CPU, where flash needs equal head dims.
A request for `sdpa_math` runs the math kernel wherever it is (`forced_kernel`).
"""

from __future__ import annotations

import contextlib
from typing import Any, TypeVar

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from models.support import check_attention_supported, check_serving_supported, training_dtypes
from planner import ModelSpec
from planner.serving.spec import ServingSpec
from planner.training.spec import AttentionImpl, KernelDevice, TrainingSpec

__all__ = ["forced_kernel", "hf_attn_implementation", "kernel_run", "sdpa_picks_math"]

RunSpec = TypeVar("RunSpec", TrainingSpec, ServingSpec)
PROBE_QUERY_TOKENS = 2  # more than one query token: the causal prefill path, not decode's single query


def hf_attn_implementation(attention: AttentionImpl) -> str:
    """The transformers `attn_implementation` that runs `attention`: the math kernel is reached through SDPA."""
    return "eager" if attention is AttentionImpl.EAGER else "sdpa"


def sdpa_picks_math(
    spec: ModelSpec, dtype: torch.dtype, device: torch.device, *, requires_grad: bool, masked: bool = False
) -> bool:
    """Whether torch's SDPA dispatcher picks its math kernel for the model's attention shapes.

    Asks `torch._fused_sdp_choice` on tiny tensors with the model's heads and head dims, in `dtype` on `device`,
    called as transformers calls it: causal without a mask, KV heads shared through `enable_gqa`; with an explicit
    mask (`masked`, e.g. prefix tuning's longer keys) K and V repeated to every query head (repeat_kv).
    """
    n_h = spec.num_heads
    if spec.mla is not None:
        d_qk, d_v, n_kv = spec.mla.qk_head_dim, spec.mla.v_head_dim, n_h
    else:
        d_qk = d_v = spec.resolved_head_dim
        n_kv = n_h if masked else spec.kv_heads
    s = PROBE_QUERY_TOKENS

    def empty(heads: int, d: int) -> torch.Tensor:
        return torch.empty(1, heads, s, d, dtype=dtype, device=device, requires_grad=requires_grad)

    q, k, v = empty(n_h, d_qk), empty(n_kv, d_qk), empty(n_kv, d_v)
    mask = torch.ones(1, 1, s, s, dtype=torch.bool, device=device) if masked else None
    choice = torch._fused_sdp_choice(q, k, v, mask, 0.0, not masked, enable_gqa=n_kv < n_h)
    return bool(choice == SDPBackend.MATH.value)


def kernel_run(spec: ModelSpec, run: RunSpec, device: torch.device) -> RunSpec:
    """`run` as the probe executes it: on `device` (a TrainingSpec's `device`, so that the planner sizes the kernels
    that run there: dropout masks, SDPA), and `attention='sdpa'` becomes 'sdpa_math' where torch picks the math kernel.

    The fake backend runs on cpu tensors, so `device` is cpu for it. Expects a supported run
    (models.support.check_*_supported): its dtype must be one a probe can build. SpecError where the family has
    no SDPA implementation in transformers.
    """
    check_attention_supported(spec, run.attention, "training" if isinstance(run, TrainingSpec) else "serving")
    if isinstance(run, TrainingSpec):
        run = run.model_copy(update={"device": KernelDevice(device.type)})
    if run.attention is not AttentionImpl.SDPA:
        return run
    if isinstance(run, TrainingSpec):
        params, autocast = training_dtypes(run)
        math = sdpa_picks_math(spec, autocast or params, device, requires_grad=True, masked=run.method.kind == "prefix")
    else:
        math = sdpa_picks_math(spec, check_serving_supported(run), device, requires_grad=False)
    return run.model_copy(update={"attention": AttentionImpl.SDPA_MATH}) if math else run


def forced_kernel(attention: AttentionImpl) -> contextlib.AbstractContextManager[Any]:
    """Run SDPA with the math kernel only for `sdpa_math` (where torch would pick a fused one); else no change."""
    return sdpa_kernel(SDPBackend.MATH) if attention is AttentionImpl.SDPA_MATH else contextlib.nullcontext()
