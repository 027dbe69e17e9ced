"""The serving question end to end: does it fit, how many sequences, how fast. One request schema, one answer."""

from __future__ import annotations

from pydantic import Field

from planner._base import FrozenSpec
from planner.catalog import Catalog
from planner.explain import MemoryBreakdown, Term, breakdown
from planner.gpu_spec import GpuSpec
from planner.model.kv_cache import KVLayout, check_tensor_parallel
from planner.model.precision import dtype_bytes
from planner.model.spec import AttentionKind, ModelSpec
from planner.refs import GpuRef, ModelRef, ResolvedModel, resolve_gpu, resolve_model
from planner.serving.capacity import KVCapacity, kv_capacity
from planner.serving.memory import activation_terms, overhead_terms, weight_terms
from planner.serving.spec import Efficiency, ServingSpec
from planner.serving.throughput import DecodeEstimate, PrefillEstimate, decode_estimate, prefill_estimate

__all__ = ["InferenceEstimate", "InferenceRequest", "estimate_inference"]

GIB = 1 << 30


class InferenceRequest(FrozenSpec):
    """Serving question: this model on this GPU type with these settings."""

    model: ModelRef
    gpu: GpuRef = "h100-sxm"
    serving: ServingSpec = ServingSpec()
    efficiency: Efficiency = Efficiency()


class InferenceEstimate(FrozenSpec):
    """The answer, per GPU of one tensor-parallel replica."""

    model: ResolvedModel
    gpu: GpuSpec
    num_gpus: int = Field(description="GPUs of one replica (= tensor_parallel).")
    serving: ServingSpec = Field(description="The settings used, engine defaults filled in.")
    memory: MemoryBreakdown = Field(description="Per-GPU bytes at the requested concurrency and context.")
    allocated_peak_bytes: int = Field(description="What torch.cuda.max_memory_allocated would show.")
    device_bytes: int = Field(description="What nvidia-smi would show: allocated + CUDA context.")
    fits: bool
    fit_reasons: tuple[str, ...] = Field(description="Why it does not fit (empty when it fits).")
    capacity: KVCapacity
    prefill: PrefillEstimate
    decode: DecodeEstimate
    warnings: tuple[str, ...] = ()


def _kv_term(spec: ModelSpec, serving: ServingSpec, per_seq: int) -> Term:
    layout = serving.resolved_mla_layout
    tp = serving.tensor_parallel
    if spec.attention_kind is AttentionKind.MLA and layout is KVLayout.MLA_LATENT:
        formula, source = "B·s·L·(d_c + d_R)·b_kv", "DeepSeek-V2 §2.1.2 and Table 1 (latent cache)"
    elif spec.attention_kind is AttentionKind.MLA:
        formula, source = "B·s·L·n_h·(d_nope + d_R + d_v)·b_kv / TP", "per-head K and V as transformers 4.x caches"
    else:
        formula, source = "B·s·2·L·n_kv·d_h·b_kv / TP", "Pope et al. 2022 §3.1; GQA (Ainslie et al. 2023)"
    window = f", sliding layers keep min(s, {spec.sliding_window})" if spec.sliding_window else ""
    return Term(
        name="kv_cache",
        bytes=serving.concurrency * per_seq,
        formula=formula,
        detail=f"B={serving.concurrency} × {per_seq} B per sequence at s={serving.context_tokens} tokens "
        f"({spec.attention_kind}, {serving.kv_cache_dtype}, pages of {serving.resolved_block_size}, TP={tp}{window})",
        source=source,
    )


def _fit_reasons(non_kv: int, cap: KVCapacity, serving: ServingSpec) -> tuple[str, ...]:
    if non_kv > cap.budget_bytes:
        return (
            f"weights, activations and overhead need {non_kv / GIB:.2f} GiB per GPU but the budget is "
            f"{cap.budget_bytes / GIB:.2f} GiB (gpu_memory_utilization × memory)",
        )
    if cap.max_concurrent_sequences < serving.concurrency:
        return (
            f"the KV cache for {serving.concurrency} sequences of {serving.context_tokens} tokens needs "
            f"{serving.concurrency * cap.kv_bytes_per_sequence / GIB:.2f} GiB; "
            f"{cap.kv_cache_capacity_bytes / GIB:.2f} GiB left holds {cap.max_concurrent_sequences}",
        )
    return ()


def _resolved_serving(serving: ServingSpec) -> ServingSpec:
    return serving.model_copy(
        update={
            "block_size": serving.resolved_block_size,
            "mla_layout": serving.resolved_mla_layout,
            "logits_all_positions": serving.resolved_logits_all_positions,
        }
    )


def estimate_inference(request: InferenceRequest, catalog: Catalog) -> InferenceEstimate:
    """Memory breakdown, fit, KV capacity and roofline throughput for one serving configuration."""
    model: ResolvedModel = resolve_model(request.model, catalog)
    gpu = resolve_gpu(request.gpu, catalog)
    spec, serving = model.spec, _resolved_serving(request.serving)
    check_tensor_parallel(spec, serving.tensor_parallel)
    weights = weight_terms(spec, serving)
    non_kv_terms = (*weights, *activation_terms(spec, serving), *overhead_terms(serving))
    non_kv = sum(t.bytes for t in non_kv_terms)
    cap = kv_capacity(
        spec,
        budget_bytes=int(serving.gpu_memory_utilization * gpu.memory_bytes),
        non_kv_bytes=non_kv,
        context=serving.context_tokens,
        concurrency=serving.concurrency,
        kv_dtype_bytes=dtype_bytes(serving.kv_cache_dtype),
        mla_layout=serving.resolved_mla_layout,
        tensor_parallel=serving.tensor_parallel,
        block_size=serving.resolved_block_size,
    )
    memory = breakdown((*weights, _kv_term(spec, serving, cap.kv_bytes_per_sequence), *non_kv_terms[len(weights) :]))
    weight_bytes = sum(t.bytes for t in weights)
    reasons = _fit_reasons(non_kv, cap, serving)
    warnings = list(model.warnings)
    if serving.context_tokens > spec.max_context:
        warnings.append(f"context {serving.context_tokens} exceeds the model's max_context {spec.max_context}")
    return InferenceEstimate(
        model=model,
        gpu=gpu,
        num_gpus=serving.tensor_parallel,
        serving=serving,
        memory=memory,
        allocated_peak_bytes=memory.total_bytes - memory.get("overhead/cuda_context"),
        device_bytes=memory.total_bytes,
        fits=not reasons,
        fit_reasons=reasons,
        capacity=cap,
        prefill=prefill_estimate(spec, serving, gpu, request.efficiency, weight_bytes),
        decode=decode_estimate(spec, serving, gpu, request.efficiency, weight_bytes),
        warnings=tuple(warnings),
    )
