"""KV cache sizes: bytes per token and per sequence, for MHA/MQA/GQA, MLA (latent or expanded), windows, pages."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from math import ceil

from planner.errors import FieldProblem, SpecError
from planner.model.spec import ModelSpec

__all__ = [
    "KVLayout",
    "KVSplit",
    "check_tensor_parallel",
    "kv_bytes_per_sequence",
    "kv_bytes_per_token",
    "kv_split",
    "local_kv_heads",
    "window_tokens",
]

K_AND_V = 2  # a key and a value vector per KV head


class KVLayout(StrEnum):
    """How an engine stores MLA's cache (MHA/MQA/GQA have one layout)."""

    MLA_LATENT = "mla_latent"  # c_KV and k_R per token: vLLM, SGLang, FlashMLA, transformers 5
    MLA_EXPANDED = "mla_expanded"  # per-head K (d_nope + d_rope) and V (d_v): transformers 4.x, naive code


def check_tensor_parallel(spec: ModelSpec, tensor_parallel: int) -> None:
    """Raise SpecError unless TP splits the query heads evenly and divides (or is a multiple of) the KV heads.

    Source: Megatron-LM §3 and vLLM's checks (num_attention_heads % tensor_parallel_size == 0).
    """
    if spec.num_heads % tensor_parallel:
        raise SpecError(
            [
                FieldProblem(
                    ("serving", "tensor_parallel"),
                    f"tensor_parallel={tensor_parallel} must divide the model's {spec.num_heads} attention heads",
                )
            ]
        )
    if spec.mla is None:
        local_kv_heads(spec.kv_heads, tensor_parallel)


def local_kv_heads(n_kv: int, tensor_parallel: int) -> int:
    """KV heads one GPU holds under tensor parallelism: n_kv / TP, or 1 (replicated) when TP > n_kv.

    Source: Megatron-LM (Shoeybi et al. 2019, §3) splits heads across ranks; vLLM replicates KV heads
      when TP exceeds them (vllm.model_executor.layers.linear.QKVParallelLinear).
    """
    if n_kv % tensor_parallel == 0:
        return n_kv // tensor_parallel
    if tensor_parallel % n_kv == 0:
        return 1
    raise SpecError(
        [
            FieldProblem(
                ("serving", "tensor_parallel"),
                f"tensor_parallel={tensor_parallel} must divide the {n_kv} KV heads or be a multiple of them",
            )
        ]
    )


def _layer_kv_bytes_per_token(spec: ModelSpec, b_kv: int, layout: KVLayout, tp: int) -> int:
    """One layer, one token, one GPU.

    MHA/MQA/GQA: 2·n_kv·d_h·b_kv (MQA n_kv = 1).
    MLA latent:  (d_c + d_R)·b_kv, replicated on every TP rank (DeepSeek-V2 §2.1.2, Table 1: (d_c + d_h^R)·l).
    MLA expanded: n_h·(d_nope + d_R + d_v)·b_kv (per-head K and V materialized).
    """
    mla = spec.mla
    if mla is None:
        return K_AND_V * local_kv_heads(spec.kv_heads, tp) * spec.resolved_head_dim * b_kv
    if layout is KVLayout.MLA_LATENT:
        return (mla.kv_lora_rank + mla.qk_rope_head_dim) * b_kv
    return local_kv_heads(spec.num_heads, tp) * (mla.qk_head_dim + mla.v_head_dim) * b_kv


class KVSplit(tuple[int, int]):
    """(bytes per token over full-attention layers, bytes per token over sliding-window layers)."""

    @property
    def full(self) -> int:
        return self[0]

    @property
    def sliding(self) -> int:
        return self[1]


@lru_cache(maxsize=8192)
def kv_split(spec: ModelSpec, kv_dtype_bytes: int, mla_layout: KVLayout, tensor_parallel: int = 1) -> KVSplit:
    """Per-token KV bytes summed over full-attention layers and over sliding-window layers."""
    per_layer = _layer_kv_bytes_per_token(spec, kv_dtype_bytes, mla_layout, tensor_parallel)
    n_sliding = spec.sliding_layer_count
    return KVSplit((per_layer * (spec.num_layers - n_sliding), per_layer * n_sliding))


def kv_bytes_per_token(
    spec: ModelSpec, kv_dtype_bytes: int, mla_layout: KVLayout = KVLayout.MLA_LATENT, tensor_parallel: int = 1
) -> int:
    """Bytes one token adds to one sequence's cache on one GPU, all layers, while inside every window.

    Formula: Σ_layers per-layer bytes (see _layer_kv_bytes_per_token); GQA e.g. 2·L·n_kv·d_h·b_kv.
    Source: Pope et al. 2022, "Efficiently Scaling Transformer Inference" §3.1 (KV cache size).
    """
    split = kv_split(spec, kv_dtype_bytes, mla_layout, tensor_parallel)
    return split.full + split.sliding


def window_tokens(context: int, window: int | None, block_size: int) -> int:
    """Tokens a sliding-window layer keeps for one sequence: min(s, w), whole pages when paged.

    Assumes: a paged window spans ⌈w/bs⌉ + 1 pages once the sequence is longer than the window; w tokens is the
      peak during a decode step (transformers 5 keeps w − 1 between steps and concatenates the new token).
    """
    pages = ceil(context / block_size)
    if window is None:
        return pages * block_size
    if block_size == 1:
        return min(context, window)
    return min(pages, ceil(window / block_size) + 1) * block_size


def kv_bytes_per_sequence(
    spec: ModelSpec,
    context: int,
    kv_dtype_bytes: int,
    mla_layout: KVLayout = KVLayout.MLA_LATENT,
    tensor_parallel: int = 1,
    block_size: int = 1,
) -> int:
    """KV bytes of one sequence of `context` tokens on one GPU.

    Formula: full-layer bytes/token · ⌈s/bs⌉·bs + window-layer bytes/token · min(s, w) (paged: whole pages).
    Source: vLLM PagedAttention (Kwon et al. 2023, §4.2): the cache is allocated in blocks of bs tokens.
    """
    split = kv_split(spec, kv_dtype_bytes, mla_layout, tensor_parallel)
    full_tokens = ceil(context / block_size) * block_size
    return split.full * full_tokens + split.sliding * window_tokens(context, spec.sliding_window, block_size)
