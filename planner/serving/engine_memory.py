"""Serving memory as each engine version allocates it: the budget, what it subtracts, and the KV pool that is left.

- vLLM V1 (planner/catalog/engines.json, vllm-*): requested = gpu_memory_utilization × the device memory the driver
  reports; non-KV = weights + the torch peak of the profile run (a dummy forward of max_num_batched_tokens tokens,
  then the sampler warm-up over min(max_num_seqs, max_num_batched_tokens) rows with fp32 logits) + non-torch growth
  (+ the CUDA-graph estimate from v0.20); KV pool = requested − non-KV, in blocks of block_size tokens over all
  layers. Source: vllm/v1/worker/gpu_worker.py determine_available_memory, gpu_model_runner.py profile_run.
- SGLang: KV pool = mem_fraction_static × B − weights, B the free memory before the weights load (after the CUDA
  context and distributed init). Source: python/sglang/srt/model_executor/model_runner.py profile_max_num_token.
- TensorRT-LLM PyTorch backend: KV = free_gpu_memory_fraction × (device total − weights − activations of a
  max_num_tokens forward − memory outside torch, CUDA graphs included). Source:
  tensorrt_llm/_torch/pyexecutor/_util.py KvCacheCreator.
Each term names its formula and the engine file it follows; constants measured from startup logs say which logs.
"""

from __future__ import annotations

from math import ceil

from pydantic import Field

from planner._base import FrozenSpec
from planner.explain import Term
from planner.gpu_spec import GpuSpec
from planner.model.kv_cache import kv_split
from planner.model.precision import dtype_bytes
from planner.model.spec import ModelSpec
from planner.serving.engines import EngineDefaults, EngineProfile, captured_sizes
from planner.serving.memory import fused_forward_bytes, weight_terms
from planner.serving.spec import ServingSpec

__all__ = ["DRIVER_RESERVE_BYTES", "EngineMemory", "driver_memory_bytes", "engine_memory", "moe_workspace_bytes"]

GIB = 1 << 30
MIB = 1 << 20
# The datasheet memory less what the driver reports (cudaMemGetInfo total), on the GPUs where it was measured:
# H100 80 GiB - 79.19, H200 141 - 139.81, A100-40GB 40 - 39.39 GiB (planner/catalog/gpus.json); median 0.81 GiB.
DRIVER_RESERVE_BYTES = round(0.81 * GIB)
ROPE_TABLES = 1  # one cos/sin cache of max_position × rotary width per model (vLLM RotaryEmbedding.cos_sin_cache)
# Piecewise CUDA graphs hold a small private pool per captured size and layer piece. The CUDA graph pools vLLM
# 0.19.0 logged on H100 (benchmarks/data/engine_memory/vllm_logs.json: 0.67-1.79 GiB for 51 sizes of dense models)
# are 0.40-0.60 MiB per (captured size × (layers + 1)); median 0.55 MiB. MLA and gpt-oss logs run to 1.1-1.2 MiB.
GRAPH_BYTES_PER_SIZE_LAYER = round(0.55 * MIB)
# SGLang's free memory before the weights load is the driver total less the CUDA context and torch init
# (0.38 GiB on one H100: 79.19 - 78.81 GiB, SGLang docs log) and, at TP > 1, NCCL communicators (H200 TP 8:
# 1.96 GiB 'Init torch distributed ends. mem usage', benchmarks/data/engine_memory/sglang_logs.json).
SGLANG_CONTEXT_BYTES = round(0.38 * GIB)
SGLANG_DIST_INIT_BYTES = round(1.96 * GIB)


class EngineMemory(FrozenSpec):
    """One GPU's memory as the engine sizes it."""

    profile_id: str
    budget_bytes: int = Field(description="What the engine may fill with weights, activations and KV cache.")
    budget_formula: str
    non_kv: tuple[Term, ...] = Field(description="Terms the engine subtracts from the budget before the KV pool.")
    outside_budget: tuple[Term, ...] = Field(description="Memory the process uses beyond the budget (CUDA context, "
                                             "CUDA graphs captured after the KV cache).")  # fmt: skip
    kv_pool_bytes: int
    kv_block_bytes: int = Field(description="One block of block_size tokens over every layer on this GPU.")
    kv_blocks: int
    kv_pool_tokens: int = Field(
        description="Tokens the pool holds: blocks × block_size (vLLM 'GPU KV cache size'), × decode_context_parallel "
        "when the cache is striped over that many GPUs (each holds every DCP-th token)."
    )


def driver_memory_bytes(gpu: GpuSpec) -> int:
    """Device memory as the CUDA driver reports it; where unmeasured, the datasheet less the median driver reserve."""
    return gpu.driver_memory_bytes or gpu.memory_bytes - DRIVER_RESERVE_BYTES


_MEMORY: dict[tuple[object, ...], EngineMemory] = {}
_MEMORY_LIMIT = 8192
# the request's workload: what a pooled engine's memory does not depend on (it allocates before any request)
_WORKLOAD = {"prompt_tokens": 1, "output_tokens": 1, "concurrency": 1}


def engine_memory(
    spec: ModelSpec, serving: ServingSpec, gpu: GpuSpec, profile: EngineProfile, defaults: EngineDefaults
) -> EngineMemory:
    """The budget, the non-KV terms and the KV pool of one GPU for a pooled engine (vLLM, SGLang, TensorRT-LLM),
    computed once per configuration: a pooled engine sizes its memory at start-up, before any request, so the
    prompt, output and concurrency of the request are left out of the key (a batch of estimates repeats it)."""
    key = (spec, serving.model_copy(update=_WORKLOAD), profile.id, defaults,
           gpu.id, gpu.memory_bytes, gpu.driver_memory_bytes, gpu.smi_memory_mib, gpu.name)  # fmt: skip
    hit = _MEMORY.get(key)
    if hit is None:
        if len(_MEMORY) > _MEMORY_LIMIT:
            _MEMORY.clear()
        hit = _MEMORY[key] = _engine_memory(spec, serving, gpu, profile, defaults)
    return hit


def _engine_memory(
    spec: ModelSpec, serving: ServingSpec, gpu: GpuSpec, profile: EngineProfile, defaults: EngineDefaults
) -> EngineMemory:
    budget_kind = profile.kv_budget.value
    weights = (*weight_terms(spec, serving), _rope_term(spec, serving))
    if budget_kind in ("vllm_profiled", "vllm_total_consumed"):
        budget, formula, non_kv, outside = _vllm(spec, serving, gpu, profile, defaults)
    elif budget_kind == "sglang_static_fraction":
        budget, formula, non_kv, outside = _sglang(spec, serving, gpu, profile, defaults)
    elif budget_kind == "trtllm_profiled_fraction":
        budget, formula, non_kv, outside = _trtllm(spec, serving, gpu, profile, defaults)
    else:
        raise ValueError(f"engine profile {profile.id} has no KV pool ({budget_kind})")
    non_kv = (*weights, *non_kv)
    pool = max(0, budget - sum(t.bytes for t in non_kv))
    if budget_kind == "trtllm_profiled_fraction":
        fraction = serving.free_gpu_memory_fraction or defaults.memory_fraction or 0.9
        pool = max(0, int((budget - sum(t.bytes for t in non_kv)) * fraction))
    block = serving.resolved_block_size
    # the KV heads one GPU caches: its attention rank's share (n_kv / (TP / attention DP) under data-parallel attention,
    # where each rank caches only its own sequences; an MLA latent is never split)
    tp_kv = serving.attention_tensor_parallel
    split = kv_split(spec, dtype_bytes(serving.kv_cache_dtype), serving.resolved_mla_layout, tp_kv)
    block_bytes = (split.full + split.sliding) * block
    blocks = pool // block_bytes if block_bytes else 0
    return EngineMemory(
        profile_id=profile.id,
        budget_bytes=budget,
        budget_formula=formula,
        non_kv=non_kv,
        outside_budget=outside,
        kv_pool_bytes=pool,
        kv_block_bytes=block_bytes,
        kv_blocks=blocks,
        kv_pool_tokens=blocks * block * serving.decode_context_parallel,
    )


def _rope_term(spec: ModelSpec, serving: ServingSpec) -> Term:
    """vLLM and SGLang precompute cos/sin for every position: max_position × rotary width in the model dtype."""
    width = spec.resolved_rotary_dim  # MLA d_R, GPT-NeoX's partial rotary; 0 for learned positions and ALiBi
    b = dtype_bytes(serving.activation_dtype)
    return Term(
        name="weights/rope_cache",
        bytes=ROPE_TABLES * spec.max_context * width * b,
        formula="max_position·d_rot·b",
        detail=f"{spec.max_context} positions × {width} (cos and sin halves) × {b} B",
        source="vllm/model_executor/layers/rotary_embedding.py: cos_sin_cache [max_position, rotary_dim] buffer",
    )


def _graph_term(spec: ModelSpec, profile: EngineProfile, defaults: EngineDefaults, serving: ServingSpec) -> Term | None:
    captured = captured_sizes(
        profile, defaults, serving.max_num_seqs, serving.max_num_batched_tokens, serving.cuda_graph_max_batch_size
    )
    if serving.enforce_eager or not captured:
        return None
    sizes = len(captured)
    pieces = spec.num_layers + 1
    return Term(
        name="overhead/cuda_graphs",
        bytes=sizes * pieces * GRAPH_BYTES_PER_SIZE_LAYER,
        formula="n_sizes·(L + 1)·0.55 MiB",
        detail=f"{sizes} captured batch sizes (largest {max(captured)}) × {pieces} graph pieces",
        source="calibrated on the CUDA graph pools vLLM 0.19.0 logs on H100 (0.40-0.60 MiB per size and piece for "
        "dense models; MLA and gpt-oss about twice that)",
    )


def _vllm(
    spec: ModelSpec, serving: ServingSpec, gpu: GpuSpec, profile: EngineProfile, defaults: EngineDefaults
) -> tuple[int, str, tuple[Term, ...], tuple[Term, ...]]:
    util = serving.gpu_memory_utilization or defaults.memory_fraction or 0.9
    total = driver_memory_bytes(gpu)
    budget = int(util * total)
    peak = _vllm_profile_peak(spec, serving, profile, defaults)
    non_torch = _non_torch(profile, serving.tensor_parallel)
    graphs = _graph_term(spec, profile, defaults, serving)
    in_budget = bool(profile.cudagraph_in_kv_budget and profile.cudagraph_in_kv_budget.value)
    non_kv = (peak, non_torch, *((graphs,) if graphs and in_budget else ()))
    outside = (*((graphs,) if graphs and not in_budget else ()), _context_term(total, util))
    formula = f"requested = gpu_memory_utilization × driver total = {util} × {total / GIB:.2f} GiB"
    return budget, formula, non_kv, outside


def _vllm_profile_peak(spec: ModelSpec, serving: ServingSpec, profile: EngineProfile, d: EngineDefaults) -> Term:
    """The torch peak of vLLM's profile run: the larger of the dummy forward of max_num_batched_tokens tokens and
    the sampler warm-up (fp32 logits of min(max_num_seqs, tokens) rows and its top-k/top-p tensors), with the
    dummy run's hidden states still held."""
    tokens = serving.max_num_batched_tokens or d.token_budget
    rows = min(tokens, serving.max_num_seqs or d.max_num_seqs)
    # each data-parallel rank samples its own rows over the vocabulary split on its own GPUs
    b, h, tp = dtype_bytes(serving.activation_dtype), spec.hidden_size, serving.attention_tensor_parallel
    per_logit = int(profile.sampler_bytes_per_logit.value) if profile.sampler_bytes_per_logit else 14
    vocab_local = ceil(spec.vocab_size / tp)
    sampler = rows * spec.vocab_size * per_logit + (rows * vocab_local * b if tp > 1 else 0)
    held = tokens * h * b + 2 * rows * h * b  # dummy-run hidden states, the sampled rows and their random copy
    persists = profile.persistent_moe_workspace is not None and profile.persistent_moe_workspace.value
    workspace = moe_workspace_bytes(spec, serving, tokens) if persists else 0
    forward = fused_forward_bytes(spec, serving, tokens)
    sampler_moment = sampler + held + workspace
    source = profile.sampler_bytes_per_logit.source if profile.sampler_bytes_per_logit else "assumed 14 B/logit"
    if sampler_moment >= forward:
        return Term(
            name="activations/profile_peak",
            bytes=sampler_moment,
            formula="rows·V·c + [rows·⌈V/TP⌉·b] + T·h·b + 2·rows·h·b",
            detail=f"sampler warm-up: rows = min(max_num_batched_tokens, max_num_seqs) = {rows}, V = "
            f"{spec.vocab_size}, c = {per_logit} B per logit"
            + (f", with the fused-MoE workspace ({workspace / GIB:.2f} GiB) still allocated" if workspace else "")
            + f"; the forward of T = {tokens} tokens peaks at {forward / GIB:.2f} GiB",
            source=f"vllm/v1/worker/gpu_model_runner.py _dummy_sampler_run; {source}",
        )
    return Term(
        name="activations/profile_peak",
        bytes=forward,
        formula="c·T·h·b + max(attention, FFN or fused-MoE intermediates)·b",
        detail=f"dummy forward of T = {tokens} tokens (the sampler warm-up of {rows} rows peaks at "
        f"{sampler_moment / GIB:.2f} GiB)",
        source="vllm/v1/worker/gpu_model_runner.py profile_run -> _dummy_run(max_num_batched_tokens); one layer's "
        "intermediates (planner.serving.memory.fused_forward_bytes)",
    )


def moe_workspace_bytes(spec: ModelSpec, serving: ServingSpec, tokens: int) -> int:
    """vLLM's fused-MoE workspaces for `tokens` tokens: M·k·max(f, h) (reused for the M×h output) and M·k·max(2f, h),
    f = the local expert width (experts split by TP), in the activation dtype.
    Source: vllm/model_executor/layers/fused_moe/fused_moe.py TritonExperts.workspace_shapes and
      modular_kernel.py _allocate_buffers @ v0.19.0."""
    moe = spec.moe
    if moe is None:
        return 0
    b, h, k = dtype_bytes(serving.activation_dtype), spec.hidden_size, moe.experts_per_token
    f = ceil(moe.expert_ffn_dim / serving.tensor_parallel)
    tokens *= serving.attention_data_parallel  # under data-parallel attention the experts see every rank's tokens
    return (max(tokens * k * max(f, h), tokens * h) + tokens * k * max(2 * f, h)) * b


def _non_torch(profile: EngineProfile, tp: int) -> Term:
    src = profile.non_torch_bytes
    value = (src.tp1 if tp == 1 else src.tp_multi) if src else 0
    return Term(
        name="overhead/non_torch",
        bytes=value or 0,
        formula="measured non-torch growth at TP 1 / TP > 1",
        detail=f"TP = {tp}: NCCL and custom all-reduce buffers, cuBLAS and attention workspaces outside torch",
        source=src.source if src else "not measured for this engine version",
    )


def _context_term(total: int, util: float) -> Term:
    return Term(
        name="overhead/cuda_context",
        bytes=0,
        formula="outside the budget: in the (1 − util)·total slack",
        detail=f"the CUDA context sits in the engine's baseline; {(1 - util) * total / GIB:.2f} GiB of slack",
        source="vllm/v1/worker/gpu_worker.py: init_snapshot is taken after the CUDA context exists",
    )


def _sglang(
    spec: ModelSpec, serving: ServingSpec, gpu: GpuSpec, profile: EngineProfile, defaults: EngineDefaults
) -> tuple[int, str, tuple[Term, ...], tuple[Term, ...]]:
    mfs = serving.mem_fraction_static or defaults.memory_fraction or 0.88
    total = driver_memory_bytes(gpu)
    baseline = SGLANG_CONTEXT_BYTES + (SGLANG_DIST_INIT_BYTES if serving.tensor_parallel > 1 else 0)
    free_before = total - baseline
    budget = int(mfs * free_before)
    overhead = profile.weights_overhead_bytes
    loaded = Term(
        name="weights/load_overhead",
        bytes=int(overhead.value) if overhead else 0,
        formula="mem usage at 'Load weight end' − checkpoint bytes",
        detail="buffers loaded with the model (rotary caches, scales)",
        source=overhead.source if overhead else "not measured",
    )
    formula = (
        f"mem_fraction_static × free before weights = {mfs} × ({total / GIB:.2f} − {baseline / GIB:.2f}) GiB "
        f"(CUDA context{' and NCCL init' if serving.tensor_parallel > 1 else ''})"
    )
    graphs = _graph_term(spec, profile, defaults, serving)
    return budget, formula, (loaded,), (*((graphs,) if graphs else ()),)


def _trtllm(
    spec: ModelSpec, serving: ServingSpec, gpu: GpuSpec, profile: EngineProfile, defaults: EngineDefaults
) -> tuple[int, str, tuple[Term, ...], tuple[Term, ...]]:
    total = driver_memory_bytes(gpu)
    tokens = serving.max_num_batched_tokens or defaults.token_budget
    act = Term(
        name="activations/profile_peak",
        bytes=fused_forward_bytes(spec, serving, tokens),
        formula="c·T·h·b + max(attention, FFN or fused-MoE intermediates)·b",
        detail=f"the dummy forward of max_num_tokens = {tokens} tokens",
        source="tensorrt_llm/_torch/pyexecutor/_util.py: dummy context requests of max_num_tokens tokens",
    )
    fraction = serving.free_gpu_memory_fraction or defaults.memory_fraction or 0.9
    formula = f"KV = free_gpu_memory_fraction × (driver total − peak) = {fraction} × ({total / GIB:.2f} GiB − peak)"
    return total, formula, (act, _non_torch(profile, serving.tensor_parallel)), ()
