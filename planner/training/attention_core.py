"""The attention core's saved tensors: q, k, v as the kernel keeps them, the scores or their log-sum-exp.

Which storage autograd keeps behind k and v depends on how transformers hands them to the kernel. `repeat_kv`
(expand + reshape) copies only when it has to: with one KV head (MQA) the reshape merges a size-1 dimension and
returns a view of the one-head tensor, and with n_kv = n_h it returns its input. A kernel that saves a view keeps
the whole storage behind it: Phi-3's v is a slice of the fused qkv_proj output, MLA's v a slice of kv_b_proj's
output. Eager attention's matmuls fold (b, n_h) into one batch dimension; that reshape is a view for one row
(b = 1) or a contiguous input, a copy otherwise.
Source: transformers 5 `repeat_kv`, `sdpa_attention_forward` (use_gqa_in_sdpa), `eager_attention_forward`; torch
`matmul` (batched: expand + reshape to 3-D, then bmm), `_scaled_dot_product_attention_math`; measured with
saved_tensors_hooks and the probes (tests/planner/test_activations.py, tests/models/).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from planner.model.spec import ModelSpec
from planner.training.spec import AttentionImpl, KernelDevice

if TYPE_CHECKING:
    from planner.training.activations import SavedLedger, TrainShapes

__all__ = [
    "FUSED_QKV_FAMILIES",
    "SOFTCAPPED_FAMILIES",
    "attention_backward_temporaries",
    "attention_core",
    "attention_head_dims",
    "attention_kernel_locals",
    "prefix_cache_unsaved_bytes",
    "sdpa_kernel",
]

FP32 = 4
AUTOCAST_BYTES = 2  # torch.autocast(bf16) casts
FUSED_QKV_FAMILIES = frozenset({"phi3"})  # one qkv_proj (and gate_up_proj) linear, split after
# Gemma-2 soft-caps attention scores (eager only) and the final logits: c·tanh(x / c) (its config defaults)
SOFTCAPPED_FAMILIES = frozenset({"gemma2"})
SDPA_GQA_MAX_HEAD_DIM = 256  # transformers passes enable_gqa to SDPA only without a mask and for d_h ≤ 256


def attention_head_dims(spec: ModelSpec) -> tuple[int, int, int]:
    """(d_q, d_v, n_kv): MLA's per-head q/k of d_nope + d_R and v of d_v on every head; else d_h and the KV heads."""
    if spec.mla is not None:
        return spec.mla.qk_head_dim, spec.mla.v_head_dim, spec.num_heads
    return spec.resolved_head_dim, spec.resolved_head_dim, spec.kv_heads


def sdpa_kernel(spec: ModelSpec, attention: AttentionImpl, device: KernelDevice) -> AttentionImpl:
    """The kernel `attention` runs on `device`: SDPA falls back to its math kernel where no fused one fits.

    CPU: the fused (flash) kernel needs equal q/k and v head dims, so MLA (d_nope + d_R ≠ d_v) runs math.
    CUDA: the memory-efficient kernel takes unequal head dims, so SDPA stays fused (O(s)).
    Source: torch sdp_utils_cpp.cpp `check_head_dim_size_cpp`; sdp_utils.cpp `check_head_dim_size_mem_efficient`;
      checked against torch's own choice (`torch._fused_sdp_choice`) on the CPU by tests/models/test_kernels.py.
    Assumes: CUDA head dims within the memory-efficient kernel's limits (multiples of 8).
    """
    d_q, d_v, _ = attention_head_dims(spec)
    if attention is AttentionImpl.SDPA and device is KernelDevice.CPU and d_q != d_v:
        return AttentionImpl.SDPA_MATH
    return attention


def attention_backward_temporaries(spec: ModelSpec, shp: TrainShapes) -> int:
    """Bytes a block's softmax backward holds besides its saved tensors; 0 for fused SDPA (tile by tile, no s²).

    Eager and SDPA math: the fp32 gradients of the softmax output and of the scores (2·4·b·n_h·s·s_k), the
    gradient of v repeated to n_h heads (b_v·b·n_h·s_k·d_v; b_v = 4 for math, which works in fp32, p for eager)
    and the gradient entering the block (p·T·h), live at once. In bf16 with n_h·d_h = h, eager's is 4·T·h.
    Source: measured with live storages at each softmax backward (models/ cpu backend, CPU) on transformers GQA
    Llamas, eager and forced to SDPA math (bf16 and fp32), and on DeepSeek-V2 (MLA, math, bf16).
    """
    if shp.attention is AttentionImpl.SDPA:
        return 0
    b, p, n_h, s_k = shp.batch, shp.act_bytes, spec.num_heads, shp.seq + shp.prefix_tokens
    scores_grads = 2 * FP32 * b * n_h * shp.seq * s_k
    v_grad_bytes = FP32 if shp.attention is AttentionImpl.SDPA_MATH else p
    v_grad = v_grad_bytes * b * n_h * s_k * attention_head_dims(spec)[1]
    return scores_grads + v_grad + p * shp.tokens * spec.hidden_size


def _v_source_width(spec: ModelSpec, shp: TrainShapes) -> int:
    """Elements per key token of the tensor v is a view of: Phi-3's fused qkv output, MLA's kv_b output, prefix
    tuning's concatenation of the prefix and v (contiguous), else v_proj's output."""
    d = spec.resolved_head_dim
    if spec.mla is not None:
        return spec.num_heads * (spec.mla.qk_nope_head_dim + spec.mla.v_head_dim)
    if spec.family in FUSED_QKV_FAMILIES and not shp.prefix_tokens:
        return (spec.num_heads + 2 * spec.kv_heads) * d
    return spec.kv_heads * d


def _fused_kv_widths(spec: ModelSpec, shp: TrainShapes, masked: bool) -> tuple[int, int]:
    """(k, v) elements per key token behind what a fused SDPA kernel saves. Unmasked, transformers shares KV heads
    through enable_gqa; with a mask it repeats them first (repeat_kv), a copy only when 1 < n_kv < n_h. Under
    autocast, RoPE leaves k in fp32 (fp32 cos/sin) and SDPA's bf16 cast copies it whole: one KV head repeated
    becomes n_h heads; v stays bf16 (v_proj's output) unless prefix tuning concatenated it with the fp32 prefix."""
    d_q, d_v, n_kv = attention_head_dims(spec)
    n_h = spec.num_heads
    repeated = masked or d_q != d_v or d_q > SDPA_GQA_MAX_HEAD_DIM
    if repeated and 1 < n_kv < n_h:
        return n_h * d_q, n_h * d_v
    cast_view = shp.autocast and repeated and n_kv == 1 < n_h
    k = n_h * d_q if cast_view else n_kv * d_q
    v = n_h * d_v if cast_view and shp.prefix_tokens else _v_source_width(spec, shp)
    return k, v


def _eager_kv_widths(spec: ModelSpec, shp: TrainShapes) -> tuple[int, int]:
    """(k, v) elements per key token behind what eager's two matmuls save (bmm's reshaped inputs).

    k (RoPE's output, or the prefix concatenation: contiguous) stays a view for n_kv = n_h, and for one KV head in
    one row; v (a transposed view) stays a view in one row or when contiguous (prefix); otherwise n_h-wide copies.
    Under autocast the matmul's bf16 cast copies k (fp32 after RoPE) whole, and v too when prefix tuning made it
    fp32: n_h heads.
    """
    d_q, d_v, n_kv = attention_head_dims(spec)
    n_h, one_row = spec.num_heads, shp.batch == 1
    if 1 < n_kv < n_h:  # repeat_kv copies
        return n_h * d_q, n_h * d_v
    k = n_kv * d_q if (n_kv == n_h or one_row) and not shp.autocast else n_h * d_q
    v_view = (one_row or (shp.prefix_tokens > 0 and n_kv == n_h)) and not (shp.autocast and shp.prefix_tokens)
    return k, _v_source_width(spec, shp) if v_view else n_h * d_v


def prefix_cache_unsaved_bytes(spec: ModelSpec, shp: TrainShapes, q_grad: bool) -> int:
    """Bytes of one layer's DynamicCache entries, cat(prefix, k) and cat(prefix, v) (c·b·(P + s)·n_kv·d_h each),
    that no saved tensor is a view of: alive through the forward beside the saved tensors (prefix tuning).
    c = 4 under autocast (RoPE's k and the prefix are fp32; the kernels keep bf16 casts: both unsaved), else p.
    Otherwise the kernel keeps the concatenation itself where it saves k or v at n_kv heads in p (the widths of
    attention_core): fused SDPA when repeat_kv is a view (n_kv = n_h, or one KV head); eager for k when q needs
    grad, for v when it is a view; SDPA math never for k (it keeps k·√scale), for v in fp32 in one row
    (the ledger's view). `q_grad`: the layer's q needs grad (eager keeps k for it).
    Source: transformers 5.23 cache_utils.py DynamicLayer.update (torch.cat), sdpa_attention.py repeat_kv;
      measured by the cpu probe (tests/models/test_training_misses_12.py)."""
    d_q, d_v, n_kv = attention_head_dims(spec)
    b, s_k, p = shp.batch, shp.seq + shp.prefix_tokens, shp.act_bytes
    c = FP32 if shp.autocast else p
    k_bytes, v_bytes = c * b * s_k * n_kv * d_q, c * b * s_k * n_kv * d_v
    if shp.autocast:
        return k_bytes + v_bytes
    if shp.attention is AttentionImpl.SDPA:
        k_width, v_width = _fused_kv_widths(spec, shp, masked=True)
        k_saved = k_width == n_kv * d_q
    elif shp.attention is AttentionImpl.SDPA_MATH:
        k_saved = False
        one_view = p == FP32 and b == 1 and (n_kv == spec.num_heads or n_kv == 1)
        v_width = _v_source_width(spec, shp) if one_view else spec.num_heads * d_v
    else:
        k_width, v_width = _eager_kv_widths(spec, shp)
        k_saved = q_grad and k_width == n_kv * d_q
    v_saved = v_width == n_kv * d_v
    return (0 if k_saved else k_bytes) + (0 if v_saved else v_bytes)


def attention_core(
    ledger: SavedLedger, shp: TrainShapes, spec: ModelSpec, q_grad: bool, k_grad: bool, v_grad: bool, masked: bool
) -> None:
    """Attention core for MHA/MQA/GQA (MLA: per-head q/k of d_nope + d_R, v of d_v), by kernel.

    SDPA (fused flash / memory-efficient) saves q, k, v, the output and an fp32 log-sum-exp (b·n_h·s·4); given
    an explicit mask (`masked`), transformers repeats k, v to n_h heads first (repeat_kv) and SDPA keeps the mask
    converted to the activation dtype, p·b·s·s_k.
    Eager saves q, k and v repeated to n_h heads (see `_eager_kv_widths` for the views), the fp32 softmax
    (b·n_h·s·s_k·4) and its cast to p (absent in fp32); o_proj then reads a contiguous copy of the output.
    SDPA math (torch's composite fallback) upcasts q, k, v to fp32, scales q and kᵀ by √scale each and repeats
    k, v to n_h heads, then keeps what eager keeps, in fp32: 4·b·n_h·(s·d_q + s_k·d_q + s_k·d_v) + 4·b·n_h·s·s_k
    (probs·v reads the fp32 softmax itself; the mask is not kept); o_proj reads a contiguous copy, as in eager.
    Source: torch `_scaled_dot_product_attention_math`; measured with saved_tensors_hooks on tiny transformers
    models, MLA DeepSeek-V2 (CPU picks math) and GQA Llama forced to math (tests/planner/test_activations.py).
    """
    b, s, p = shp.batch, shp.seq, shp.act_bytes
    s_k = s + shp.prefix_tokens
    n_h = spec.num_heads
    d_q, d_v, _ = attention_head_dims(spec)
    if shp.attention is AttentionImpl.SDPA:  # one autograd node: keeps every input once any needs grad
        k_width, v_width = _fused_kv_widths(spec, shp, masked)
        ledger.add("attention/q", p * b * s * n_h * d_q)
        ledger.add("attention/k", p * b * s_k * k_width)
        ledger.add("attention/v", p * b * s_k * v_width)
        ledger.add("attention/output", p * b * s * n_h * d_v)
        ledger.add("attention/logsumexp", FP32 * b * n_h * s)
        if masked:
            ledger.add("attention/mask", p * b * s * s_k)
        return
    math = shp.attention is AttentionImpl.SDPA_MATH
    if math:
        qkv_bytes, suffix, (k_width, v_width) = FP32, "_fp32", (n_h * d_q, n_h * d_v)
        # in fp32 the upcast is a no-op, and v, neither repeated (n_kv = n_h) nor copied by the matmul's reshape
        # (one row), is a view of the tensor it was split from: Phi-3's qkv output, MLA's kv_b output. With a mask
        # transformers repeats one KV head itself (repeat_kv: expand + reshape of a size-1 dim, a stride-0 view)
        # instead of SDPA's enable_gqa, whose repeat_interleave copies
        n_kv = attention_head_dims(spec)[2]
        if p == FP32 and not shp.autocast and b == 1 and (n_kv == n_h or (masked and n_kv == 1)):
            v_width = _v_source_width(spec, shp)
    else:
        qkv_bytes, suffix, (k_width, v_width) = p, "", _eager_kv_widths(spec, shp)
    # q·kᵀ keeps q for k's grad and k for q's; probs·v keeps probs for v's grad and v for the probs' grad.
    scores_grad = q_grad or k_grad
    if k_grad:
        ledger.add(f"attention/q{suffix}", qkv_bytes * b * s * n_h * d_q)
    if q_grad:
        ledger.add(f"attention/k{suffix}", qkv_bytes * b * s_k * k_width)
    if scores_grad:
        ledger.add(f"attention/v{suffix}", qkv_bytes * b * s_k * v_width)
    if scores_grad or math:  # math: probs·v keeps the fp32 softmax, the same tensor
        ledger.add("attention/softmax_fp32", FP32 * b * n_h * s * s_k)
    if not math and v_grad and (p != FP32 or not scores_grad):
        ledger.add("attention/probs", p * b * n_h * s * s_k)
    if not math and scores_grad and spec.family in SOFTCAPPED_FAMILIES:  # tanh(scores / c) · c keeps the tanh
        ledger.add("attention/softcap_tanh", p * b * n_h * s * s_k)


def attention_kernel_locals(spec: ModelSpec, shp: TrainShapes, saved: Mapping[str, int]) -> tuple[int, str]:
    """Bytes alive at the end of SDPA's math kernel besides the saved tensors, and the formula (0 for the other
    kernels; prefix tuning, and MLA under autocast, not modelled). In a recomputed block this is the recompute's
    peak op, without checkpointing a candidate peak of the forward (planner.training.backward_moments).

    MLA: _mla_kernel_locals; autocast: _autocast_kernel_locals. Otherwise the attention module holds the normed
    input (p·T·h, unless a trained weight saves it), q and k after RoPE and v (p·T·(n_h + n_kv)·d + p·T·w_v, w_v the
    width of the tensor v is a view of; in fp32 without repeated heads v is the saved value itself). The math
    kernel's C++ locals live until it returns: the fp32 casts of q, k, v (4·T·(n_h + 2·n_kv)·d when p ≠ 4; v's is
    the saved value when n_kv = n_h), k repeated to n_h heads (enable_gqa, 4·T·n_h·d when n_kv < n_h; the repeated v
    is saved), the causal mask converted to an additive fp32 s·s_k matrix, the fp32 output (4·T·n_h·d) and, when p ≠
    4, its cast and the probabilities' (p·T·n_h·d + p·b·n_h·s·s_k; the kernel returns both).
    Source: torch 2.13 aten/src/ATen/native/transformers/attention.cpp `_scaled_dot_product_attention_math`
      (query_acc/key_acc/value_acc, convert_boolean_attn_mask, pre_process_group_query_attention_input, the
      returned `matmul(attn, value).to(origin_dtype), attn.to(origin_dtype)`); transformers 5.23
      integrations/sdpa_attention.py (enable_gqa when no mask); measured by the cpu probe at the recompute's peak op
      (tests/models/test_training_misses.py).
    """
    if shp.attention is not AttentionImpl.SDPA_MATH or shp.prefix_tokens or (shp.autocast and spec.mla is not None):
        return 0, ""
    if spec.mla is not None:
        return _mla_kernel_locals(spec, shp, saved)
    if shp.autocast:
        return _autocast_kernel_locals(spec, shp, saved)
    b, s, p, t = shp.batch, shp.seq, shp.act_bytes, shp.tokens
    n_h, n_kv, d = spec.num_heads, spec.kv_heads, spec.resolved_head_dim
    repeated = n_kv < n_h
    normed = 0 if "attention_in/input" in saved else p * t * spec.hidden_size
    v_local = p * t * _v_source_width(spec, shp) if p != FP32 or repeated else 0
    module = normed + p * t * (n_h + n_kv) * d + v_local
    casts = FP32 * t * (n_h + n_kv + (n_kv if repeated else 0)) * d if p != FP32 else 0
    expanded = FP32 * t * n_h * d if repeated else 0
    mask = FP32 * s * s
    output = FP32 * t * n_h * d + (p * t * n_h * d + p * b * n_h * s * s if p != FP32 else 0)
    formula = "p·T·h + p·T·(n_h + n_kv)·d + p·T·w_v + 4·T·(n_h + 2·n_kv)·d + 4·T·n_h·d + 4·s² + 4·T·n_h·d"
    return module + casts + expanded + mask + output, formula + " + p·T·n_h·d + p·b·n_h·s² (SDPA math's end)"


def _autocast_kernel_locals(spec: ModelSpec, shp: TrainShapes, saved: Mapping[str, int]) -> tuple[int, str]:
    """Under autocast (fp32 parameters, bf16 matmuls), in SDPA's math kernel: bytes alive besides the saved
    tensors, at the larger of the masked scores and the kernel's end.

    The attention module holds the fp32 normed input (4·T·h, unless a trained weight saves it), q and k after RoPE
    (fp32: fp32 cos/sin, 4·T·(n_h + n_kv)·d) and v (v_proj's bf16 output, 2·T·w_v); autocast casts q and k to bf16
    for SDPA (2·T·(n_h + n_kv)·d). The kernel upcasts q, k, v to fp32 (4·T·(n_h + 2·n_kv)·d; v's is the saved
    value when n_kv = n_h), repeats k (4·T·n_h·d when n_kv < n_h; the repeated v is saved) and makes the additive
    fp32 causal mask (4·s²); for b > 1, q·kᵀ's reshape copies the scaled q (strided like q_proj's output: the copy
    is saved, the scaled q stays a kernel local, 4·T·n_h·d). Then at the masked scores, q·kᵀ and its sum with the
    mask (2·4·b·n_h·s², the softmax not made yet), or at the end the fp32 output, its bf16 cast and the
    probabilities' (4·T·n_h·d + 2·T·n_h·d + 2·b·n_h·s²).
    Source: torch 2.13 autocast (scaled_dot_product_attention runs in bf16), `_scaled_dot_product_attention_math`;
      transformers 5.23 apply_rotary_pos_emb; measured by the cpu probe at the recompute's peak op
      (tests/models/test_training_misses_12.py)."""
    b, s, t = shp.batch, shp.seq, shp.tokens
    n_h, n_kv, d = spec.num_heads, spec.kv_heads, spec.resolved_head_dim
    lowp = AUTOCAST_BYTES
    repeated = n_kv < n_h
    normed = 0 if "attention_in/input" in saved else FP32 * t * spec.hidden_size
    module = normed + FP32 * t * (n_h + n_kv) * d + lowp * t * _v_source_width(spec, shp)
    casts = lowp * t * (n_h + n_kv) * d + FP32 * t * (n_h + n_kv + (n_kv if repeated else 0)) * d
    # the scaled q (strided like q_proj's output) and its bmm copy; not seen for Phi-3's q, a slice of the fused
    # qkv output (measured at b = 2, not derived: the probe variant of tests/models/test_training_misses_12.py)
    copies_q = b > 1 and spec.family not in FUSED_QKV_FAMILIES
    q_copied = FP32 * t * n_h * d if copies_q else 0
    held = module + casts + (FP32 * t * n_h * d if repeated else 0) + FP32 * s * s + q_copied
    scores = FP32 * b * n_h * s * s
    masked, end = held + scores, held + (FP32 + lowp) * t * n_h * d + lowp * b * n_h * s * s
    formula = "4·T·h + 4·T·(n_h + n_kv)·d + 2·T·w_v + 2·T·(n_h + n_kv)·d + 4·T·(n_h + 2·n_kv)·d + 4·T·n_h·d + 4·s²"
    formula += " + 4·T·n_h·d [b > 1]"
    if masked > end:
        return masked, formula + " + 2·4·b·n_h·s² − the softmax (autocast, SDPA math's masked scores)"
    return end, formula + " + 4·T·n_h·d + 2·T·n_h·d + 2·b·n_h·s² (autocast, SDPA math's end)"


def _mla_kernel_locals(spec: ModelSpec, shp: TrainShapes, saved: Mapping[str, int]) -> tuple[int, str]:
    """MLA (DeepSeek-V2 §2.1.2) in SDPA's math kernel: bytes alive besides the saved tensors, at the largest of the
    masked scores, the kernel's end and its return.

    The attention module holds the normed input (p·T·h, unless a trained weight saves it); kv_a's output
    (p·T·(d_c + d_R), unless the fp32 kv_a_norm keeps it: a no-op .float()), kv_a_norm's output (p·T·d_c, unless
    kv_b trains and keeps it) and kv_b's (p·T·n_h·(d_nope + d_v), unless the saved fp32 v is a view of it); q
    (q_proj's or q_b_proj's output, p·T·n_h·d_qk), q_pe and k_pe after RoPE (p·T·(n_h + 1)·d_R), the
    concatenated query and the assembled key (2·p·T·n_h·d_qk). The kernel holds the fp32 casts of q and k when
    p ≠ 4 (2·4·T·n_h·d_qk) and of v (4·T·n_h·d_v: v, a slice of kv_b's output, casts to a strided tensor that
    probs·v's reshape copies for b > 1, the saved copy; in one row the cast itself is saved), and the causal mask
    as an additive fp32 s·s matrix (4·s²). Then:
    - masked scores: q·kᵀ and its sum with the mask (2·4·b·n_h·s²), before the softmax and the saved v copy
      exist (4·b·n_h·s² + 4·T·n_h·d_v of the ledger, for b > 1);
    - the end: the fp32 output (4·T·n_h·d_v) and, when p ≠ 4, its cast and the probabilities'
      (p·T·n_h·d_v + p·b·n_h·s²), the softmax and v saved;
    - returned (sets it in fp32): the kernel's locals are gone but for its output (p·T·n_h·d_v), and transformers
      makes the contiguous copy o_proj reads (p·T·n_h·d_v; o_proj's saved input when it trains).
    Source: transformers 5.23 models/deepseek_v2/modeling_deepseek_v2.py DeepseekV2Attention.forward, expand_kv,
      apply_rotary_emb; torch 2.13 `_scaled_dot_product_attention_math`; measured by the cpu probe at the peak op
      (tests/models/test_training_misses_12.py)."""
    assert spec.mla is not None
    b, s, p, t = shp.batch, shp.seq, shp.act_bytes, shp.tokens
    mla, n_h = spec.mla, spec.num_heads
    d_r, d_v, d_c = mla.qk_rope_head_dim, mla.v_head_dim, mla.kv_lora_rank
    d_qk = mla.qk_nope_head_dim + d_r
    normed = 0 if "attention_in/input" in saved else p * t * spec.hidden_size
    kv_a = 0 if "mla/kv_a_norm/rope_columns" in saved else p * t * (d_c + d_r)
    kv_normed = 0 if "mla/kv_b_proj_in/input" in saved else p * t * d_c
    v_is_kv_b_view = p == FP32 and b == 1  # attention_core's saved fp32 v: a view of kv_b's output in one row
    kv_b = 0 if v_is_kv_b_view else p * t * n_h * (mla.qk_nope_head_dim + d_v)
    module = normed + kv_a + kv_normed + kv_b + p * t * n_h * d_qk + p * t * (n_h + 1) * d_r + 2 * p * t * n_h * d_qk
    v_copied = b > 1  # probs·v saves a copy of v (else v itself, or its cast)
    v_bytes = FP32 * t * n_h * d_v
    casts = 2 * FP32 * t * n_h * d_qk + (v_bytes if v_copied else 0) if p != FP32 else 0
    held = module + casts + FP32 * s * s
    scores = FP32 * b * n_h * s * s
    masked = held + 2 * scores - scores - (v_bytes if v_copied else 0)
    end = held + v_bytes + (p * t * n_h * d_v + p * b * n_h * s * s if p != FP32 else 0)
    formula = (
        "p·T·h + p·T·(d_c + d_R) + p·T·d_c + p·T·n_h·(d_nope + d_v) + 3·p·T·n_h·d_qk + p·T·(n_h + 1)·d_R"
        " + 4·T·n_h·(2·d_qk + d_v) + 4·s²"
    )
    returned = module + 2 * p * t * n_h * d_v
    return max(
        (masked, formula + " + 2·4·b·n_h·s² − the softmax and v's copy (MLA, SDPA math's masked scores)"),
        (end, formula + " + 4·T·n_h·d_v + p·T·n_h·d_v + p·b·n_h·s² (MLA, SDPA math's end)"),
        (returned, "module locals + 2·p·T·n_h·d_v (MLA, SDPA math's output and its contiguous copy)"),
    )
