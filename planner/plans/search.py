"""The plan search: enumerate the families, prune by memory, score every candidate by the static model, simulate the
cheapest few, and answer the ranked plans, the frontier and every rejected family's reasons."""

from __future__ import annotations

import heapq
from collections import Counter
from itertools import count
from typing import cast

from planner._gc import collector_paused
from planner.calibration.kernels import available_tables
from planner.catalog import Catalog
from planner.errors import SpecError
from planner.gpu_spec import GpuSpec
from planner.plans.disagg import disaggregated_plans
from planner.plans.families import enumerate_families
from planner.plans.frontier import pareto_frontier
from planner.plans.prices import GpuPrice, resolve_prices
from planner.plans.result import (
    REJECTION_TEXT,
    Headroom,
    Plan,
    PlanResult,
    PlanSummary,
    Pool,
    RejectedFamily,
    Rejection,
)
from planner.plans.scan import Candidate, FamilyScan, cost_per_million, quantile, scan_family
from planner.plans.spec import PlanRequest
from planner.refs import resolve_gpu, resolve_model
from planner.serving.inference import InferenceEstimate, InferenceRequest, estimate_inference
from planner.serving.load import MIN_REQUEST_RATE, LengthSample, LoadEstimate, LoadSpec

__all__ = ["plan_serving"]

RETRIES_PER_FAMILY = 2  # a simulated miss tries the same family with one more replica, this many times
# Requests per confirming simulation: 2 per client (the staggered closed loop is steady from its first cycle), at
# least 64 and at most 512 (a 512-client replica then sends one each); Poisson loads send LoadSpec's 512.
MAX_REQUESTS_PER_SIMULATION = 512
MIN_REQUESTS_PER_SIMULATION = 64
REQUESTS_PER_CLIENT = 2


def _gpus(request: PlanRequest, catalog: Catalog) -> tuple[GpuSpec, ...]:
    ids = request.constraints.gpus
    if ids is None:
        measured = sorted({gpu for gpu, _ in available_tables()})
        return tuple(catalog.gpu(g) for g in measured)
    return tuple(resolve_gpu(g, catalog, field="constraints") for g in ids)


def plan_serving(request: PlanRequest, catalog: Catalog) -> PlanResult:
    """Plans that meet the SLO, cheapest per million output tokens first (see the module docstring)."""
    with collector_paused():  # tens of thousands of candidates and step costs, no cycles (planner._gc)
        return _plan_serving(request, catalog)


def _plan_serving(request: PlanRequest, catalog: Catalog) -> PlanResult:
    model = resolve_model(request.model, catalog)
    spec, w, slo, c = model.spec, request.workload, request.slo, request.constraints
    gpus = _gpus(request, catalog)
    prices = resolve_prices([g.id for g in gpus], request.prices)
    scans = [
        scan_family(spec, fam, w, slo, c, prices[fam.gpu.id].usd_per_gpu_hour)
        for fam in enumerate_families(spec, gpus, c)
    ]
    confirmed, simulated = _confirm(request, catalog, scans, prices)
    plans = [plan for _, plan in confirmed]
    if c.disaggregated:
        plans += disaggregated_plans(request, catalog, spec, scans, prices)
    plans.sort(key=lambda p: p.cost_per_million_output_tokens_usd)
    returned = [p.model_copy(update={"rank": i + 1}) for i, p in enumerate(plans[: request.max_plans])]
    returned_labels = {p.label for p in returned}
    plan_of = {id(scan): plan for scan, plan in confirmed}
    reasons: Counter[str] = Counter()
    rejected = []
    for scan in scans:
        if scan.survivors:  # met the static bounds, never simulated: the plans returned are cheaper
            cheapest = min(scan.survivors, key=lambda cand: cand.cost_per_million)
            scan.closest = (
                f"meets the SLO by the static model with max_num_seqs {cheapest.max_num_seqs} × {cheapest.replicas} "
                f"replicas at ${cheapest.cost_per_million:.3f} per million output tokens (not simulated)"
            )
        scan.reasons["dearer_than_plans"] += len(scan.survivors)
        plan = plan_of.get(id(scan))
        kept = plan is not None and plan.label in returned_labels
        if plan is not None and not kept:
            scan.reasons["dearer_than_plans"] += 1  # confirmed, but the plans returned are cheaper
            scan.closest = f"{plan.label}: ${plan.cost_per_million_output_tokens_usd:.3f} per million (simulated)"
        reasons.update(scan.reasons)
        if not kept:
            rejected.append(_rejected(scan))
    frontier = pareto_frontier(scans, slo, returned)
    summary = PlanSummary(
        candidates=sum(s.candidates for s in scans),
        families=len(scans),
        pruned_by_memory=sum(s.candidates for s in scans if s.pruned),
        screened_by_static_bounds=sum(s.candidates for s in scans if not s.pruned),
        simulated=simulated,
        plans=len(returned),
        reasons={k: v for k, v in reasons.items() if v},
        reason_text=REJECTION_TEXT,
    )
    warnings = list(model.warnings)
    if not returned:
        warnings.append("no configuration meets the SLO within the constraints: see rejected for each family's reasons")
    return PlanResult(
        model=model.catalog_id or model.spec.name or "inline model",
        workload=w,
        slo=slo,
        plans=tuple(returned),
        frontier=frontier,
        rejected=tuple(rejected),
        summary=summary,
        prices=tuple(prices.values()),
        warnings=tuple(warnings),
    )


def _rejected(scan: FamilyScan) -> RejectedFamily:
    f = scan.family
    return RejectedFamily(
        family=f.label,
        gpu=f.gpu.id,
        engine=f.engine.value,
        weight_format=f.weight_format.value,
        kv_cache_dtype=f.kv_dtype.value,
        tensor_parallel=f.tp,
        pipeline_parallel=f.pp,
        expert_parallel=f.ep,
        attention_data_parallel=f.dp,
        decode_context_parallel=f.dcp,
        candidates=scan.candidates,
        reason=_family_reason(scan.reasons),
        reasons={k: v for k, v in scan.reasons.items() if v},
        closest=scan.closest,
    )


def _family_reason(reasons: Counter[str]) -> Rejection:
    """A family that met the SLO somewhere lost on price; otherwise its commonest failure (dominated candidates are
    the family's own cheaper ones, not a failure)."""
    if reasons["dearer_than_plans"]:
        return "dearer_than_plans"
    failures = {k: v for k, v in reasons.items() if v and k != "dominated"} or {k: v for k, v in reasons.items() if v}
    return cast(Rejection, max(failures, key=lambda k: failures[k]))


def _confirm(
    request: PlanRequest, catalog: Catalog, scans: list[FamilyScan], prices: dict[str, GpuPrice]
) -> tuple[list[tuple[FamilyScan, Plan]], int]:
    """Simulate the statically cheapest candidates in cost order until max_plans are confirmed or the simulation
    budget is spent; a family whose candidate misses in simulation tries one more replica (RETRIES_PER_FAMILY).
    Each simulated candidate leaves the family's survivors; a miss is counted in its reasons."""
    tie = count()
    heap = [(cand.cost_per_million, next(tie), scan, cand, 0) for scan in scans for cand in scan.survivors]
    heapq.heapify(heap)
    confirmed: list[tuple[FamilyScan, Plan]] = []
    done: set[int] = set()
    simulated = 0
    while heap and len(confirmed) < request.max_plans and simulated < request.max_simulations:
        _, _, scan, cand, retry = heapq.heappop(heap)
        if id(scan) in done:
            continue
        if cand in scan.survivors:
            scan.survivors.remove(cand)
        simulated += 1
        price = prices[cand.family.gpu.id]
        plan = _simulate(request, catalog, cand, price)
        if plan is not None:
            confirmed.append((scan, plan))
            done.add(id(scan))
            scan.reasons["dominated"] += len(scan.survivors)  # its other batch limits: the confirmed one is cheaper
            scan.survivors.clear()
            continue
        scan.reasons["simulated_misses_slo"] += 1
        nxt = _with_replicas(cand, cand.replicas + 1, request, price.usd_per_gpu_hour)
        if retry < RETRIES_PER_FAMILY and nxt is not None:
            scan.reasons["dominated"] -= 1  # the retry was counted dominated by the scan
            scan.survivors.append(nxt)
            heapq.heappush(heap, (nxt.cost_per_million, next(tie), scan, nxt, retry + 1))
    return confirmed, simulated


def _with_replicas(cand: Candidate, replicas: int, request: PlanRequest, price: float) -> Candidate | None:
    """The same family and batch limit with more replicas (its static score kept: only the cost is re-derived)."""
    if replicas * cand.family.gpus_per_replica > request.constraints.max_gpus:
        return None
    w = request.workload
    clients = -(-(w.concurrency or 1) // replicas) if cand.clients is not None else None
    rate = cand.rate * cand.replicas / replicas if cand.rate is not None else None
    served = cand.output_tokens_per_s * replicas / cand.replicas if clients is not None else cand.output_tokens_per_s
    cost = cost_per_million(replicas * cand.family.gpus_per_replica, price, served)
    return Candidate(cand.family, cand.max_num_seqs, replicas, clients, rate, cand.static, served, cost)


def _lengths(value: int | tuple[LengthSample, ...]) -> tuple[LengthSample, ...] | None:
    return None if isinstance(value, int) else value


def _replica_request(request: PlanRequest, cand: Candidate) -> InferenceRequest:
    w, fam = request.workload, cand.family
    prompt, output = round(w.mean_input), max(2, round(w.mean_output))
    if cand.clients is not None:
        c = cand.clients
        n = max(MIN_REQUESTS_PER_SIMULATION, min(REQUESTS_PER_CLIENT * c, MAX_REQUESTS_PER_SIMULATION))
        load = LoadSpec(
            concurrency=c,
            num_requests=max(n, c),
            client_start=w.client_start,
            input_lengths=_lengths(w.input_tokens),
            output_lengths=_lengths(w.output_tokens),
        )
        concurrency = min(c, cand.max_num_seqs)
    else:
        load = LoadSpec(
            request_rate=max(cand.rate or MIN_REQUEST_RATE, MIN_REQUEST_RATE),
            input_lengths=_lengths(w.input_tokens),
            output_lengths=_lengths(w.output_tokens),
        )
        concurrency = max(1, min(cand.max_num_seqs, round(cand.static.running)))
    serving = fam.serving(
        max_num_seqs=cand.max_num_seqs, prompt_tokens=prompt, output_tokens=output, concurrency=concurrency
    )
    return InferenceRequest(model=request.model, gpu=fam.gpu.id, serving=serving, load=load)


def _simulate(request: PlanRequest, catalog: Catalog, cand: Candidate, price: GpuPrice) -> Plan | None:
    """The candidate's load simulation, as a Plan when it meets the SLO (None when it misses or no longer fits)."""
    replica = _replica_request(request, cand)
    try:
        e = estimate_inference(replica, catalog)
    except SpecError:
        return None
    if e.load is None or not e.fits:
        return None
    slo, q = request.slo, quantile(request.slo)
    ttft_ms = _at(e.load.ttft, q)
    tpot_ms = _at(e.load.tpot, q)
    if (slo.ttft_ms is not None and ttft_ms > slo.ttft_ms) or (
        slo.tpot_limit_ms is not None and tpot_ms > slo.tpot_limit_ms
    ):
        return None
    served = (
        cand.replicas * steady_tokens_per_s(cand.clients, request.workload.mean_output, e.load)
        if cand.clients is not None
        else (request.workload.rate or 0.0) * request.workload.mean_output
    )
    if served <= 0 or served < request.workload.min_output_tokens_per_s:
        return None
    return _plan(request, cand, e, replica, price, served, (ttft_ms, tpot_ms))


def steady_tokens_per_s(clients: int, output: float, load: LoadEstimate) -> float:
    """Output tokens/s of a replica serving `clients` closed-loop users in steady state, from the simulated means.

    Formula: c·O / (TTFT + (O − 1)·TPOT) (Little's law over one request cycle).
    Assumes: a long-running service; the simulation's own tokens/makespan also counts its ramp-up and drain.
    """
    cycle_s = (load.ttft.mean_ms + (output - 1) * load.tpot.mean_ms) / 1e3
    return clients * output / cycle_s if cycle_s > 0 else 0.0


def _at(p: object, q: float) -> float:
    return float(getattr(p, {0.5: "p50_ms", 0.9: "p90_ms", 0.99: "p99_ms"}[q]))


def _plan(
    request: PlanRequest,
    cand: Candidate,
    e: InferenceEstimate,
    replica: InferenceRequest,
    price: GpuPrice,
    served: float,
    at_slo: tuple[float, float],
) -> Plan:
    assert e.load is not None
    fam, slo, w = cand.family, request.slo, request.workload
    gpus = cand.num_gpus
    pool_tokens = e.engine.kv_pool_tokens or 1
    in_use = e.load.mean_decode_batch * (w.mean_input + w.mean_output / 2)
    label = f"{fam.label} × {cand.replicas} replicas, max_num_seqs {cand.max_num_seqs}"
    pool = Pool(
        role="aggregated",
        tensor_parallel=fam.tp,
        pipeline_parallel=fam.pp,
        expert_parallel=fam.ep,
        attention_data_parallel=fam.dp,
        decode_context_parallel=fam.dcp,
        max_num_seqs=cand.max_num_seqs,
        replicas=cand.replicas,
        gpus_per_replica=fam.gpus_per_replica,
        kv_pool_tokens=pool_tokens,
        memory=e.memory,
        request=replica,
    )
    return Plan(
        rank=0,
        mode="aggregated",
        label=label,
        gpu=fam.gpu.id,
        engine=fam.engine.value,
        weight_format=fam.weight_format.value,
        kv_cache_dtype=fam.kv_dtype.value,
        pools=(pool,),
        num_gpus=gpus,
        price=price,
        cost_per_hour_usd=gpus * price.usd_per_gpu_hour,
        cost_per_million_output_tokens_usd=cost_per_million(gpus, price.usd_per_gpu_hour, served),
        output_tokens_per_s=served,
        tokens_per_s_per_gpu=served / gpus,
        tokens_per_s_per_user=1e3 / max(e.load.tpot.mean_ms, 1e-9),
        ttft=e.load.ttft,
        tpot=e.load.tpot,
        headroom=Headroom(
            ttft=None if slo.ttft_ms is None else 1 - at_slo[0] / slo.ttft_ms,
            tpot=None if slo.tpot_limit_ms is None else 1 - at_slo[1] / slo.tpot_limit_ms,
            kv_pool=max(0.0, 1 - in_use / pool_tokens),
        ),
        latency_method="simulated",
    )
