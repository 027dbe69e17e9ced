"""The serving question end to end: does it fit, how many sequences, how fast. One request schema, one answer."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from planner._base import FrozenSpec
from planner.calibration.kernels import available_tables
from planner.calibration.residual import CalibratedLatency, calibrate
from planner.calibration.residual import features as residual_features
from planner.calibration.status import LatencyValidation, MemoryValidation, latency_validation, memory_validation
from planner.catalog import Catalog
from planner.errors import FieldProblem, SpecError
from planner.explain import MemoryBreakdown, Term, breakdown
from planner.gpu_spec import GpuSpec
from planner.model.kv_cache import KVLayout, check_tensor_parallel, kv_bytes_per_sequence
from planner.model.precision import dtype_bytes
from planner.model.spec import AttentionKind, ModelSpec
from planner.refs import GpuRef, ModelRef, ResolvedModel, resolve_gpu, resolve_model
from planner.serving.capacity import KVCapacity, kv_capacity
from planner.serving.context_parallel import dcp_problem
from planner.serving.engine_memory import EngineMemory, driver_memory_bytes, engine_memory
from planner.serving.engines import EngineDefaults, EngineProfile, engine_defaults, engine_profiles
from planner.serving.load import LoadEstimate, LoadSpec, estimate_load
from planner.serving.memory import activation_terms, overhead_terms, weight_terms
from planner.serving.pipeline import Stage, pipeline_stages, replica_step_model
from planner.serving.spec import Efficiency, ServingSpec
from planner.serving.throughput import (
    DecodeEstimate,
    PrefillEstimate,
    decode_estimate,
    prefill_estimate,
    with_step_time,
)

__all__ = ["EngineReport", "InferenceEstimate", "InferenceRequest", "StageMemory", "estimate_inference"]

GIB = 1 << 30
MIB = 1 << 20
DEFAULT_TRANSFORMERS_UTILIZATION = 0.9  # no engine budget: the share of the GPU memplan lets generate() fill


class InferenceRequest(FrozenSpec):
    """Serving question: this model on this GPU type with these settings."""

    model: ModelRef
    gpu: GpuRef = "h100-sxm"
    serving: ServingSpec = ServingSpec()
    efficiency: Efficiency = Efficiency()
    load: LoadSpec | None = Field(
        default=None,
        description="Traffic to answer latency under load for (TTFT/TPOT percentiles at a concurrency or rate); "
        "needs measured kernel tables for the GPU and engine (planner/calibration/kernels).",
    )


class EngineReport(FrozenSpec):
    """Which engine version the answer modelled, the defaults it applied (with their sources) and how well that
    profile's memory model matches published startup logs."""

    profile: str = Field(description="Engine profile id, e.g. 'vllm-0.19' (planner/catalog/engines.json).")
    label: str
    versions: tuple[str, str]
    defaults: EngineDefaults
    default_sources: dict[str, str] = Field(description="Each applied default and the engine file @ version.")
    budget_formula: str
    kv_pool_bytes: int | None = Field(description="The KV pool the engine allocates on one GPU (pooled engines).")
    kv_pool_tokens: int | None = Field(description="Tokens that pool holds (vLLM logs it as 'GPU KV cache size').")
    memory_validation: MemoryValidation


class StageMemory(FrozenSpec):
    """One pipeline stage of a replica."""

    index: int
    layers: tuple[int, int] = Field(description="Decoder layers [first, last + 1) on this stage.")
    weight_bytes: int = Field(description="Weights one GPU of the stage holds.")
    kv_pool_tokens: int = Field(description="Tokens the stage's own KV pool would hold.")


class InferenceEstimate(FrozenSpec):
    """The answer, per GPU of one tensor-parallel replica."""

    model: ResolvedModel
    gpu: GpuSpec
    num_gpus: int = Field(description="GPUs of one replica (tensor_parallel × pipeline_parallel).")
    serving: ServingSpec = Field(description="The settings used, engine defaults filled in.")
    engine: EngineReport
    memory: MemoryBreakdown = Field(description="Per-GPU bytes: as the engine allocates them (pooled engines: the "
                                    "whole KV pool), or at the requested concurrency (transformers).")  # fmt: skip
    allocated_peak_bytes: int = Field(description="What torch.cuda.max_memory_allocated would show.")
    device_bytes: int = Field(description="What nvidia-smi would show: allocated + memory outside torch.")
    fits: bool
    fit_reasons: tuple[str, ...] = Field(description="Why it does not fit (empty when it fits).")
    capacity: KVCapacity
    stages: tuple[StageMemory, ...] = Field(
        default=(),
        description="Pipeline parallel: each stage's layers, weights and KV pool; memory and capacity above are the "
        "stage whose pool holds the fewest tokens (empty for one stage).",
    )
    prefill: PrefillEstimate = Field(description="One prompt alone on the replica (static single batch).")
    decode: DecodeEstimate = Field(description="One decode iteration of `concurrency` sequences (static batch).")
    load: LoadEstimate | None = Field(default=None, description="Latency under the request's load, if asked.")
    calibrated: CalibratedLatency | None = Field(
        default=None,
        description="The load's mean TTFT and TPOT with the learned residual applied (planner/calibration/"
        "residual.py), for closed-loop loads on the (GPU, engine) groups where it lowers the error held out by model "
        "on measured runs; null elsewhere. The analytic figures stay in `load`.",
    )
    latency_validation: LatencyValidation = Field(
        description="The latency model's measured error on end-to-end runs of this (GPU, engine)."
    )
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


def _pool_term(mem: EngineMemory, serving: ServingSpec, per_seq: int) -> Term:
    dp = serving.attention_data_parallel
    need = serving.rank_concurrency * per_seq
    held = (
        f"{serving.concurrency} sequences of {serving.context_tokens} tokens"
        if dp == 1
        else f"each of the {dp} attention ranks holds its own ⌈{serving.concurrency}/{dp}⌉ = "
        f"{serving.rank_concurrency} sequences of {serving.context_tokens} tokens, which"
    )
    dcp = serving.decode_context_parallel
    striped = (
        f" × {dcp} (decode context parallel: each GPU holds every {dcp}th token, "
        f"{serving.context_per_gpu(serving.context_tokens)} of each sequence)"
        if dcp > 1
        else ""
    )
    return Term(
        name="kv_cache",
        bytes=mem.kv_pool_bytes,
        formula="KV pool = budget − non-KV terms, in whole blocks",
        detail=f"{mem.kv_blocks:,} blocks × {serving.resolved_block_size} tokens{striped} = "
        f"{mem.kv_pool_tokens:,} tokens ({mem.kv_block_bytes:,} B per block); {held} use {need / GIB:.2f} GiB of it",
        source=f"{mem.budget_formula}; engine profile {mem.profile_id}",
    )


def _fit_reasons(non_kv: int, cap: KVCapacity, serving: ServingSpec) -> tuple[str, ...]:
    if non_kv > cap.budget_bytes:
        return (
            f"weights, activations and overhead need {non_kv / GIB:.2f} GiB per GPU but the budget is "
            f"{cap.budget_bytes / GIB:.2f} GiB",
        )
    if cap.max_concurrent_sequences < serving.concurrency:
        dp = serving.attention_data_parallel
        per_rank = f" ({serving.rank_concurrency} on each of {dp} attention ranks)" if dp > 1 else ""
        return (
            f"the KV cache for {serving.concurrency} sequences of {serving.context_tokens} tokens{per_rank} needs "
            f"{serving.rank_concurrency * cap.kv_bytes_per_sequence / GIB:.2f} GiB; "
            f"{cap.kv_cache_capacity_bytes / GIB:.2f} GiB left holds {cap.max_concurrent_sequences}",
        )
    return ()


def _check_attention_dp(spec: ModelSpec, serving: ServingSpec) -> None:
    """Data-parallel attention is modelled for MoE models: the engines pair it with expert-parallel MoE layers (a
    dense model's MLP under DP attention runs either replicated or at full TP over gathered tokens, by engine
    option, and is not modelled)."""
    if serving.attention_data_parallel > 1 and spec.moe is None:
        msg = (
            f"attention_data_parallel={serving.attention_data_parallel} is modelled for MoE models only (the "
            "attention ranks share the expert-parallel MoE layers); this model is dense: use replicas instead"
        )
        raise SpecError([FieldProblem(("serving", "attention_data_parallel"), msg)])


def _check_decode_context_parallel(spec: ModelSpec, serving: ServingSpec, profile: EngineProfile) -> None:
    """Decode context parallelism stripes a cache that TP leaves whole on several GPUs: an MLA latent (in the
    engine's latent layout) or GQA/MQA KV heads that TP replicates, within vLLM's bounds
    (planner.serving.context_parallel)."""
    dcp = serving.decode_context_parallel
    if dcp == 1:
        return
    field = ("serving", "decode_context_parallel")
    if spec.mla is not None and serving.resolved_mla_layout is not KVLayout.MLA_LATENT:
        msg = "decode_context_parallel needs the engine's latent MLA cache (mla_layout 'mla_latent')"
        raise SpecError([FieldProblem(field, msg)])
    problem = dcp_problem(spec, serving.tensor_parallel, dcp, profile)
    if problem is not None:
        raise SpecError([FieldProblem(field, problem)])


def resolve_engine(serving: ServingSpec, gpu: GpuSpec) -> tuple[ServingSpec, EngineProfile, EngineDefaults]:
    """Fill the engine version's defaults for this GPU into the serving spec (what the answer echoes back)."""
    profile = serving.engine_profile
    smi = gpu.smi_memory_mib or gpu.memory_bytes // MIB
    defaults = engine_defaults(profile, driver_memory_bytes(gpu), smi, gpu.name, serving.tensor_parallel)
    update: dict[str, object] = {
        "block_size": serving.resolved_block_size,
        "mla_layout": serving.resolved_mla_layout,
        "logits_all_positions": serving.resolved_logits_all_positions,
    }
    if serving.pooled:
        update["max_num_batched_tokens"] = serving.max_num_batched_tokens or defaults.token_budget
        update["max_num_seqs"] = serving.max_num_seqs or defaults.max_num_seqs
        fraction_field = {"sglang": "mem_fraction_static", "trtllm": "free_gpu_memory_fraction"}.get(
            serving.engine.value, "gpu_memory_utilization"
        )
        if getattr(serving, fraction_field) is None:
            update[fraction_field] = defaults.memory_fraction
    elif serving.gpu_memory_utilization is None:
        update["gpu_memory_utilization"] = DEFAULT_TRANSFORMERS_UTILIZATION
    return serving.model_copy(update=update), profile, defaults


_SOURCE_FIELDS = ("kv_budget", "gpu_memory_utilization", "mem_fraction_static", "free_gpu_memory_fraction",
                  "block_size", "max_num_seqs", "max_num_batched_tokens", "chunked_prefill_size", "cudagraph_sizes",
                  "cudagraph_in_kv_budget", "sampler_bytes_per_logit", "non_torch_bytes", "scheduler")  # fmt: skip


@lru_cache(maxsize=64)  # profiles are the catalog's (resolve_profile), fixed by their id
def _sources_of(profile_id: str) -> tuple[tuple[str, str], ...]:
    profile = next(p for p in engine_profiles() if p.id == profile_id)
    return tuple((n, getattr(profile, n).source) for n in _SOURCE_FIELDS if getattr(profile, n) is not None)


def _default_sources(profile: EngineProfile) -> dict[str, str]:
    return dict(_sources_of(profile.id))


def _stages(spec: ModelSpec, serving: ServingSpec) -> tuple[Stage, ...]:
    pp = serving.pipeline_parallel
    if pp > 1 and not serving.pooled:
        msg = f"engine '{serving.engine}' runs one process per model: pipeline_parallel must be 1"
        raise SpecError([FieldProblem(("serving", "pipeline_parallel"), msg)])
    try:
        return pipeline_stages(spec, pp)
    except ValueError as exc:
        raise SpecError([FieldProblem(("serving", "pipeline_parallel"), str(exc))]) from None


def _stage_reports(stages: tuple[Stage, ...], mems: list[EngineMemory]) -> tuple[StageMemory, ...]:
    return tuple(
        StageMemory(
            index=st.index,
            layers=(st.start, st.end),
            weight_bytes=sum(t.bytes for t in m.non_kv if t.name.startswith("weights/")),
            kv_pool_tokens=m.kv_pool_tokens,
        )
        for st, m in zip(stages, mems, strict=True)
    )


def estimate_inference(request: InferenceRequest, catalog: Catalog) -> InferenceEstimate:
    """Memory as the engine allocates it, fit, KV capacity and single-batch latency for one serving configuration."""
    model: ResolvedModel = resolve_model(request.model, catalog)
    gpu = resolve_gpu(request.gpu, catalog)
    spec = model.spec
    _check_attention_dp(spec, request.serving)
    check_tensor_parallel(spec, request.serving.attention_tensor_parallel)
    serving, profile, defaults = resolve_engine(request.serving, gpu)
    _check_decode_context_parallel(spec, serving, profile)
    stages = _stages(spec, serving)
    weights = weight_terms(spec, serving)
    b_kv = dtype_bytes(serving.kv_cache_dtype)
    # KV heads split over one attention rank (all TP GPUs without data-parallel attention)
    layout, tp, block = serving.resolved_mla_layout, serving.attention_tensor_parallel, serving.resolved_block_size
    mem: EngineMemory | None = None
    stage_reports: tuple[StageMemory, ...] = ()
    held = spec  # the layers whose memory is reported: the whole model, or the pipeline stage with the least KV room
    if serving.pooled:
        mems = [engine_memory(st.spec, serving, gpu, profile, defaults) for st in stages]
        worst = min(range(len(mems)), key=lambda i: mems[i].kv_pool_tokens)
        mem, held = mems[worst], stages[worst].spec
        stage_reports = _stage_reports(stages, mems) if len(stages) > 1 else ()
    per_seq = kv_bytes_per_sequence(held, serving.context_per_gpu(serving.context_tokens), b_kv, layout, tp, block)
    if mem is not None:
        non_kv_terms = mem.non_kv
        budget, capacity_bytes = mem.budget_bytes, mem.kv_pool_bytes
        terms = (*non_kv_terms, _pool_term(mem, serving, per_seq))
        outside = sum(t.bytes for t in mem.outside_budget)
    else:
        util = serving.gpu_memory_utilization or DEFAULT_TRANSFORMERS_UTILIZATION
        non_kv_terms = (*weights, *activation_terms(spec, serving), *overhead_terms(serving))
        budget = int(util * driver_memory_bytes(gpu))
        capacity_bytes = max(0, budget - sum(t.bytes for t in non_kv_terms))
        terms = (*weights, _kv_term(spec, serving, per_seq), *non_kv_terms[len(weights) :])
        outside = 0
    non_kv = sum(t.bytes for t in non_kv_terms)
    cap = kv_capacity(
        held,
        budget_bytes=budget,
        capacity_bytes=capacity_bytes,
        context=serving.context_tokens,
        concurrency=serving.concurrency,
        kv_dtype_bytes=b_kv,
        mla_layout=layout,
        tensor_parallel=tp,
        block_size=block,
        data_parallel=serving.attention_data_parallel,
        context_shards=serving.decode_context_parallel,
    )
    memory = breakdown(terms)
    weight_bytes = sum(t.bytes for t in weights)
    reasons = _fit_reasons(non_kv, cap, serving)
    warnings = list(model.warnings)
    if serving.context_tokens > spec.max_context:
        warnings.append(f"context {serving.context_tokens} exceeds the model's max_context {spec.max_context}")
    if gpu.driver_memory_bytes is None:
        warnings.append(f"{gpu.name}: driver-reported memory not measured; assumed the datasheet less 0.81 GiB")
    if stage_reports:
        worst_stage = min(stage_reports, key=lambda r: r.kv_pool_tokens)
        warnings.append(
            f"pipeline_parallel={serving.pipeline_parallel}: memory shown for stage {worst_stage.index} (layers "
            f"{worst_stage.layers[0]}-{worst_stage.layers[1] - 1}), the stage whose KV pool holds the fewest tokens"
        )
    non_torch = memory.get("overhead/non_torch") + memory.get("overhead/cuda_context")
    report = EngineReport(
        profile=profile.id,
        label=profile.label,
        versions=profile.versions,
        defaults=defaults,
        default_sources=_default_sources(profile),
        budget_formula=mem.budget_formula if mem else f"gpu_memory_utilization × driver total ({gpu.name})",
        kv_pool_bytes=mem.kv_pool_bytes if mem else None,
        kv_pool_tokens=mem.kv_pool_tokens if mem else None,
        memory_validation=memory_validation(profile.id),
    )
    prefill = prefill_estimate(spec, serving, gpu, request.efficiency, weight_bytes)
    decode = decode_estimate(spec, serving, gpu, request.efficiency, weight_bytes)
    table_engine = serving.engine.value if serving.pooled else "vllm"
    load = None
    if (gpu.id, table_engine) in available_tables():
        steps = replica_step_model(spec, serving, gpu.id)
        ttft = steps.step(0, 0.0, [(serving.prompt_tokens, 0)]).total_s
        context = serving.prompt_tokens + serving.output_tokens // 2
        # under data-parallel attention the busiest rank's sequences set the step (= concurrency without DP)
        tpot = steps.step(serving.rank_concurrency, float(context)).total_s
        tables = steps.tables
        method = f"kernel tables {tables.gpu}/{tables.engine} {tables.engine_version}"
        prefill, decode = with_step_time(prefill, decode, ttft, tpot, method, serving.prompt_tokens)
        if request.load is not None:
            pool = mem.kv_pool_tokens if mem else int(cap.kv_cache_capacity_bytes // max(1, cap.kv_bytes_per_token))
            load = estimate_load(steps, serving, defaults, pool, request.load, gpu.id)
    elif request.load is not None:
        raise SpecError(
            [
                FieldProblem(
                    ("load",),
                    f"latency under load needs measured kernel tables; none for {gpu.id} with "
                    f"{table_engine} (available: {', '.join(sorted(f'{g}/{e}' for g, e in available_tables()))})",
                )
            ]
        )
    calibrated = None
    # the residual's features are logs of these times: a load of one output token (no TPOT) gets no calibration
    positive = load is not None and min(load.ttft.mean_ms, load.tpot.mean_ms, prefill.ttft_s, decode.tpot_s) > 0
    if load is not None and positive and request.load is not None and request.load.concurrency is not None:
        x = residual_features(
            serving.engine.value,
            gpu.id,
            request.load.concurrency,
            serving.prompt_tokens,
            serving.output_tokens,
            serving.tensor_parallel,
            prefill.ttft_s,
            decode.tpot_s,
            load.ttft.mean_ms / 1e3,
            load.tpot.mean_ms / 1e3,
            load.mean_decode_batch,
        )
        calibrated = calibrate(f"{gpu.id}/{serving.engine.value}", x, load.ttft.mean_ms, load.tpot.mean_ms)
    return InferenceEstimate(
        model=model,
        gpu=gpu,
        num_gpus=serving.gpus_per_replica,
        serving=serving,
        engine=report,
        memory=memory,
        allocated_peak_bytes=memory.total_bytes - non_torch,
        device_bytes=memory.total_bytes + outside,
        fits=not reasons,
        fit_reasons=reasons,
        capacity=cap,
        stages=stage_reports,
        prefill=prefill,
        decode=decode,
        load=load,
        calibrated=calibrated,
        latency_validation=latency_validation(gpu.id, serving.engine.value),
        warnings=tuple(warnings),
    )
