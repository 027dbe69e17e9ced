"""The prefill attention moment of kernels that materialize the s² scores: SDPA's math fallback and eager.

A fused kernel (flash, memory-efficient) streams the scores through on-chip tiles, so a prefill layer peaks in its
FFN (planner.serving.memory). The math and eager kernels allocate B·n_h·s² scores, in fp32, which moves the peak to
the attention softmax once s is long enough. Only the transformers engines run them (ServingSpec refuses them for
vllm and sglang). Derived here from the code transformers 5 and torch run (`eager_attention_forward`,
`_scaled_dot_product_attention_math`) for one forward over B prompts of s tokens (T = B·s), and measured by the
probe grid (infer/*: live storages at the peak, GQA/MHA forced to math, eager, and MLA, which CPU serves with math).
"""

from __future__ import annotations

from math import ceil

from planner.explain import Term
from planner.model.kv_cache import local_kv_heads
from planner.model.precision import dtype_bytes
from planner.model.spec import ModelSpec
from planner.serving.spec import ServingSpec
from planner.training.activations import attention_head_dims
from planner.training.spec import AttentionImpl

__all__ = ["attention_moment_terms", "eager_mask_term"]

FP32_BYTES = 4
SCORE_BUFFERS_FP32 = 2  # at the softmax, fp32: math's scores and probabilities; eager's upcast scores and probabilities
POST_ATTENTION_RESIDUAL = 1  # of the engine's hidden copies at the MLP, the residual h + attention(h) is not yet made
SOURCE = "derived here from transformers 5 / torch attention code; measured by the probe grid (models/, infer/*)"


def _kernel_inputs_elems(spec: ModelSpec, tokens: int, tp: int) -> int:
    """Per-head tensors a transformers layer holds at its attention kernel, besides the KV cache.

    MHA/GQA: q after RoPE, T·n_h·d_h (k and v are the layer's cache entries).
    MLA (latent cache): q, the q projection it was concatenated from and the rotated rope part, the expanded k, the
    kv_b output holding k_nope and v: T·n_h·(3·d_qk + d_R + d_nope + d_v); and the kv_a output, T·(d_c + d_R).
    """
    n_h = ceil(spec.num_heads / tp)
    if spec.mla is None:
        return tokens * n_h * spec.resolved_head_dim
    m = spec.mla
    per_head = 3 * m.qk_head_dim + m.qk_rope_head_dim + m.qk_nope_head_dim + m.v_head_dim
    return tokens * (n_h * per_head + m.kv_lora_rank + m.qk_rope_head_dim)


def _score_transients(spec: ModelSpec, serving: ServingSpec) -> tuple[int, str]:
    """Bytes the kernel allocates for one layer up to its softmax, and the formula.

    SDPA math: fp32 copies of q and of q·√scale (2·4·T·n_h·d_q), fp32 copies of k and v (4·T·n_kv·(d_q + d_v)),
    k and v repeated to n_h heads when n_kv < n_h (enable_gqa: 4·T·n_h·(d_q + d_v)), the fp32 causal mask (4·s²)
    and the fp32 scores and probabilities (2·4·B·n_h·s²).
    Eager: the scores in b with the mask added (b·B·n_h·s²), their fp32 copy and the fp32 probabilities
    (2·4·B·n_h·s²), and repeat_kv's k and v when n_kv < n_h (b·T·n_h·(d_q + d_v)).
    """
    tp, b = serving.tensor_parallel, dtype_bytes(serving.activation_dtype)
    batch, s = serving.concurrency, serving.prompt_tokens
    tokens = batch * s
    d_q, d_v, n_kv = attention_head_dims(spec)
    n_h = ceil(spec.num_heads / tp)
    n_kv = n_h if spec.mla is not None else local_kv_heads(n_kv, tp)
    scores = SCORE_BUFFERS_FP32 * FP32_BYTES * batch * n_h * s * s
    repeated = tokens * n_h * (d_q + d_v) if n_kv < n_h else 0
    if serving.attention is AttentionImpl.SDPA_MATH:
        copies = FP32_BYTES * (2 * tokens * n_h * d_q + tokens * n_kv * (d_q + d_v) + repeated)
        mask = FP32_BYTES * s * s
        gqa = " + 4·T·n_h·(d_q+d_v)" if repeated else ""
        return scores + copies + mask, f"2·4·B·n_h·s² + 4·(2·T·n_h·d_q + T·n_kv·(d_q+d_v){gqa}) + 4·s²"
    gqa = " + b·T·n_h·(d_q+d_v)" if repeated else ""
    return scores + b * batch * n_h * s * s + b * repeated, f"2·4·B·n_h·s² + b·B·n_h·s²{gqa}"


def attention_moment_terms(spec: ModelSpec, serving: ServingSpec) -> tuple[Term, ...]:
    """The largest prefill forward at the attention softmax of an s²-materializing kernel; () for fused SDPA.

    Formula: ((c − 1)·T·h + q, k, v at the kernel)·b + the kernel's transients (`_score_transients`); c − 1: the
      engine's hidden copies at the MLP less the post-attention residual (transformers: embedding output, layer
      input, normed input).
    Source: derived here; measured by the probe grid (infer/*: live storages at the peak, CPU, bf16).
    Assumes: one forward over B single-sequence prompts without padding (causal, no explicit mask for SDPA).
    """
    if serving.attention is AttentionImpl.SDPA:
        return ()
    tp, b = serving.tensor_parallel, dtype_bytes(serving.activation_dtype)
    tokens = serving.prefill_tokens_per_forward
    hidden = (serving.kernels.hidden_copies - POST_ATTENTION_RESIDUAL) * tokens * spec.hidden_size
    inputs = _kernel_inputs_elems(spec, tokens, tp)
    transients, formula = _score_transients(spec, serving)
    mla = "T·n_h·(3·d_qk + d_R + d_nope + d_v) + T·(d_c + d_R)"
    return (
        Term(
            name="activations/prefill_peak",
            bytes=(hidden + inputs) * b,
            formula=f"((c−1)·T·h + {mla if spec.mla else 'T·n_h·d_h'})·b",
            detail=f"T={tokens} tokens (prompts × concurrency), b={b} B; {serving.attention} attention dominates: "
            "hidden copies and the q, k, v it reads (MHA/GQA: k, v are the KV cache)",
            source=SOURCE,
        ),
        Term(
            name="activations/attention_scores",
            bytes=transients,
            formula=formula,
            detail=f"{serving.attention}: B={serving.concurrency} prompts of s={serving.prompt_tokens} tokens, "
            f"{ceil(spec.num_heads / tp)} heads, scores up to the softmax",
            source=SOURCE,
        ),
    )


def eager_mask_term(serving: ServingSpec) -> Term | None:
    """Eager attention reads an explicit 4-D causal mask, b·B·s², built once per forward; SDPA runs causal."""
    if serving.attention is not AttentionImpl.EAGER:
        return None
    b, s = dtype_bytes(serving.activation_dtype), serving.prompt_tokens
    return Term(
        name="activations/attention_mask",
        bytes=b * serving.concurrency * s * s,
        formula="b·B·s²",
        detail="transformers' additive causal mask for eager attention, alive through the forward",
        source=SOURCE,
    )
