"""Capacity on one replica: the KV budget left after weights and activations, blocks, sequences, context."""

from __future__ import annotations

from math import floor

from pydantic import Field

from planner._base import FrozenSpec
from planner.model.kv_cache import KVLayout, kv_bytes_per_sequence, kv_split
from planner.model.spec import ModelSpec

__all__ = ["KVCapacity", "kv_capacity", "max_context_tokens"]

MAX_SEARCH_TOKENS = 1 << 31  # upper end of the context search; far beyond any model


class KVCapacity(FrozenSpec):
    """What the KV budget of one GPU holds."""

    budget_bytes: int = Field(
        description="The engine's memory budget on one GPU (vLLM: gpu_memory_utilization × "
        "driver-reported memory; SGLang: mem_fraction_static × free memory before loading)."
    )
    kv_cache_capacity_bytes: int = Field(
        description="The KV pool: budget minus weights, activations and overhead "
        "(≥ 0; TensorRT-LLM: free_gpu_memory_fraction of what is left)."
    )
    kv_bytes_per_token: int = Field(description="All layers, one sequence, one GPU (inside every window).")
    kv_block_bytes: int = Field(description="block_size × kv_bytes_per_token.")
    kv_blocks: int = Field(description="⌊capacity / block bytes⌋, as vLLM reports num_gpu_blocks.")
    kv_bytes_per_sequence: int = Field(description="At the request's context (prompt + output), pages rounded up.")
    max_concurrent_sequences: int = Field(
        description="⌊capacity / bytes per sequence⌋ at the request's context; with data-parallel attention, D × that "
        "(each of the D attention ranks caches its own sequences in its own pool)."
    )
    max_context_tokens: int = Field(
        description="Longest context each of `concurrency` sequences can hold, capped at the model's max_context."
    )
    memory_limited_context_tokens: int | None = Field(
        description="The same without the model's cap; null when windows bound the cache for any length."
    )
    formula: str = "capacity = budget − weights − activations − overhead; max seqs = ⌊capacity / kv(s)⌋"
    source: str = "vLLM PagedAttention (Kwon et al. 2023 §4.2); the engine's KV sizing (planner.serving.engine_memory)"


def max_context_tokens(
    spec: ModelSpec, per_seq_budget: int, b_kv: int, layout: KVLayout, tp: int, block: int
) -> int | None:
    """Largest s with kv_bytes_per_sequence(s) ≤ per_seq_budget; None when no length exceeds it.

    Formula: no windows: ⌊budget / (bytes_per_token·bs)⌋·bs; with windows: bisection (bytes grow with s).
    """

    def fits(tokens: int) -> bool:
        return kv_bytes_per_sequence(spec, tokens, b_kv, layout, tp, block) <= per_seq_budget

    if not fits(1):
        return 0
    split = kv_split(spec, b_kv, layout, tp)
    if split.sliding == 0:  # closed form: whole pages of the full-attention layers
        return floor(per_seq_budget / (split.full * block)) * block
    if fits(MAX_SEARCH_TOKENS):
        return None
    lo, hi = 1, MAX_SEARCH_TOKENS  # fits(lo), not fits(hi); bytes grow monotonically with s
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def kv_capacity(
    spec: ModelSpec,
    *,
    budget_bytes: int,
    capacity_bytes: int,
    context: int,
    concurrency: int,
    kv_dtype_bytes: int,
    mla_layout: KVLayout,
    tensor_parallel: int,
    block_size: int,
    data_parallel: int = 1,
    context_shards: int = 1,
) -> KVCapacity:
    """KV blocks, concurrent sequences at `context`, and context at `concurrency`, for one GPU's budget.

    `tensor_parallel` is the GPUs that split one sequence's KV heads (the attention rank's under data-parallel
    attention); `data_parallel` attention ranks each hold ⌈concurrency / D⌉ sequences in a pool of their own, so the
    replica holds D × ⌊capacity / kv(s)⌋ sequences (SGLang dp_attention, TensorRT-LLM enable_attention_dp, vLLM
    --data-parallel-size: one KV pool per rank). With `context_shards` GPUs striping each sequence's cache by position
    (vLLM decode context parallelism) a GPU holds ⌈s / shards⌉ of a sequence's s tokens, and the longest context is
    shards times what one GPU's share allows."""
    capacity = max(0, capacity_bytes)
    context = -(-context // context_shards)  # the tokens of a sequence one GPU holds
    split = kv_split(spec, kv_dtype_bytes, mla_layout, tensor_parallel)
    per_token = split.full + split.sliding
    per_seq = kv_bytes_per_sequence(spec, context, kv_dtype_bytes, mla_layout, tensor_parallel, block_size)
    rank_seqs = -(-concurrency // data_parallel)
    limited = max_context_tokens(spec, capacity // rank_seqs, kv_dtype_bytes, mla_layout, tensor_parallel, block_size)
    if limited is not None:
        limited *= context_shards
    return KVCapacity(
        budget_bytes=budget_bytes,
        kv_cache_capacity_bytes=capacity,
        kv_bytes_per_token=per_token,
        kv_block_bytes=per_token * block_size,
        kv_blocks=capacity // (per_token * block_size),
        kv_bytes_per_sequence=per_seq,
        max_concurrent_sequences=data_parallel * (capacity // per_seq),
        max_context_tokens=spec.max_context if limited is None else min(limited, spec.max_context),
        memory_limited_context_tokens=limited,
    )
