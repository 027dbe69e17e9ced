"""Measured kernel latencies per (GPU, engine), read from the compact tables benchmarks/fit_kernels.py writes.

Each table (planner/calibration/kernels/<gpu>.<engine>.json) is fitted from aiconfigurator-core's measured kernel
data for that GPU and engine version and names its provenance (package, data version, device, files and their
sha256). It stores, per operator class, log(η) on a log-spaced grid of shapes, η = roofline / measured
(planner.calibration.rooflines), plus the kernel's latency floor. A latency is roofline / η, never below the floor.
Shapes outside a table's key set (a head count or MoE shape nobody measured) fall back to the nearest measured key
in log distance, scaled by the roofline ratio; what was used is named in the answer's `kernel_source`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from math import log, log2
from typing import Any

from planner.calibration.grid import LogGrid
from planner.calibration.rooflines import (
    ACT_BYTES,
    Roofline,
    allreduce_roofline_s,
    context_attention_roofline_s,
    elementwise_roofline_s,
    gemm_roofline_s,
    generation_attention_roofline_s,
    mla_roofline_s,
    moe_roofline_s,
)

__all__ = [
    "KernelTable",
    "KernelTables",
    "allreduce_wait_s",
    "available_tables",
    "load_kernel_tables",
    "step_overhead_s",
    "step_per_sequence_s",
]

US = 1e-6


_EFFICIENCY_MEMO_LIMIT = 1 << 16  # shapes remembered per table (a plan asks ~25,000 distinct ones of 170,000 lookups)


@dataclass(frozen=True, slots=True)
class KernelTable:
    """One operator class at one key (e.g. GEMM in fp8): a log-efficiency grid and its floor."""

    kernel: str
    grid: LogGrid
    floor_s: float
    key: tuple[float, ...] = ()
    # efficiency by shape: the grid is read-only, and a plan search or a load simulation asks the same shapes again
    _efficiency: dict[tuple[float, ...], float] = field(default_factory=dict, compare=False, repr=False)

    def latency_s(self, roofline_s: float, *coords: float) -> float:
        memo = self._efficiency
        eff = memo.get(coords)
        if eff is None:
            if len(memo) > _EFFICIENCY_MEMO_LIMIT:
                memo.clear()
            eff = memo[coords] = self.grid.exp_at(*coords)
        return max(roofline_s / eff, self.floor_s)


def _table(raw: dict[str, Any], key: tuple[float, ...] = (), kernel: str = "") -> KernelTable:
    grid = LogGrid.build(raw["axes"], raw["log_eff"])
    return KernelTable(raw.get("kernel", kernel), grid, raw["floor_us"] * US, key)


def _nearest(tables: dict[tuple[float, ...], KernelTable], key: tuple[float, ...]) -> KernelTable:
    """The table whose key is closest in Σ |log ratio| (exact keys first)."""
    if key in tables:
        return tables[key]

    def distance(k: tuple[float, ...]) -> float:
        return sum(abs(log(max(a, 1e-9) / max(b, 1e-9))) for a, b in zip(k, key, strict=True))

    return tables[min(tables, key=distance)]


@dataclass(frozen=True, eq=False)  # one instance per (gpu, engine), compared and hashed by identity
class KernelTables:
    """All fitted operator tables of one (GPU, engine) pair."""

    gpu: str
    engine: str
    engine_version: str
    device: str
    provenance: dict[str, Any]
    roofline: Roofline
    gemm: dict[str, KernelTable]
    context_attention: dict[tuple[str, str], dict[tuple[float, ...], KernelTable]]
    generation_attention: dict[tuple[str, str], dict[tuple[float, ...], KernelTable]]
    moe: dict[str, dict[tuple[float, ...], KernelTable]]
    mla_context: dict[str, dict[tuple[float, ...], KernelTable]]
    mla_generation: dict[str, dict[tuple[float, ...], KernelTable]]
    allreduce: dict[int, KernelTable]
    elementwise: KernelTable
    fit_report: dict[str, Any] = field(default_factory=dict)
    # NCCL all-gather, reduce-scatter and all-to-all by section ("allgather", "reducescatter", "alltoall") and GPU
    # count; empty for a table fitted before they were (the all-reduce ratio stands in, see allgather_s)
    collectives: dict[str, dict[int, KernelTable]] = field(default_factory=dict)
    # the engine's terms fitted end to end, not kernels (engine_terms.json): the wait per log2(ranks) at each
    # all-reduce, the fixed cost of an iteration outside its kernels, and its cost per sequence on this GPU's hosts
    allreduce_wait_s: float = 0.0
    step_overhead_s: float = 0.0
    step_per_sequence_s: float = 0.0
    eager_dense_layer_s: float = 0.0
    eager_moe_layer_s: float = 0.0
    # the nearest table per (section, key), picked once: the sections are read-only once loaded, so their ids are
    # stable for this instance's life
    _picked: dict[tuple[int, tuple[float, ...]], KernelTable] = field(default_factory=dict, repr=False)

    def _pick(self, tables: dict[tuple[float, ...], KernelTable], key: tuple[float, ...]) -> KernelTable:
        cached = self._picked.get((id(tables), key))
        if cached is None:
            cached = self._picked[(id(tables), key)] = _nearest(tables, key)
        return cached

    # GEMM --------------------------------------------------------------------------------------------------------
    def gemm_s(self, m: int, n: int, k: int, fmt: str) -> float:
        """An (M×K)·(K×N) GEMM with weights in `fmt`, from that format's measured table; a format the engine has
        no table for (weight-only int4 on Hopper, say) runs at the efficiency bf16's table measured at the same
        shape, applied to the format's own roofline (its weight bytes and compute dtype)."""
        if m <= 0 or n <= 0 or k <= 0:
            return 0.0
        table = self.gemm.get(fmt) or self.gemm["bf16"]
        return table.latency_s(gemm_roofline_s(m, n, k, fmt, self.roofline), m, n, k)

    # Attention ---------------------------------------------------------------------------------------------------
    def context_attention_s(self, b: int, s: int, n_h: int, n_kv: int, d: int, kv_dtype: str, window: int) -> float:
        """Prefill attention of b prompts of s new tokens each (no cached prefix)."""
        if b <= 0 or s <= 0:
            return 0.0
        tables = self._attention(self.context_attention, kv_dtype, window)
        t = self._pick(tables, (float(n_h), float(n_kv), float(d)))
        kv_b = _KV_BYTES[kv_dtype]
        roof = context_attention_roofline_s(b, s, n_h, n_kv, d, window, kv_b, self.roofline)
        return t.latency_s(roof, b, s)  # the roofline is the asked shape's: the nearest key lends its efficiency

    def generation_attention_s(self, b: int, s: int, n_h: int, n_kv: int, d: int, kv_dtype: str, window: int) -> float:
        """One decode step of b sequences attending to s cached tokens each."""
        if b <= 0:
            return 0.0
        tables = self._attention(self.generation_attention, kv_dtype, window)
        t = self._pick(tables, (float(n_kv), float(d)))
        kv_b = _KV_BYTES[kv_dtype]
        # the table was normalized with n_h = n_kv (decode time does not depend on query heads, see the fit)
        roof = generation_attention_roofline_s(b, max(s, 1), n_kv, n_kv, d, window, kv_b, self.roofline)
        return t.latency_s(roof, b, max(s, 1))

    @staticmethod
    def _attention(
        tables: dict[tuple[str, str], dict[tuple[float, ...], KernelTable]], kv_dtype: str, window: int
    ) -> dict[tuple[float, ...], KernelTable]:
        wkey = "0" if window <= 0 else str(window)
        for key in ((kv_dtype, wkey), ("bf16", wkey), (kv_dtype, "0"), ("bf16", "0")):
            if key in tables:
                return tables[key]
        return next(iter(tables.values()))

    # MLA -----------------------------------------------------------------------------------------------------------
    def mla_s(self, phase: str, b: int, s: int, n_h: int, kv_dtype: str) -> float:
        """MLA attention core ('context': prefill of b prompts of s tokens; 'generation': one decode step over s
        cached tokens) with n_h local heads, at DeepSeek-V3's dimensions (planner.calibration.rooflines). Where
        the engine has no measured MLA kernels on this GPU (A100, L40S), the MLA roofline runs at the efficiency
        the GPU's measured FlashAttention-class kernels reach at the same batch and length."""
        if b <= 0 or s <= 0:
            return 0.0
        section = self.mla_context if phase == "context" else self.mla_generation
        roof = mla_roofline_s(b, s, n_h, kv_dtype, phase, self.roofline)
        if not section:
            if phase == "context":
                mha = self._pick(self._attention(self.context_attention, kv_dtype, 0), (float(n_h), float(n_h), 128.0))
            else:
                mha = self._pick(self._attention(self.generation_attention, kv_dtype, 0), (1.0, 128.0))
            return mha.latency_s(roof, b, s)
        by_heads = section.get(kv_dtype) or section.get("bf16") or next(iter(section.values()))
        t = self._pick(by_heads, (float(n_h),))
        return t.latency_s(roof, b, s)

    # MoE ---------------------------------------------------------------------------------------------------------
    def moe_s(self, tokens: int, h: int, f: int, k: int, experts: int, tp: int, ep: int, fmt: str) -> float:
        """The routed experts of one MoE layer for `tokens` tokens (grouped GEMMs, routing, combine); a format
        without its own table takes bf16's (else any measured format's) efficiency on its own roofline."""
        if tokens <= 0:
            return 0.0
        by_shape = self.moe.get(fmt) or self.moe.get("bf16") or next(iter(self.moe.values()))
        t = self._pick(by_shape, (float(h), float(f), float(k), float(experts), float(tp), float(ep)))
        roof = moe_roofline_s(tokens, h, f, k, experts, tp, ep, fmt, self.roofline)
        return t.latency_s(roof, tokens)

    # Communication and memory-bound kernels ----------------------------------------------------------------------
    def allreduce_s(self, elements: int, n_gpus: int) -> float:
        """All-reduce of `elements` bf16 values across n_gpus (the engine's custom all-reduce where it has one),
        plus the engine's wait for the slowest rank, allreduce_wait_s · log2(n_gpus) (engine_terms.json)."""
        if n_gpus <= 1 or elements <= 0:
            return 0.0
        n = min(self.allreduce, key=lambda g: abs(log(g / n_gpus)))  # 2, 4 and 8 GPUs are measured
        kernel = self.allreduce[n].latency_s(allreduce_roofline_s(elements, n_gpus, self.roofline), elements)
        return kernel + self.allreduce_wait_s * log2(n_gpus) if self.allreduce_wait_s else kernel

    def allgather_s(self, elements: int, n_gpus: int) -> float:
        """All-gather into a buffer of `elements` bf16 values across n_gpus (each contributes elements / n_gpus), from
        the measured NCCL all_gather table, plus the engine's wait for the slowest rank as at an all-reduce.

        Formula: t = max(ρ_AG / η_AG(elements; n), floor_n) + allreduce_wait_s · log2(n), ρ_AG the ring roofline
          (n − 1)/n · elements · 2 B / link (_collective_roofline_s). Where the tables hold no all-gather (a table
          fitted before they did), AG_PER_ALLREDUCE × allreduce_s of the same buffer stands in.
        Source: aiconfigurator-core 0.12.0 systems/data/<gpu>/comm/nccl/<newest>/nccl_perf.parquet (op_name
          all_gather, fp16; 2, 4, 8 GPUs, 256 to 2^28 elements), fitted by benchmarks/fit_kernels.py. NCCL is what the
          engines run: vLLM's and SGLang's custom kernels are all-reduces only. The fallback ratio: NCCL all_gather /
          all_reduce of the same message on H100 SXM and H200 (2.29.2) 0.55-0.92, median ≈ 0.65.
        """
        return self._collective_s("allgather", AG_PER_ALLREDUCE, elements, n_gpus)

    def reducescatter_s(self, elements: int, n_gpus: int) -> float:
        """Reduce-scatter of a buffer of `elements` bf16 values across n_gpus (each keeps elements / n_gpus), timed
        like allgather_s from the measured NCCL reduce_scatter table (fallback: RS_PER_ALLREDUCE × the all-reduce;
        NCCL reduce_scatter / all_reduce 0.47-0.86 measured)."""
        return self._collective_s("reducescatter", RS_PER_ALLREDUCE, elements, n_gpus)

    def alltoall_s(self, elements: int, n_gpus: int) -> float:
        """All-to-all of a send buffer of `elements` bf16 values per GPU across n_gpus (elements / n_gpus to each
        peer), from the measured NCCL alltoall table, timed like allgather_s; 0 where no table was fitted.

        Formula: as allgather_s, ρ_A2A = (n − 1)/n · elements · 2 B / link.
        Source: aiconfigurator-core 0.12.0 nccl_perf.parquet op_name alltoall (fp16; 2, 4, 8 GPUs). Not in the step
          model: none of the three engines runs an all-to-all by default where the planner models expert parallelism
          (vllm/config/parallel.py all2all_backend "allgather_reducescatter"; TensorRT-LLM
          fused_moe/communication/communication_factory.py: all-gather + reduce-scatter unless MNNVL or DeepEP is
          enabled; SGLang --moe-a2a-backend none), and DeepEP's dispatch/combine kernels are not NCCL's alltoall.
        """
        return self._collective_s("alltoall", 0.0, elements, n_gpus)

    def _collective_s(self, section: str, per_allreduce: float, elements: int, n_gpus: int) -> float:
        if n_gpus <= 1 or elements <= 0:
            return 0.0
        tables = self.collectives.get(section)
        if not tables:
            return per_allreduce * self.allreduce_s(elements, n_gpus)
        n = min(tables, key=lambda g: abs(log(g / n_gpus)))  # 2, 4 and 8 GPUs are measured
        kernel = tables[n].latency_s(_collective_roofline_s(section, elements, n_gpus, self.roofline), elements)
        return kernel + self.allreduce_wait_s * log2(n_gpus) if self.allreduce_wait_s else kernel

    def elementwise_s(self, moved_bytes: float) -> float:
        """A memory-bound kernel moving `moved_bytes` (read + write)."""
        if moved_bytes <= 0:
            return 0.0
        roof = elementwise_roofline_s(moved_bytes, self.roofline)
        return self.elementwise.latency_s(roof, moved_bytes)


_KV_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "fp32": 4.0}
# all-gather and reduce-scatter as a share of the all-reduce of the same buffer, only where a table holds no measured
# all-gather / reduce-scatter (see KernelTables.allgather_s)
AG_PER_ALLREDUCE = 0.65
RS_PER_ALLREDUCE = 0.65
# bytes each GPU sends per byte of the buffer, × (n − 1)/n: NCCL's bus-bandwidth factors (nccl-tests
# doc/PERFORMANCE.md: all-reduce 2(n − 1)/n, all-gather, reduce-scatter and all-to-all (n − 1)/n)
_RING_PASSES = {"allreduce": 2, "allgather": 1, "reducescatter": 1, "alltoall": 1}
_COLLECTIVES = ("allgather", "reducescatter", "alltoall")  # the table sections beside "allreduce"


def _collective_roofline_s(section: str, elements: int, n_gpus: int, roof: Roofline) -> float:
    """A collective over a buffer of `elements` bf16 values at the GPU's link bandwidth: passes · (n − 1)/n · bytes.
    Source: nccl-tests doc/PERFORMANCE.md (bus bandwidth); all-reduce as rooflines.allreduce_roofline_s."""
    if section == "allreduce":
        return allreduce_roofline_s(elements, n_gpus, roof)
    return _RING_PASSES[section] * (n_gpus - 1) / n_gpus * elements * ACT_BYTES / roof.link_bytes_per_s


def _keyed(raw: dict[str, Any], fields: tuple[str, ...]) -> dict[tuple[float, ...], KernelTable]:
    out = {}
    for entry in raw["tables"]:
        key = tuple(float(entry[f]) for f in fields)
        out[key] = _table(entry, key, raw.get("kernel", ""))
    return out


def _parse(raw: dict[str, Any]) -> KernelTables:
    r = raw["roofline"]
    roof = Roofline(dict(r["flops_per_s"]), float(r["bytes_per_s"]), float(r["link_bytes_per_s"]))

    def attention(
        section: dict[str, Any], fields: tuple[str, ...]
    ) -> dict[tuple[str, str], dict[tuple[float, ...], KernelTable]]:
        return {(key.split("/")[0], key.split("/")[1]): _keyed(v, fields) for key, v in section.items()}

    return KernelTables(
        gpu=raw["gpu"],
        engine=raw["engine"],
        engine_version=raw["engine_version"],
        device=raw["device"],
        provenance=raw["provenance"],
        roofline=roof,
        gemm={fmt: _table(v) for fmt, v in raw["gemm"].items()},
        context_attention=attention(raw["context_attention"], ("n_h", "n_kv", "d")),
        generation_attention=attention(raw["generation_attention"], ("n_kv", "d")),
        moe={fmt: _keyed(v, ("h", "f", "k", "experts", "tp", "ep")) for fmt, v in raw["moe"].items()},
        mla_context={kv: _keyed(v, ("n_h",)) for kv, v in raw.get("mla_context", {}).items() if kv != "source"},
        mla_generation={kv: _keyed(v, ("n_h",)) for kv, v in raw.get("mla_generation", {}).items() if kv != "source"},
        allreduce={int(n): _table(v) for n, v in raw["allreduce"].items()},
        elementwise=_table(raw["elementwise"]),
        fit_report=raw.get("fit_report", {}),
        collectives={
            section: {int(n): _table(v) for n, v in raw[section].items()} for section in _COLLECTIVES if section in raw
        },
    )


_PACKAGE = "planner.calibration"
_DIR = "kernels"


@lru_cache(maxsize=1)
def available_tables() -> frozenset[tuple[str, str]]:
    """(gpu id, engine) pairs that have a fitted kernel table."""
    root = resources.files(_PACKAGE).joinpath(_DIR)
    pairs = set()
    for entry in root.iterdir():
        name = entry.name
        if name.endswith(".json"):
            gpu, engine = name[: -len(".json")].split(".", 1)
            pairs.add((gpu, engine))
    return frozenset(pairs)


# (wait, step, per sequence by GPU, eager host time per (dense, MoE) layer)
EngineTerms = tuple[float, float, dict[str, float], tuple[float, float]]


@lru_cache(maxsize=1)
def _engine_terms() -> dict[str, EngineTerms]:
    raw = json.loads(resources.files(_PACKAGE).joinpath("engine_terms.json").read_text(encoding="utf-8"))
    return {
        e: (
            float(fit["wait_s_per_log2_ranks"]),
            float(fit["step_s"]),
            {gpu: float(s) for gpu, s in fit.get("per_sequence_s_by_gpu", {}).items()},
            (float(fit.get("eager_s_per_dense_layer", 0.0)), float(fit.get("eager_s_per_moe_layer", 0.0))),
        )
        for e, fit in raw["engines"].items()
    }


_NO_TERMS: EngineTerms = (0.0, 0.0, {}, (0.0, 0.0))


def allreduce_wait_s(engine: str) -> float:
    """The engine's wait per log2(ranks) at each all-reduce (0 where none was shipped): the barrier of a collective
    waits for the slowest rank, which a kernel microbenchmark (ranks already in step) does not see.

    Source: planner/calibration/engine_terms.json, written by benchmarks/fit_engine_terms.py: fitted on the silicon
    sample's end-to-end TPOT and cross-validated leaving one model out (one of the terms not fitted on kernels).
    """
    return _engine_terms().get(engine, _NO_TERMS)[0]


def step_overhead_s(engine: str) -> float:
    """The engine's fixed cost per iteration outside its kernels (0 where none was shipped): scheduling, input
    preparation, sampling and output processing that the GPU does not overlap, and the gaps between launches.

    Source: planner/calibration/engine_terms.json, as allreduce_wait_s (no kernel table measures it).
    """
    return _engine_terms().get(engine, _NO_TERMS)[1]


def step_per_sequence_s(engine: str, gpu: str) -> float:
    """The engine's cost per scheduled sequence per iteration outside its kernels, as measured on `gpu`'s hosts (0
    where none was shipped, and on every GPU without silicon rows to fit it): the scheduler's, the input
    preparation's and the output processing's work for each request, which grows with the batch and which the GPU
    does not overlap. A host cost, so it is fitted per (GPU, engine): each GPU's rows in the silicon sample come from
    one cluster.

    Source: planner/calibration/engine_terms.json, as allreduce_wait_s (no kernel table measures it).
    """
    return _engine_terms().get(engine, _NO_TERMS)[2].get(gpu, 0.0)


def eager_layer_s(engine: str) -> tuple[float, float]:
    """The host time per dense and per MoE layer of an iteration the engine runs without CUDA graphs ((0, 0) where
    none was shipped): its kernels are launched one by one from Python (modules, custom ops, attention metadata; a
    MoE layer adds the router, top-k, token alignment and the grouped GEMMs' launches), so a step whose kernels are
    short takes the launches' time instead, max(kernels, L_dense · dense + L_moe · moe). No kernel table sees it:
    the tables time kernels back to back (aiconfigurator-core's collectors replay them under CUDA graphs or in tight
    loops).

    Source: planner/calibration/engine_terms.json, as allreduce_wait_s, fitted on end-to-end TTFT.
    """
    return _engine_terms().get(engine, _NO_TERMS)[3]


@lru_cache(maxsize=64)
def load_kernel_tables(gpu: str, engine: str, engine_terms: bool = True) -> KernelTables | None:
    """The fitted tables of (gpu, engine), or None when that pair was never measured. `engine_terms`: the engine's
    all-reduce wait (allreduce_wait_s), step overhead (step_overhead_s) and cost per sequence on this GPU
    (step_per_sequence_s) are added; False where the tables stand in for another engine's kernels."""
    if (gpu, engine) not in available_tables():
        return None
    path = resources.files(_PACKAGE).joinpath(_DIR, f"{gpu}.{engine}.json")
    tables = _parse(json.loads(path.read_text(encoding="utf-8")))
    if not engine_terms:
        return tables
    eager_dense, eager_moe = eager_layer_s(engine)
    return replace(
        tables,
        allreduce_wait_s=allreduce_wait_s(engine),
        step_overhead_s=step_overhead_s(engine),
        step_per_sequence_s=step_per_sequence_s(engine, gpu),
        eager_dense_layer_s=eager_dense,
        eager_moe_layer_s=eager_moe,
    )
