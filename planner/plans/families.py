"""Candidate families — GPU × engine × weight and KV precision × TP × PP × EP × data-parallel attention — and the
memory screen that prunes whole families before any latency is computed.

A family fixes everything that decides memory; its candidates vary only max_num_seqs and the replica count. So the
engine's memory model runs once per family (through planner.serving.engine_memory, exactly as an estimate does),
and a family that does not fit rejects all its candidates at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from planner.calibration.kernels import load_kernel_tables
from planner.gpu_spec import GpuSpec
from planner.model.kv_cache import kv_split
from planner.model.precision import DType, WeightFormat, dtype_bytes
from planner.model.spec import ModelSpec
from planner.plans.spec import PlanConstraints
from planner.serving.context_parallel import full_gqa_dcp
from planner.serving.engine_memory import engine_memory
from planner.serving.engines import EngineDefaults, resolve_profile
from planner.serving.inference import resolve_engine
from planner.serving.pipeline import pipeline_stages
from planner.serving.spec import Engine, ServingSpec
from planner.serving.step_time import kernel_format

__all__ = [
    "Family",
    "FamilyMemory",
    "attention_dp_degrees",
    "context_parallel_degrees",
    "enumerate_families",
    "family_memory",
    "layout_problem",
]

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class Family:
    """Everything about a replica but its batch limit: what sizes its memory and its step time."""

    gpu: GpuSpec
    engine: Engine
    weight_format: WeightFormat
    kv_dtype: DType
    tp: int
    pp: int
    ep: int
    dp: int = 1  # data-parallel attention ranks over the tp GPUs (planner.serving.spec attention_data_parallel)
    dcp: int = 1  # GPUs striping an MLA latent or GQA KV head copies (serving.spec decode_context_parallel)

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def label(self) -> str:
        attention = f" DP{self.dp}" if self.dp > 1 else (f" DCP{self.dcp}" if self.dcp > 1 else "")
        return (
            f"{self.gpu.id} {self.engine.value} {self.weight_format.value}/kv-{self.kv_dtype.value} "
            f"TP{self.tp} PP{self.pp} EP{self.ep}{attention}"
        )

    def serving(self, **fields: object) -> ServingSpec:
        """The ServingSpec of one replica of this family (engine defaults not yet filled)."""
        return ServingSpec.model_validate(
            {
                "engine": self.engine,
                "weight_format": self.weight_format,
                "kv_cache_dtype": self.kv_dtype,
                "tensor_parallel": self.tp,
                "pipeline_parallel": self.pp,
                "expert_parallel": self.ep,
                "attention_data_parallel": self.dp,
                "decode_context_parallel": self.dcp,
                **fields,
            }
        )


@dataclass(frozen=True, slots=True)
class FamilyMemory:
    """The memory screen's verdict on a family: its KV pool in tokens (the smallest stage's), or why it fails."""

    fits: bool
    pool_tokens: int
    reason: str | None  # a Rejection code
    detail: str
    defaults: EngineDefaults | None = None
    weight_bytes: int = 0  # per GPU, the fullest stage


def layout_problem(spec: ModelSpec, fam: Family, constraints: PlanConstraints) -> tuple[str, str] | None:
    """(rejection, detail) when the layout cannot run this model or these limits, else None."""
    if fam.gpus_per_replica > constraints.gpus_per_node:
        return "not_divisible", f"TP·PP = {fam.gpus_per_replica} exceeds gpus_per_node = {constraints.gpus_per_node}"
    if fam.gpus_per_replica > constraints.max_gpus:
        return "exceeds_max_gpus", f"one replica needs {fam.gpus_per_replica} GPUs > max_gpus {constraints.max_gpus}"
    n_kv, attn_tp = spec.kv_heads, fam.tp // fam.dp  # under data-parallel attention a rank splits the heads
    if spec.num_heads % attn_tp or (spec.mla is None and n_kv % attn_tp and attn_tp % n_kv):
        return "not_divisible", f"attention TP {attn_tp} does not split {spec.num_heads} heads / {n_kv} KV heads"
    if fam.pp > spec.num_layers:
        return "not_divisible", f"PP {fam.pp} exceeds {spec.num_layers} layers"
    tables = load_kernel_tables(fam.gpu.id, fam.engine.value)
    if tables is None:
        return "precision_not_measured", f"no kernel tables for {fam.gpu.id} with {fam.engine.value}"
    fmt = kernel_format(fam.weight_format.value)
    if fmt not in tables.gemm:
        return "precision_not_measured", f"no measured {fmt} GEMMs for {fam.gpu.id}/{fam.engine.value}"
    if spec.moe is not None and fmt not in tables.moe:
        return "precision_not_measured", f"no measured {fmt} MoE kernels for {fam.gpu.id}/{fam.engine.value}"
    return None


# Engines that run data-parallel attention: SGLang --enable-dp-attention, vLLM --data-parallel-size with expert
# parallelism, TensorRT-LLM enable_attention_dp (planner.serving.spec attention_data_parallel)
_DP_ENGINES = (Engine.SGLANG, Engine.VLLM, Engine.TRTLLM)


def attention_dp_degrees(spec: ModelSpec, engine: Engine, tp: int, pp: int, c: PlanConstraints) -> tuple[int, ...]:
    """Data-parallel attention degrees a family may take: 1, and DP = TP (every GPU its own attention rank, the
    deployment the engines' MoE recipes use, and the only one TensorRT-LLM has) for MoE models on a DP engine with
    PP 1 (memplan does not model DP attention with pipeline stages) when constraints.attention_data_parallel is on."""
    if spec.moe is None or not c.attention_data_parallel or engine not in _DP_ENGINES or tp == 1 or pp > 1:
        return (1,)
    return (1, tp)


def context_parallel_degrees(
    spec: ModelSpec, engine: Engine, tp: int, pp: int, dp: int, c: PlanConstraints
) -> tuple[int, ...]:
    """Decode-context-parallel degrees a family may take: 1, and on vLLM with TP > 1, PP 1 and no data-parallel
    attention, when constraints.decode_context_parallel is on, the degree that removes every copy of the cache: DCP =
    TP for an MLA latent (whole on every GPU of the replica), DCP = TP // n_kv for GQA/MQA KV heads that TP
    replicates, where vLLM runs it (planner.serving.context_parallel; the newest vLLM profile, which plans run)."""
    if not c.decode_context_parallel or engine is not Engine.VLLM or tp == 1 or pp > 1 or dp > 1:
        return (1,)
    if spec.mla is not None:
        return (1, tp)
    dcp = full_gqa_dcp(spec, tp, resolve_profile(engine.value, None))
    return (1, dcp) if dcp > 1 else (1,)


def enumerate_families(spec: ModelSpec, gpus: tuple[GpuSpec, ...], c: PlanConstraints) -> Iterator[Family]:
    """Every family the constraints allow: EP = 1, and EP = TP for MoE models when expert_parallel is on; each with
    and without data-parallel attention (attention_dp_degrees), and without it with and without decode context
    parallelism (context_parallel_degrees)."""
    for gpu in gpus:
        for engine in c.engines:
            for fmt in c.weight_formats:
                for kv in c.kv_cache_dtypes:
                    for tp in c.tensor_parallel:
                        for pp in c.pipeline_parallel:
                            eps = (1, tp) if spec.moe is not None and c.expert_parallel and tp > 1 else (1,)
                            for ep in eps:
                                for dp in attention_dp_degrees(spec, engine, tp, pp, c):
                                    for dcp in context_parallel_degrees(spec, engine, tp, pp, dp, c):
                                        yield Family(gpu, engine, fmt, kv, tp, pp, ep, dp, dcp)


def family_memory(spec: ModelSpec, fam: Family, longest_request: int) -> FamilyMemory:
    """Run the engine's memory model for the family (every pipeline stage; the smallest pool counts) with the engine's
    default max_num_seqs, and check that the pool holds the longest request. Under data-parallel attention the pool
    is one attention rank's (its GPUs hold only that rank's sequences).

    Source: planner.serving.engine_memory (the same terms /v1/estimates/inference reports); vLLM keeps the smallest
      stage's block count (planner.serving.pipeline.pipeline_kv_tokens).
    Assumes: max_num_seqs moves the vLLM sampler warm-up by rows·V·c bytes; the plan's confirming estimate uses the
      candidate's own max_num_seqs.
    """
    bf16 = fam.serving(kv_cache_dtype=DType.BF16)  # the non-KV terms do not depend on the KV dtype
    mem = _pool_bytes(spec, bf16, fam.gpu)
    if mem.pools is None:
        detail = (
            f"{mem.non_kv / GIB:.1f} GiB per GPU of weights ({mem.weights / GIB:.1f} GiB), activations and overhead; "
            f"the engine's budget is {mem.budget / GIB:.1f} GiB"
        )
        return FamilyMemory(False, 0, "does_not_fit", detail, mem.defaults, mem.weights)
    b_kv, block = dtype_bytes(fam.kv_dtype), mem.defaults.block_size
    tokens = min(
        (pool // (block * _kv_per_token(st, b_kv, bf16))) * block for pool, st in zip(mem.pools, mem.specs, strict=True)
    )
    if tokens < longest_request:
        detail = f"the KV pool holds {tokens} tokens, the longest request needs {longest_request}"
        return FamilyMemory(False, tokens, "kv_pool_too_small", detail, mem.defaults, mem.weights)
    return FamilyMemory(True, tokens, None, "", mem.defaults, mem.weights)


def _kv_per_token(spec: ModelSpec, b_kv: int, serving: ServingSpec) -> int:
    split = kv_split(spec, b_kv, serving.resolved_mla_layout, serving.attention_tensor_parallel)
    return max(1, split.full + split.sliding)


@dataclass(frozen=True, slots=True)
class PoolBytes:
    """The engine's memory model over a replica's stages."""

    pools: tuple[int, ...] | None  # KV pool bytes of each stage; None when a stage does not fit
    non_kv: int  # the fullest stage's weights + activations + overhead, per GPU
    weights: int  # that stage's weights
    budget: int
    defaults: EngineDefaults
    specs: tuple[ModelSpec, ...]


_POOLS: dict[tuple[ModelSpec, ServingSpec, str], PoolBytes] = {}  # GpuSpec holds dicts: keyed by its id
_POOLS_LIMIT = 8192


def _pool_bytes(spec: ModelSpec, serving: ServingSpec, gpu: GpuSpec) -> PoolBytes:
    key = (spec, serving, gpu.model_dump_json())
    hit = _POOLS.get(key)
    if hit is None:
        if len(_POOLS) > _POOLS_LIMIT:
            _POOLS.clear()
        hit = _POOLS[key] = _pool_bytes_uncached(spec, serving, gpu)
    return hit


def _pool_bytes_uncached(spec: ModelSpec, serving: ServingSpec, gpu: GpuSpec) -> PoolBytes:
    """(KV pool bytes of each stage, or None when a stage does not fit; fullest stage's non-KV bytes; defaults)."""
    resolved, profile, defaults = resolve_engine(serving, gpu)
    stages = pipeline_stages(spec, serving.pipeline_parallel)
    pools, worst, weights, budget = [], 0, 0, 0
    for st in stages:
        mem = engine_memory(st.spec, resolved, gpu, profile, defaults)
        non_kv = sum(t.bytes for t in mem.non_kv)
        if non_kv > worst:
            worst, budget = non_kv, mem.budget_bytes
            weights = sum(t.bytes for t in mem.non_kv if t.name.startswith("weights/"))
        if non_kv >= mem.budget_bytes or mem.kv_pool_bytes <= 0:
            return PoolBytes(None, worst, weights, mem.budget_bytes, defaults, ())
        pools.append(mem.kv_pool_bytes)
    return PoolBytes(tuple(pools), worst, weights, budget, defaults, tuple(st.spec for st in stages))
