"""Decode context parallelism (vLLM DCP): which models and layouts it stripes, within vLLM's bounds.

DCP stripes by position a KV cache that tensor parallelism leaves whole on several GPUs of the TP group: an MLA
latent (one per GPU) from vLLM 0.11.0, and from 0.11.1 the KV heads of a GQA/MQA model that TP replicates because it
exceeds them (TP > n_kv: each head sits on TP / n_kv GPUs). A GPU then holds every DCP-th token of a sequence and the
pool DCP times the tokens.

Source: vllm/config/model.py @ v0.11.1 verify_with_parallel_config (GQA/MQA: TP > total KV heads, DCP ≤ TP // KV
  heads, query heads per KV head divisible by DCP), vllm/engine/arg_utils.py (TP % DCP == 0),
  vllm/v1/kv_cache_interface.py SlidingWindowSpec (no DCP with sliding-window layers); docs/serving/
  context_parallel_deployment.md ("the dcp size should lie in the range of [1, tp_size/H]")."""

from __future__ import annotations

from planner.model.spec import ModelSpec
from planner.serving.engines import EngineProfile

__all__ = ["dcp_problem", "full_gqa_dcp"]


def dcp_problem(spec: ModelSpec, tensor_parallel: int, dcp: int, profile: EngineProfile) -> str | None:
    """Why this model cannot run decode context parallelism `dcp` at `tensor_parallel` on the engine version of
    `profile` (a sentence naming the bound), or None where vLLM runs it. MLA: any DCP dividing TP (the spec's own
    validator checks that); GQA/MQA: the bounds of vllm/config/model.py."""
    if dcp == 1 or spec.mla is not None:
        return None
    if profile.decode_context_parallel_gqa is None:
        return (
            f"{profile.label} stripes MLA caches only; decode context parallelism of a GQA/MQA cache needs vLLM "
            "0.11.1 or later (vllm/v1/attention/backends/flash_attn.py _forward_with_dcp)"
        )
    n_kv, n_h = spec.kv_heads, spec.num_heads
    if tensor_parallel <= n_kv:
        return (
            f"decode context parallelism stripes KV heads that tensor parallelism replicates: tensor_parallel="
            f"{tensor_parallel} must exceed the model's {n_kv} KV heads (vllm/config/model.py), or TP already "
            "splits the cache without copies"
        )
    if dcp > tensor_parallel // n_kv:
        return (
            f"decode_context_parallel={dcp} exceeds tensor_parallel // KV heads = {tensor_parallel} // {n_kv} = "
            f"{tensor_parallel // n_kv}, the GPUs holding a copy of each KV head (vllm/config/model.py)"
        )
    if (n_h // n_kv) % dcp:
        return (
            f"the {n_h // n_kv} query heads per KV head must be divisible by decode_context_parallel={dcp} "
            "(vllm/config/model.py)"
        )
    if spec.sliding_window is not None:
        return "vLLM's decode context parallelism does not stripe sliding-window layers (vllm/v1/kv_cache_interface.py)"
    return None


def full_gqa_dcp(spec: ModelSpec, tensor_parallel: int, profile: EngineProfile) -> int:
    """The DCP that removes every copy of a GQA/MQA model's KV heads at this TP (TP // n_kv), or 1 where vLLM would
    not run it (see dcp_problem)."""
    if spec.mla is not None or spec.kv_heads <= 0 or tensor_parallel <= spec.kv_heads:
        return 1
    dcp = tensor_parallel // spec.kv_heads
    return dcp if dcp_problem(spec, tensor_parallel, dcp, profile) is None else 1
