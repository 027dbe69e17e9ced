"""One family's candidates (max_num_seqs × replicas) scored by the static model: which meet the SLO, which miss it
and by how much, and the family's points for the frontier.

Within a family, more replicas lower each replica's load (better latency) and raise the cost, so for each
max_num_seqs the scan walks the replica count upward to the first one that meets the SLO; the rest are dominated
(they cost more for the same family and batch limit).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from math import ceil

from planner.model.precision import DType
from planner.model.spec import ModelSpec
from planner.plans.families import Family, FamilyMemory, family_memory, layout_problem
from planner.plans.spec import PlanConstraints, SLOSpec, WorkloadSpec
from planner.plans.static import (
    BatchCore,
    StaticLatency,
    batch_core,
    closed_loop_at,
    mean_core,
    open_loop,
    prefill_alone_s,
)
from planner.serving.load import rank_limit
from planner.serving.pipeline import PipelinedStepModel, replica_step_model
from planner.serving.scheduler import StepTimer
from planner.serving.step_time import StepModel

__all__ = ["Candidate", "FamilyScan", "cost_per_million", "family_timer", "judge", "quantile", "scan_family"]

STATIC_TOLERANCE = 0.10  # the static model may be this much over the SLO and still go to the simulation
SECONDS_PER_HOUR = 3600
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def quantile(slo: SLOSpec) -> float:
    return QUANTILES[slo.percentile]


def cost_per_million(gpus: int, usd_per_gpu_hour: float, output_tokens_per_s: float) -> float:
    """USD per million output tokens. Formula: GPUs·price / (tokens/s · 3600) · 10⁶."""
    if output_tokens_per_s <= 0:
        return float("inf")
    return gpus * usd_per_gpu_hour / (output_tokens_per_s * SECONDS_PER_HOUR) * 1e6


@dataclass(frozen=True, slots=True)
class Candidate:
    """One point of the search: a family at a batch limit with a number of replicas, scored statically."""

    family: Family
    max_num_seqs: int
    replicas: int
    clients: int | None  # per replica (closed loop)
    rate: float | None  # per replica (open loop)
    static: StaticLatency
    output_tokens_per_s: float  # all replicas
    cost_per_million: float

    @property
    def num_gpus(self) -> int:
        return self.replicas * self.family.gpus_per_replica


@dataclass
class FamilyScan:
    """What the scan of one family found."""

    family: Family
    candidates: int
    reasons: Counter[str] = field(default_factory=Counter)
    survivors: list[Candidate] = field(default_factory=list)  # the cheapest passing replica count per max_num_seqs
    closest: str = ""
    closest_ratio: float = float("inf")
    memory: FamilyMemory | None = None
    timer: StepTimer | None = None
    frontier: list[tuple[int, StaticLatency]] = field(default_factory=list)  # (clients per replica, latency)
    pruned: bool = False  # rejected before any latency was computed
    seen: set[tuple[int, int]] = field(default_factory=set)  # (replicas, batch the load reaches) already scored


_TIMERS: dict[tuple[ModelSpec, str], StepTimer] = {}
_TIMERS_LIMIT = 4096  # plans revisit the same families; step_time's own cache holds 256 shapes


def family_timer(spec: ModelSpec, fam: Family) -> StepTimer:
    """The family's replica step timer, kept across plan requests. The KV dtype changes only which attention kernels
    a step looks up, so a family with an fp8 cache reuses its bf16 twin's per-token grids (same GEMMs, MoE,
    collectives and memory-bound kernels) with kv_dtype swapped."""
    key = (spec, fam.label)
    timer = _TIMERS.get(key)
    if timer is None:
        if len(_TIMERS) > _TIMERS_LIMIT:
            _TIMERS.clear()
        if fam.kv_dtype is DType.BF16:
            timer = replica_step_model(spec, fam.serving(), fam.gpu.id)
        else:
            timer = _with_kv(family_timer(spec, replace(fam, kv_dtype=DType.BF16)), fam.kv_dtype)
        _TIMERS[key] = timer
    return timer


def _with_kv(timer: StepTimer, kv: DType) -> StepTimer:
    kv_kernel = "fp8" if kv is DType.FP8 else "bf16"  # as planner.serving.load.step_model_for maps it
    if isinstance(timer, StepModel):
        return timer.with_kv_dtype(kv_kernel)
    if isinstance(timer, PipelinedStepModel):
        stages = tuple(st.with_kv_dtype(kv_kernel) for st in timer.stages)
        return PipelinedStepModel(stages, timer.hidden)
    return timer


def judge(st: StaticLatency, slo: SLOSpec, tolerance: float, ttft_offset_s: float = 0.0) -> tuple[str | None, float]:
    """(rejection or None, worst ratio of predicted to SLO) of a static estimate at the SLO's percentile;
    `ttft_offset_s` adds what the prompt at that percentile takes beyond the mean prompt."""
    if st.overloaded:
        return "overloaded", float("inf")
    worst, reason = 0.0, None
    limit = 1 + tolerance
    if slo.ttft_ms is not None:
        ratio = (st.ttft_at(quantile(slo)) + ttft_offset_s) * 1e3 / slo.ttft_ms
        worst = max(worst, ratio)
        if ratio > limit:
            reason = "misses_ttft"
    tpot_limit = slo.tpot_limit_ms
    if tpot_limit is not None:
        ratio = st.tpot_at(quantile(slo)) * 1e3 / tpot_limit
        if ratio > limit and ratio >= worst:
            reason = "misses_tpot"
        worst = max(worst, ratio)
    return reason, worst


def _describe(c: Candidate, slo: SLOSpec) -> str:
    p = slo.percentile
    parts = [f"max_num_seqs {c.max_num_seqs} × {c.replicas} replicas"]
    if slo.ttft_ms is not None:
        parts.append(f"TTFT {p} {c.static.ttft_at(quantile(slo)) * 1e3:.0f} ms vs {slo.ttft_ms:g} ms")
    if slo.tpot_limit_ms is not None:
        parts.append(f"TPOT {p} {c.static.tpot_at(quantile(slo)) * 1e3:.1f} ms vs {slo.tpot_limit_ms:g} ms")
    return ", ".join(parts) + " (static)"


def scan_family(
    spec: ModelSpec,
    fam: Family,
    workload: WorkloadSpec,
    slo: SLOSpec,
    constraints: PlanConstraints,
    usd_per_gpu_hour: float,
) -> FamilyScan:
    """Prune the family by layout and memory, then score its candidates by the static model."""
    r_max = max(0, constraints.max_gpus // fam.gpus_per_replica)
    n = len(constraints.max_num_seqs) * max(1, r_max)
    scan = FamilyScan(fam, n)
    problem = layout_problem(spec, fam, constraints)
    if problem is not None:
        scan.reasons[problem[0]] += n
        scan.closest, scan.pruned = problem[1], True
        return scan
    memory = scan.memory = family_memory(spec, fam, workload.longest_request)
    if not memory.fits or memory.defaults is None:
        scan.reasons[memory.reason or "does_not_fit"] += n
        scan.closest, scan.pruned = memory.detail, True
        return scan
    timer = scan.timer = family_timer(spec, fam)
    prompt, output = round(workload.mean_input), max(2, round(workload.mean_output))
    serving = fam.serving()
    budget = rank_limit(serving, memory.defaults.token_budget)  # one attention rank's (= the replica's without DP)
    floor_ms = prefill_alone_s(timer, prompt, budget) * 1e3
    if slo.ttft_ms is not None and floor_ms > slo.ttft_ms:
        scan.reasons["misses_ttft"] += n
        scan.closest = f"the prompt's prefill alone takes {floor_ms:.0f} ms > TTFT {slo.ttft_ms:g} ms"
        return scan
    kv_slots = max(1, memory.pool_tokens // (prompt + output))  # per attention rank
    cores = _Cores(timer, workload.input_buckets(), output, budget, memory.defaults.scheduler == "prefill_first")
    cores.ranks = fam.dp
    long_prompt = workload.input_at(quantile(slo))
    if long_prompt > prompt:  # TTFT at the percentile is set by the prompts at that percentile of the lengths
        cores.ttft_offset_s = prefill_alone_s(timer, long_prompt, budget) - prefill_alone_s(timer, prompt, budget)
    seen: set[int] = set()
    for mns in sorted(constraints.max_num_seqs):
        slots = min(rank_limit(serving, mns), kv_slots)  # sequences one attention rank runs at once
        if slots in seen:  # the KV pool caps this batch limit at a smaller one already scanned: same candidates
            scan.reasons["dominated"] += r_max
            continue
        seen.add(slots)
        scan.frontier.append((slots * fam.dp, cores.replica(cores.closed(slots, slots))))
        _scan_batch_limit(scan, cores, mns, slots, r_max, workload, slo, usd_per_gpu_hour)
    return scan


class _Cores:
    """The family's BatchCores by running batch (of one attention rank), each computed once."""

    def __init__(
        self,
        timer: StepTimer,
        prompts: tuple[tuple[int, float], ...],
        output: int,
        budget: int,
        prefill_first: bool,
    ) -> None:
        self.timer, self.prompts, self.output, self.budget = timer, prompts, output, budget
        self.prefill_first = prefill_first
        self.ttft_offset_s = 0.0
        self.ranks = 1  # data-parallel attention ranks of a replica, each serving its share of the load
        self.cores: dict[int, BatchCore] = {}
        self.open: dict[tuple[float, int], StaticLatency] = {}

    def at(self, batch: int) -> BatchCore:
        core = self.cores.get(batch)
        if core is None:
            cores = [
                (batch_core(self.timer, batch, p, self.output, self.budget, self.prefill_first), w)
                for p, w in self.prompts
            ]
            core = self.cores[batch] = mean_core(cores)
        return core

    def closed(self, clients: int, slots: int) -> StaticLatency:
        return closed_loop_at(self.at(max(1, min(clients, slots))), clients, self.output)

    def replica(self, rank: StaticLatency) -> StaticLatency:
        """A replica of `ranks` attention ranks, each in the state of `rank`: the same latencies, `ranks` times the
        tokens/s and the sequences (planner.serving.load._rank_load: the ranks are symmetric and the busiest one's
        steps, which time the experts over every rank's tokens, pace them all)."""
        if self.ranks == 1:
            return rank
        return replace(
            rank, output_tokens_per_s=rank.output_tokens_per_s * self.ranks, running=rank.running * self.ranks
        )

    def open_loop(self, rate: float, slots: int) -> StaticLatency:
        key = (rate, slots)
        st = self.open.get(key)
        if st is None:
            st = self.open[key] = open_loop(self.at, rate, slots, self.output)
        return st


def _evaluate(
    scan: FamilyScan,
    cores: _Cores,
    mns: int,
    slots: int,
    replicas: int,
    workload: WorkloadSpec,
    slo: SLOSpec,
    price: float,
) -> tuple[Candidate, str | None, float, int]:
    """One candidate scored: (candidate, rejection or None, worst ratio to the SLO, batch the load reaches)."""
    fam, rate = scan.family, workload.rate
    if rate is not None:
        st = cores.replica(cores.open_loop(rate / replicas / fam.dp, slots))
        served = rate * workload.mean_output if not st.overloaded else 0.0
        clients, per_rate, rank_clients = None, rate / replicas, 0
    else:
        clients = ceil((workload.concurrency or 1) / replicas)
        rank_clients = ceil(clients / fam.dp)  # the busiest attention rank's share
        st = cores.replica(cores.closed(rank_clients, slots))
        served, per_rate = replicas * st.output_tokens_per_s, None
    gpus = replicas * fam.gpus_per_replica
    cand = Candidate(fam, mns, replicas, clients, per_rate, st, served, cost_per_million(gpus, price, served))
    reason, ratio = judge(st, slo, STATIC_TOLERANCE, cores.ttft_offset_s)
    floor = workload.min_output_tokens_per_s
    if reason is None and served < floor:
        reason, ratio = "below_tokens_per_day", floor / max(served, 1e-9)
    rank_running = st.running / fam.dp
    reached = min(slots, rank_clients) if clients is not None else (slots if rank_running * 1.25 > slots else 0)
    return cand, reason, ratio, reached


def _scan_batch_limit(
    scan: FamilyScan,
    cores: _Cores,
    mns: int,
    slots: int,
    r_max: int,
    workload: WorkloadSpec,
    slo: SLOSpec,
    price: float,
) -> None:
    """The fewest replicas that meet the SLO at this batch limit, found by galloping (1, 2, 4, …) and bisection:
    more replicas only lower each one's load. Every replica count is counted once: the ones below the fewest that
    pass with the reason of the nearest scored count below them (the same load or a heavier one), the ones above as
    dominated (the same family, dearer)."""
    scored: dict[int, tuple[Candidate, str | None, float, int]] = {}

    def at(r: int) -> tuple[Candidate, str | None, float, int]:
        if r not in scored:
            scored[r] = _evaluate(scan, cores, mns, slots, r, workload, slo, price)
        return scored[r]

    failing, passing, r = 0, 0, 1
    while r <= r_max and not passing:
        if at(r)[1] is None:
            passing = r
        else:
            failing, r = r, r * 2
    if not passing and failing < r_max and at(r_max)[1] is None:
        passing = r_max
    if passing:
        lo, hi = failing + 1, passing - 1  # the first passing count lies in (failing, passing]
        while lo <= hi:
            mid = (lo + hi) // 2
            if at(mid)[1] is None:
                passing, hi = mid, mid - 1
            else:
                failing, lo = mid, mid + 1
    _count_failures(scan, scored, (passing - 1) if passing else r_max, slo)
    if not passing:
        return
    cand, _, _, reached = scored[passing]
    scan.reasons["dominated"] += r_max - passing
    if (passing, reached) in scan.seen:  # a smaller batch limit already passes here: the same candidate, dominated
        scan.reasons["dominated"] += 1
        return
    scan.seen.add((passing, reached))
    scan.survivors.append(cand)


def _count_failures(
    scan: FamilyScan, scored: dict[int, tuple[Candidate, str | None, float, int]], upto: int, slo: SLOSpec
) -> None:
    """Count replica counts 1…upto, each by the reason of the nearest scored failing count at or below it."""
    failing = sorted((r, v) for r, v in scored.items() if v[1] is not None and r <= upto)
    for i, (r, (cand, reason, ratio, _)) in enumerate(failing):
        end = failing[i + 1][0] - 1 if i + 1 < len(failing) else upto
        assert reason is not None
        scan.reasons[reason] += end - r + 1
        if ratio < scan.closest_ratio:
            scan.closest_ratio, scan.closest = ratio, _describe(cand, slo)
