"""Engine profiles: how each serving engine version sizes memory and schedules, read from planner/catalog/engines.json.

A profile covers a range of engine versions. Each of its defaults carries the engine source file and version it was
read from; `resolve_profile` picks the profile for an (engine, version) and `EngineDefaults` evaluates the
GPU-dependent defaults (vLLM's batch limits by device memory, SGLang's memory fraction and chunk sizes by
nvidia-smi memory) for one GPU and tensor-parallel size.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from math import ceil, log2
from typing import Any, Literal

from pydantic import Field

from planner._base import FrozenSpec
from planner.errors import FieldProblem, SpecError

__all__ = [
    "EngineDefaults",
    "EngineProfile",
    "Sourced",
    "engine_defaults",
    "engine_profiles",
    "parse_version",
    "resolve_profile",
]

MIB = 1 << 20
GIB = 1 << 30


class Sourced(FrozenSpec):
    """A default and where it comes from (engine file @ version, or the measurement behind it)."""

    value: Any = None
    source: str
    tiers: tuple[dict[str, Any], ...] | None = None  # by device memory: first tier whose minimum the GPU meets
    rule: str | None = None  # named rule with parameters (SGLang's mem_fraction_static)
    table: tuple[tuple[Any, ...], ...] | None = None
    tp1: int | None = None  # by tensor-parallel size: one GPU / several GPUs
    tp_multi: int | None = None


class EngineProfile(FrozenSpec):
    """One engine version range and what it decides about memory and scheduling."""

    id: str
    engine: str
    label: str
    versions: tuple[str, str] = Field(description="First and last engine version this profile covers.")
    kv_budget: Sourced
    block_size: Sourced
    scheduler: Sourced
    admission: Sourced
    mla_layout: Sourced
    gpu_memory_utilization: Sourced | None = None
    mem_fraction_static: Sourced | None = None
    free_gpu_memory_fraction: Sourced | None = None
    max_num_seqs: Sourced | None = None
    max_num_batched_tokens: Sourced | None = None
    chunked_prefill_size: Sourced | None = None
    cuda_graph_max_bs: Sourced | None = None
    cudagraph_sizes: Sourced | None = None
    cudagraph_sets: Sourced | None = None
    cudagraph_in_kv_budget: Sourced | None = None
    # whether a step with prompt tokens replays CUDA graphs (up to the largest captured size) or always runs eagerly
    cudagraph_prefill: Sourced | None = None
    comm_init_in_kv_budget: Sourced | None = None
    sampler_bytes_per_logit: Sourced | None = None
    non_torch_bytes: Sourced | None = None
    weights_overhead_bytes: Sourced | None = None
    persistent_moe_workspace: Sourced | None = None
    qk_norm_kernels: Sourced | None = None  # kernels a layer launches for its q/k RMSNorm (Qwen3, MiniMax-M2)
    decode_context_parallel: Sourced | None = None  # present where the version stripes the MLA cache by position
    # present where the version also stripes a GQA/MQA cache whose KV heads TP replicates (flash_attn DCP)
    decode_context_parallel_gqa: Sourced | None = None
    # iteration n + 1 scheduled while iteration n runs (vLLM's async scheduling, SGLang's overlap schedule,
    # TensorRT-LLM's overlap scheduler); `rule` names the parallelism that turns it off
    overlap_scheduling: Sourced | None = None

    def covers(self, version: tuple[int, ...]) -> bool:
        return parse_version(self.versions[0]) <= version <= parse_version(self.versions[1])


def parse_version(version: str) -> tuple[int, ...]:
    """'0.19.0' -> (0, 19, 0); suffixes such as rc2, .post1 or -cu130 are dropped after their leading digits."""
    parts = []
    for piece in version.strip().lstrip("v").split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or (0,)


@lru_cache(maxsize=1)
def engine_profiles() -> tuple[EngineProfile, ...]:
    """Every profile in the catalog, `extends` resolved (a profile overrides the fields it names)."""
    raw = json.loads(resources.files("planner.catalog").joinpath("engines.json").read_text(encoding="utf-8"))
    by_id: dict[str, dict[str, Any]] = {}
    for entry in raw["profiles"]:
        base = by_id[entry["extends"]] if "extends" in entry else {}
        merged = {**base, **{k: v for k, v in entry.items() if k != "extends"}}
        by_id[entry["id"]] = merged
    return tuple(EngineProfile.model_validate(p) for p in by_id.values())


@lru_cache(maxsize=512)  # pure over the catalog's profiles; every estimate asks it several times
def resolve_profile(engine: str, version: str | None, field: tuple[str | int, ...] = ("serving",)) -> EngineProfile:
    """The profile of `engine` covering `version` (the newest profile when version is None)."""
    candidates = [p for p in engine_profiles() if p.engine == engine]
    if not candidates:
        raise SpecError([FieldProblem((*field, "engine"), f"no engine profile for '{engine}'")])
    if version is None:
        return max(candidates, key=lambda p: parse_version(p.versions[1]))
    parsed = parse_version(version)
    for profile in candidates:
        if profile.covers(parsed):
            return profile
    ranges = ", ".join(f"{p.versions[0]}-{p.versions[1]}" for p in candidates)
    raise SpecError(
        [FieldProblem((*field, "engine_version"), f"{engine} {version} is outside the modelled versions ({ranges})")]
    )


def _tier(tiers: tuple[dict[str, Any], ...], device_gib: float, smi_mib: int, name: str, tp: int) -> int:
    for tier in tiers:
        if "min_device_gib" in tier and device_gib < tier["min_device_gib"]:
            continue
        if "min_smi_mib" in tier and smi_mib < tier["min_smi_mib"]:
            continue
        if any(word in name.lower() for word in tier.get("exclude", ())):
            continue
        return int(tier["tp_at_least_4"] if tp >= 4 and "tp_at_least_4" in tier else tier["value"])
    raise ValueError("no tier matched")


class EngineDefaults(FrozenSpec):
    """An engine profile's defaults evaluated for one GPU and tensor-parallel size."""

    profile_id: str
    block_size: int
    max_num_seqs: int
    token_budget: int = Field(description="max_num_batched_tokens (vLLM), chunked_prefill_size (SGLang), "
                              "max_num_tokens (TensorRT-LLM).")  # fmt: skip
    memory_fraction: float | None = Field(
        description="gpu_memory_utilization (vLLM), mem_fraction_static (SGLang), free_gpu_memory_fraction (TRT-LLM)."
    )
    cudagraph_sizes: tuple[int, ...] = ()
    cudagraph_sets: int = 0
    scheduler: Literal["mixed_chunked", "mixed_whole", "prefill_first", "static"]
    admission: Literal["on_demand", "reserve_full"]
    overlap_scheduling: bool = False
    overlap_off_with: tuple[Literal["pipeline_parallel", "attention_data_parallel"], ...] = ()


def engine_defaults(profile: EngineProfile, device_bytes: int, smi_mib: int, gpu_name: str, tp: int) -> EngineDefaults:
    """`_engine_defaults`, remembered per (catalog profile, GPU, TP): every estimate of a deployment asks it."""
    if any(p is profile for p in engine_profiles()):
        return _catalog_defaults(profile.id, device_bytes, smi_mib, gpu_name, tp)
    return _engine_defaults(profile, device_bytes, smi_mib, gpu_name, tp)


@lru_cache(maxsize=2048)
def _catalog_defaults(profile_id: str, device_bytes: int, smi_mib: int, gpu_name: str, tp: int) -> EngineDefaults:
    profile = next(p for p in engine_profiles() if p.id == profile_id)
    return _engine_defaults(profile, device_bytes, smi_mib, gpu_name, tp)


def _engine_defaults(profile: EngineProfile, device_bytes: int, smi_mib: int, gpu_name: str, tp: int) -> EngineDefaults:
    """Evaluate `profile`'s GPU-dependent defaults: device memory as the CUDA driver reports it, nvidia-smi's
    memory.total in MiB (SGLang reads that), the GPU's name (vLLM's A100 exception) and the TP size."""
    gib = device_bytes / GIB

    def tier(s: Sourced | None, fallback: int) -> int:
        if s is None:
            return fallback
        if s.tiers:
            return _tier(s.tiers, gib, smi_mib, gpu_name, tp)
        return int(s.value)

    max_seqs = tier(profile.max_num_seqs, 0)
    budget = tier(profile.max_num_batched_tokens, 0) or tier(profile.chunked_prefill_size, 0)
    graph_bs = tier(profile.cuda_graph_max_bs, 0)
    if profile.engine == "sglang":
        max_seqs = max_seqs or 4096  # bounded by the KV pool at run time (max_running_requests)
    sizes = _cudagraph_sizes(profile.cudagraph_sizes.value if profile.cudagraph_sizes else None, max_seqs, budget)
    if profile.engine == "sglang":
        sizes = _sglang_graph_sizes(graph_bs)
    return EngineDefaults(
        profile_id=profile.id,
        block_size=int(profile.block_size.value),
        max_num_seqs=max_seqs or 1,
        token_budget=budget or 1 << 30,
        memory_fraction=_memory_fraction(profile, smi_mib, tp, budget, graph_bs),
        cudagraph_sizes=sizes,
        cudagraph_sets=int(profile.cudagraph_sets.value) if profile.cudagraph_sets else (1 if sizes else 0),
        scheduler=profile.scheduler.value,
        admission=profile.admission.value,
        overlap_scheduling=profile_overlap(profile)[0],
        overlap_off_with=profile_overlap(profile)[1],
    )


def profile_overlap(
    profile: EngineProfile,
) -> tuple[bool, tuple[Literal["pipeline_parallel", "attention_data_parallel"], ...]]:
    """Whether the profile's engine schedules iteration n + 1 while n runs, and the parallelism that turns it off."""
    scheduling = profile.overlap_scheduling
    if scheduling is None:
        return False, ()
    return bool(scheduling.value), _OVERLAP_OFF_WITH[scheduling.rule or ""]


# the parallelism under which an engine turns its overlap scheduling off (EngineProfile.overlap_scheduling.rule)
_OVERLAP_OFF_WITH: dict[str, tuple[Literal["pipeline_parallel", "attention_data_parallel"], ...]] = {
    "": (),
    "unless_pipeline_parallel": ("pipeline_parallel",),
    "unless_pipeline_or_data_parallel": ("pipeline_parallel", "attention_data_parallel"),
}


def _memory_fraction(profile: EngineProfile, smi_mib: int, tp: int, chunk: int, graph_bs: int) -> float | None:
    if profile.gpu_memory_utilization is not None:
        return float(profile.gpu_memory_utilization.value)
    if profile.free_gpu_memory_fraction is not None:
        return float(profile.free_gpu_memory_fraction.value)
    mfs = profile.mem_fraction_static
    if mfs is None:
        return None
    return sglang_mem_fraction(mfs, smi_mib, tp, chunk, graph_bs)


def sglang_mem_fraction(rule: Sourced, smi_mib: int, tp: int, chunk: int, graph_bs: int) -> float:
    """SGLang's default mem_fraction_static for a GPU of `smi_mib` MiB (nvidia-smi) at tensor-parallel size tp."""
    if rule.rule == "tp_table":
        return next(float(f) for min_tp, f in rule.table or () if tp >= min_tp)
    if rule.rule == "reserved_table":
        reserved_gib = 32.0
        for limit, base, per_gpu in rule.table or ():
            if limit is None or smi_mib < limit:
                reserved_gib = base + per_gpu * tp
                break
        return round((smi_mib - reserved_gib * 1024) / smi_mib, 3)
    reserved_mib = 512 + max(chunk, 2048) * 1.5 + graph_bs * 2 + tp / 8 * 1024
    if smi_mib > 60 * 1024:
        reserved_mib = max(reserved_mib, 10 * 1024)
    return round((smi_mib - reserved_mib) / smi_mib, 3)


def captured_sizes(
    profile: EngineProfile,
    defaults: EngineDefaults,
    max_num_seqs: int | None = None,
    budget: int | None = None,
    largest: int | None = None,
) -> tuple[int, ...]:
    """The batch sizes (vLLM: tokens of a step) the engine captures CUDA graphs for, with the request's settings:
    `largest` (ServingSpec.cuda_graph_max_batch_size: vLLM max_cudagraph_capture_size, SGLang --cuda-graph-max-bs,
    TensorRT-LLM cuda_graph_config.max_batch_size) fills the engine's own list up to it; without it vLLM sizes its
    captures from the request's max_num_seqs and token budget (the defaults' where it sets none), and the others
    keep their defaults."""
    rule = profile.cudagraph_sizes.value if profile.cudagraph_sizes else None
    if largest is not None:
        if profile.engine == "sglang":
            return _sglang_graph_sizes(largest)
        if rule == "trtllm":
            return _trtllm_graph_sizes(largest)
        return _cudagraph_sizes(rule, 0, 1 << 30, top=largest)
    if profile.engine != "vllm":
        return defaults.cudagraph_sizes
    return _cudagraph_sizes(rule, max_num_seqs or defaults.max_num_seqs, budget or defaults.token_budget)


def _cudagraph_sizes(rule: str | None, max_num_seqs: int, budget: int, top: int | None = None) -> tuple[int, ...]:
    """The batch sizes an engine captures CUDA graphs for (see each profile's cudagraph_sizes source); `top`: the
    largest capture size where the request sets it (vLLM max_cudagraph_capture_size), else min(2 · max_num_seqs,
    512)."""
    if rule is None:
        return ()
    if rule == "trtllm":
        return _trtllm_graph_sizes(128)
    top = top or min(2 * max_num_seqs, 512)
    if rule == "step8":
        sizes = [1, 2, 4, *range(8, top + 1, 8)]
    else:  # step8_then16
        sizes = [1, 2, 4, *range(8, min(256, top + 1), 8), *range(256, top + 1, 16)]
    return tuple(s for s in sizes if s <= budget)


def _trtllm_graph_sizes(max_bs: int) -> tuple[int, ...]:
    """tensorrt_llm/llmapi/llm_args.py CudaGraphConfig._generate_cuda_graph_batch_sizes (1.x, without padding):
    1..31, 32, 64, 128, the powers of two from 256 below max_batch_size, then max_batch_size (default 128)."""
    sizes = [*range(1, 32), 32, 64, 128, *(2**i for i in range(8, max(8, ceil(log2(max_bs)))))]
    kept = sorted({s for s in sizes if s <= max_bs})
    return tuple(kept if kept[-1] == max_bs else [*kept, max_bs])


def _sglang_graph_sizes(max_bs: int) -> tuple[int, ...]:
    """python/sglang/srt/server_args.py @ v0.5.3 _generate_cuda_graph_batch_sizes."""
    sizes = [1, 2, 4, 8, 12, *range(16, 257, 8), *range(272, 512, 16), *range(512, max_bs + 1, 32)]
    return tuple(s for s in sizes if s <= max_bs)
