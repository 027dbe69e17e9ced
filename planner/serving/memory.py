"""Serving memory per GPU: weights in their storage format, prefill activations, logits, CUDA overhead."""

from __future__ import annotations

from functools import lru_cache
from math import ceil

from planner.explain import Term
from planner.model.kv_cache import kv_split, local_kv_heads
from planner.model.params import Linear, layer_kinds
from planner.model.precision import DType, WeightFormat, dtype_bytes, format_bits_note, linear_weight_bytes
from planner.model.spec import ModelSpec
from planner.serving.prefill_attention import attention_moment_terms, eager_mask_term
from planner.serving.spec import ServingSpec
from planner.training.activations import FUSED_QKV_FAMILIES, moe_combine_bytes

__all__ = ["activation_terms", "fused_forward_bytes", "overhead_terms", "weight_bytes", "weight_terms"]

FP32_BYTES = 4  # logits are upcast to fp32 before sampling (vLLM Sampler, transformers generate)
GATE_UP = 2  # gate and up projections in one fused GEMM output
ACT_OUT = 1  # act(gate) * up
FC_IN = 1  # a plain (GPT-2-style) MLP's fc_in output, then act(fc_in)


def _local_shape(lin: Linear, spec: ModelSpec, tp: int) -> tuple[int, int]:
    """(d_in, d_out) one GPU holds: column split d_out, row split d_in, KV heads n_kv/TP or replicated."""
    if tp == 1 or lin.parallel == "replicated":
        return lin.d_in, lin.d_out
    if lin.parallel == "row":
        return ceil(lin.d_in / tp), lin.d_out
    if lin.parallel == "kv":
        return lin.d_in, local_kv_heads(spec.kv_heads, tp) * spec.resolved_head_dim
    return lin.d_in, ceil(lin.d_out / tp)


@lru_cache(maxsize=8192)
def _weight_bytes(
    spec: ModelSpec, fmt: WeightFormat, expert_fmt: WeightFormat, group: int, emb: DType, tp: int, dp: int = 1
) -> tuple[int, int, int, int, int, int]:
    """(quantized linears, routed experts, 16-bit linears, vectors, embedding, lm_head) bytes on one GPU.

    With data-parallel attention (dp > 1) everything but the routed experts is split over the attention rank's
    tp/dp GPUs only (each rank holds its attention, dense MLPs, shared experts and vocabulary whole), while the
    routed experts stay split over all tp GPUs (EP × expert TP): planner.serving.spec.attention_data_parallel.
    """
    b_emb = dtype_bytes(emb)
    attn_tp = tp // dp
    quantized = experts = plain = vectors = 0
    for layout, n_layers in layer_kinds(spec):
        layer_q = layer_e = layer_p = layer_v = 0
        for lin in layout.linears:
            is_expert = lin.name.startswith("experts.")
            d_in, d_out = _local_shape(lin, spec, tp if is_expert else attn_tp)
            if is_expert:
                layer_e += lin.count * linear_weight_bytes(d_in, d_out, expert_fmt, group)
            elif lin.quantizable:
                layer_q += lin.count * linear_weight_bytes(d_in, d_out, fmt, group)
            else:
                layer_p += lin.count * d_in * d_out * b_emb
            if lin.bias:
                layer_v += lin.count * (lin.d_out if lin.parallel == "row" else d_out) * b_emb
        quantized += n_layers * layer_q
        experts += n_layers * layer_e
        plain += n_layers * layer_p
        vectors += n_layers * (layer_v + layout.vector_params * b_emb)
    vectors += spec.norm_params * b_emb  # final norm (a LayerNorm with bias: 2·h)
    embedding = ceil(spec.vocab_size / attn_tp) * spec.hidden_size * b_emb
    lm_head = 0 if spec.tie_embeddings else embedding
    if spec.learned_positions:  # GPT-2 wpe, max_position × h, replicated
        embedding += spec.max_context * spec.hidden_size * b_emb
    return quantized, experts, plain, vectors, embedding, lm_head


def weight_bytes(spec: ModelSpec, serving: ServingSpec) -> int:
    """All weight bytes on one GPU (the sum of weight_terms)."""
    parts = _weight_bytes(
        spec,
        serving.weight_format,
        serving.resolved_expert_format,
        serving.quant_group_size,
        serving.embedding_dtype,
        serving.tensor_parallel,
        serving.attention_data_parallel,
    )
    return sum(parts)


def weight_terms(spec: ModelSpec, serving: ServingSpec) -> tuple[Term, ...]:
    """Weights on one GPU, by storage class.

    Source: linear storage per format in planner.model.precision.linear_weight_bytes; tensor-parallel split of
      column/row-parallel linears and vocab-parallel embeddings after Megatron-LM (Shoeybi et al. 2019 §3).
    """
    return _weight_terms(
        spec,
        serving.weight_format,
        serving.resolved_expert_format,
        serving.quant_group_size,
        serving.embedding_dtype,
        serving.tensor_parallel,
        serving.attention_data_parallel,
    )


@lru_cache(maxsize=4096)  # a pure function of the spec and the storage settings; sweeps revisit them
def _weight_terms(
    spec: ModelSpec, fmt: WeightFormat, expert_fmt: WeightFormat, group: int, emb: DType, tp: int, dp: int = 1
) -> tuple[Term, ...]:
    q, experts, plain, vectors, embedding, lm_head = _weight_bytes(spec, fmt, expert_fmt, group, emb, tp, dp)
    expert_split = f" ÷ TP={tp}" if tp > 1 else ""
    attn_tp = tp // dp
    split = f" ÷ TP={tp}" if tp > 1 else ""
    if dp > 1:  # data-parallel attention: each rank holds the non-expert weights whole over its tp/dp GPUs
        split = f" ÷ attention TP={attn_tp} (TP {tp} / attention DP {dp}: each DP rank holds them whole)"
    terms = [
        Term(
            name="weights/linear",
            bytes=q,
            formula="Σ_layers Σ_linears storage(d_in, d_out, format)",
            detail=f"decoder linears in {format_bits_note(fmt, group)}{split}",
            source="QLoRA §3, GPTQ, AWQ storage layouts (see planner.model.precision); Megatron-LM §3 for TP",
        ),
        Term(
            name="weights/embedding",
            bytes=embedding,
            formula="⌈V/TP⌉·h·b_emb" if dp == 1 else "⌈V/(TP/DP)⌉·h·b_emb",
            detail=f"⌈{spec.vocab_size}/{attn_tp}⌉·{spec.hidden_size}·{dtype_bytes(emb)} B ({emb}, never quantized)",
            source="vocab-parallel embedding (Megatron-LM §3)"
            + ("; split over the attention rank's GPUs under attention DP" if dp > 1 else ""),
        ),
    ]
    if experts:
        terms.insert(
            1,
            Term(
                name="weights/experts",
                bytes=experts,
                formula="Σ_moe layers E·3·storage(h, f_e, expert format)",
                detail=f"routed experts in {format_bits_note(expert_fmt, group)}{expert_split}",
                source="expert stacks of the MoE layers; storage as planner.model.precision.linear_weight_bytes",
            ),
        )
    if lm_head:
        terms.append(
            Term(
                name="weights/lm_head",
                bytes=lm_head,
                formula="⌈V/TP⌉·h·b_emb",
                detail=f"untied output projection in {emb}",
                source="Megatron-LM §3",
            )
        )
    if plain:
        terms.append(
            Term(
                name="weights/unquantized_linears",
                bytes=plain,
                formula="Σ 16-bit linears·b_emb",
                detail="MoE routers and shared-expert gates"
                + (
                    ", and the attention and dense layers of an expert-only checkpoint"
                    if spec.quantize_experts_only
                    else ""
                )
                + f", kept in {emb}",
                source="routers are not quantized in GPTQ/AWQ/FP8 checkpoints; expert-only checkpoints (gpt-oss MXFP4, "
                "Kimi-K2.5 int4) list attention in modules_to_not_convert / ignore",
            )
        )
    terms.append(
        Term(
            name="weights/norms_and_biases",
            bytes=vectors,
            formula="(L·norms·h + attention norms + h + biases)·b_emb",
            detail=f"RMSNorm weights and biases in {emb}",
            source="derived here from module shapes",
        )
    )
    return tuple(terms)


def _attention_activation_elems(spec: ModelSpec, tokens: int, tp: int) -> int:
    """q, k, v and attention output elements of one layer for `tokens` tokens on one GPU (flash/SDPA: no s²)."""
    n_h = ceil(spec.num_heads / tp)
    if spec.mla is not None:  # engines expand MLA to per-head K/V for prefill
        return tokens * n_h * (2 * spec.mla.qk_head_dim + 2 * spec.mla.v_head_dim)
    n_kv = local_kv_heads(spec.kv_heads, tp)
    return tokens * (2 * n_h + 2 * n_kv) * spec.resolved_head_dim


def _mlp_activation_elems(spec: ModelSpec, tokens: int, tp: int, split_gate_up: bool = False, dp: int = 1) -> int:
    """Largest FFN intermediate of one layer: gated MLP (2f + f), plain MLP (f + f), or fused-MoE caches
    T·k·(3f_e + h).

    `split_gate_up`: transformers splits a fused gate_up_proj output (Phi-3) into views, so the 2f tensor stays
    alive with the activation and the product: 4f.
    `dp` > 1 (data-parallel attention): the routed experts run over the dp ranks' gathered dp·T tokens at TP, the
    dense MLP and shared experts over the rank's own T tokens at TP/dp.
    """
    attn_tp = tp // dp
    fc_in = GATE_UP if spec.mlp_kind == "gated" else FC_IN
    dense = tokens * (fc_in + ACT_OUT + (ACT_OUT if split_gate_up else 0)) * ceil(spec.ffn_dim / attn_tp)
    if spec.moe is None:
        return dense
    moe = spec.moe
    routed_rows = tokens * dp * moe.experts_per_token
    routed = routed_rows * ((GATE_UP + ACT_OUT) * ceil(moe.expert_ffn_dim / tp) + spec.hidden_size)
    shared = tokens * (GATE_UP + ACT_OUT) * ceil(moe.shared_expert_ffn_dim / attn_tp)
    return max(dense if moe.first_dense_layers or moe.dense_layer_ids or moe.layer_step > 1 else 0, routed, shared)


def _grouped_mm_moe_bytes(spec: ModelSpec, tokens: int, tp: int, b: int) -> int:
    """A transformers 5 MoE layer (grouped-matmul experts) at its two moments, k·T rows in expert order.

    At the activation: the gathered tokens, the fused gate/up output (its gate and up halves are views), the
    activation and the product: b·k·T·(h + 4·f_e). At the routing weights: the gathered tokens and the expert
    outputs in b, the weighted outputs and their copy back in token order in c (fp32; Qwen-MoE b):
    (2·b + 2·c)·k·T·h. A shared expert adds its waiting output (Qwen2-MoE), or a moment of its own (DeepSeek).
    Source: derived here from `transformers.integrations.moe.grouped_mm_experts_forward`; measured by the probe
    grid (infer/gqa-moe, live storages at the peak).
    """
    assert spec.moe is not None
    rows, h = tokens * spec.moe.experts_per_token, spec.hidden_size
    f_e, f_s = ceil(spec.moe.expert_ffn_dim / tp), ceil(spec.moe.shared_expert_ffn_dim / tp)
    # Qwen2-MoE runs its shared expert first (its output waits, b·T·h); DeepSeek runs it after the routed
    # experts, whose output waits while it runs: b·T·(h + 3·f_s)
    shared_first = b * tokens * h if f_s and spec.family == "qwen2_moe" else 0
    activation = b * rows * (h + GROUPED_MM_F_TENSORS * f_e) + shared_first
    routing = (2 * b + 2 * moe_combine_bytes(spec, b)) * rows * h + shared_first
    shared_after = b * tokens * (h + (GATE_UP + ACT_OUT) * f_s) if f_s and not shared_first else 0
    return max(activation, routing, shared_after)


GROUPED_MM_F_TENSORS = 4  # f_e-wide tensors alive at once: gate and up (one 2·f_e tensor), activation, product


def _window_prefill_terms(spec: ModelSpec, serving: ServingSpec) -> tuple[Term, ...]:
    """transformers (no chunked prefill): while a prompt longer than the window runs, a sliding-window layer's
    cache holds all of it (trimmed to the window afterwards), and the forward keeps a boolean s×s window mask.

    Formula: B·(s − w)·(window-layer KV bytes per token) + s².
    Source: derived here from transformers 5's DynamicSlidingWindowLayer and sliding masks; measured by the
      probe grid (Mistral with a 64-token window, tests/models/test_families.py).
    """
    window, s, batch = spec.sliding_window, serving.prompt_tokens, serving.concurrency
    if serving.kernels.chunked_prefill or window is None or s <= window:
        return ()
    b_kv = dtype_bytes(serving.kv_cache_dtype)
    per_token = kv_split(spec, b_kv, serving.resolved_mla_layout, serving.tensor_parallel).sliding
    return (
        Term(
            name="activations/window_prefill_kv",
            bytes=batch * (s - window) * per_token + s * s,
            formula="B·(s − w)·KV_window/token + s²",
            detail=f"{batch} prompts of {s} tokens over a {window}-token window; boolean window mask",
            source="derived here from transformers 5 sliding-window caches; measured by the probes",
        ),
    )


def fused_forward_bytes(spec: ModelSpec, serving: ServingSpec, tokens: int) -> int:
    """Peak bytes of one forward of `tokens` tokens in a fused-kernel engine (vLLM, SGLang, TensorRT-LLM).

    Formula: 2·T·h·b (residual and normed input) + max(T·(2n_h + 2n_kv)·d_h, T·3f or fused-MoE T·k·(3f_e + h))·b.
    Source: derived here; inference keeps one layer's intermediates alive (as in activation_terms).
    """
    tp, b = serving.tensor_parallel, dtype_bytes(serving.activation_dtype)
    dp, attn_tp = serving.attention_data_parallel, serving.attention_tensor_parallel
    residual = serving.kernels.hidden_copies * tokens * spec.hidden_size + _gathered_elems(spec, tokens, dp)
    attn, mlp = _attention_activation_elems(spec, tokens, attn_tp), _mlp_activation_elems(spec, tokens, tp, dp=dp)
    return (residual + max(attn, mlp)) * b


def _gathered_elems(spec: ModelSpec, tokens: int, dp: int) -> int:
    """Data-parallel attention: the buffer of every rank's hidden states the MoE runs on, dp·T·h (0 without DP).
    Source: sglang/srt/layers/dp_attention.py (global_tokens buffer of dp_gather), tensorrt_llm/_torch/modules/
      fused_moe (allgather of x before the experts)."""
    return dp * tokens * spec.hidden_size if dp > 1 else 0


def activation_terms(spec: ModelSpec, serving: ServingSpec) -> tuple[Term, ...]:
    """Transient activations of the largest prefill forward, and the logits it produces.

    Formula: c·T·h·b (c = the engine's live hidden copies: 2 fused, 4 transformers) + max(attention q,k,v,o,
      FFN intermediates)·b, T = token budget; MoE layers as a fused kernel caches them, or as transformers 5's
      grouped-matmul experts hold them (`_grouped_mm_moe_bytes`); with an s²-materializing kernel (SDPA math,
      eager) the larger of that and the moment at its softmax (planner.serving.prefill_attention), plus eager's mask;
      logits: rows·V·(b + 4) with rows = T (all positions) or B (last position only).
    Source: derived here; inference keeps no tensors for backward, so only one layer's intermediates are
      alive at once (vLLM profiles the same peak with a dummy forward of max_num_batched_tokens tokens).
    Assumes: fused gate/up GEMM.
    """
    tp, b = serving.tensor_parallel, dtype_bytes(serving.activation_dtype)
    dp, attn_tp = serving.attention_data_parallel, serving.attention_tensor_parallel
    tokens = serving.prefill_tokens_per_forward
    residual = serving.kernels.hidden_copies * tokens * spec.hidden_size + _gathered_elems(spec, tokens, dp)
    grouped = spec.moe is not None and serving.kernels.grouped_mm_experts
    split = serving.kernels.grouped_mm_experts and spec.family in FUSED_QKV_FAMILIES  # transformers' own modules
    attn = _attention_activation_elems(spec, tokens, attn_tp)
    mlp = _mlp_activation_elems(spec, tokens, tp, split, dp)
    mlp_bytes = max(mlp * b, _grouped_mm_moe_bytes(spec, tokens, tp, b) if grouped else 0)
    all_positions = serving.resolved_logits_all_positions
    rows = tokens if all_positions else serving.concurrency
    moe = "max(b·k·T·(h+4f_e), (2b+2c)·k·T·h)" if grouped else "T·k·(3f_e+h)·b"
    fused = Term(
        name="activations/prefill_peak",
        bytes=residual * b + max(attn * b, mlp_bytes),
        formula=f"c·T·h·b + max(T·(2n_h+2n_kv)·d_h·b, T·3f·b or {moe})",
        detail=f"T={tokens} tokens per forward ({serving.engine} "
        f"{'chunked-prefill budget' if serving.kernels.chunked_prefill else 'prompts × concurrency'}), b={b} B, "
        f"{'FFN' if mlp_bytes >= attn * b else 'attention'} intermediates dominate",
        source="derived here from the tensors one inference layer holds at once",
    )
    softmax = attention_moment_terms(spec, serving)
    peak = softmax if sum(t.bytes for t in softmax) > fused.bytes else (fused,)
    mask = eager_mask_term(serving)
    return (
        *peak,
        *([mask] if mask else []),
        *_window_prefill_terms(spec, serving),
        Term(
            name="activations/logits",
            bytes=rows * spec.vocab_size * (b + FP32_BYTES),
            formula="rows·V·(b + 4)",
            detail=f"{rows} rows ({'every prompt position' if all_positions else 'last position per sequence'})"
            f" × V={spec.vocab_size} in {serving.activation_dtype} plus the fp32 upcast",
            source="derived here: logits are upcast to fp32 before softmax/sampling",
        ),
    )


def overhead_terms(serving: ServingSpec) -> tuple[Term, ...]:
    """Memory outside the tensors: cuBLAS workspace (inside the allocator) and CUDA context (outside it)."""
    return (
        Term(
            name="overhead/cublas_workspace",
            bytes=serving.cublas_workspace_bytes,
            formula="CUBLAS_WORKSPACE_CONFIG size",
            detail=f"{serving.cublas_workspace_bytes} B",
            source="PyTorch CUDA semantics, cuBLAS workspaces (default :4096:8)",
        ),
        Term(
            name="overhead/cuda_context",
            bytes=serving.cuda_context_bytes,
            formula="driver context + loaded kernels + NCCL buffers",
            detail="not counted by torch.cuda.max_memory_allocated; visible in nvidia-smi",
            source="assumption (input cuda_context_bytes); PyTorch CUDA semantics, memory management",
        ),
    )
