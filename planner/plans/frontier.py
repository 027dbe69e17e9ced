"""The Pareto frontier of throughput per GPU against interactivity (tokens/s per user), as aiconfigurator plots it."""

from __future__ import annotations

from collections.abc import Sequence

from planner.plans.result import FrontierPoint, Plan
from planner.plans.scan import FamilyScan
from planner.plans.spec import SLOSpec

__all__ = ["dominates", "pareto_frontier"]

MAX_POINTS = 64


def dominates(a: FrontierPoint, b: FrontierPoint) -> bool:
    """a is at least as good on both axes and better on one."""
    ge = a.tokens_per_s_per_gpu >= b.tokens_per_s_per_gpu and a.tokens_per_s_per_user >= b.tokens_per_s_per_user
    gt = a.tokens_per_s_per_gpu > b.tokens_per_s_per_gpu or a.tokens_per_s_per_user > b.tokens_per_s_per_user
    return ge and gt


def _meets(slo: SLOSpec, ttft_ms: float, tpot_ms: float) -> bool:
    ok_ttft = slo.ttft_ms is None or ttft_ms <= slo.ttft_ms
    ok_tpot = slo.tpot_limit_ms is None or tpot_ms <= slo.tpot_limit_ms
    return ok_ttft and ok_tpot


def _points(scans: Sequence[FamilyScan], slo: SLOSpec, plans: Sequence[Plan]) -> list[FrontierPoint]:
    points = []
    for scan in scans:
        f = scan.family
        for clients, st in scan.frontier:
            if st.overloaded or st.tpot_s <= 0:
                continue
            points.append(
                FrontierPoint(
                    label=f"{f.label} at {clients} per replica",
                    gpu=f.gpu.id,
                    engine=f.engine.value,
                    tensor_parallel=f.tp,
                    pipeline_parallel=f.pp,
                    expert_parallel=f.ep,
                    attention_data_parallel=f.dp,
                    decode_context_parallel=f.dcp,
                    weight_format=f.weight_format.value,
                    kv_cache_dtype=f.kv_dtype.value,
                    concurrency_per_replica=clients,
                    tokens_per_s_per_gpu=st.output_tokens_per_s / f.gpus_per_replica,
                    tokens_per_s_per_user=1 / st.tpot_s,
                    ttft_ms=st.ttft_s * 1e3,
                    tpot_ms=st.tpot_s * 1e3,
                    meets_slo=_meets(slo, st.ttft_s * 1e3, st.tpot_s * 1e3),
                    method="static",
                )
            )
    for plan in plans:
        pool = plan.pools[-1]
        points.append(
            FrontierPoint(
                label=plan.label,
                gpu=plan.gpu,
                engine=plan.engine,
                tensor_parallel=pool.tensor_parallel,
                pipeline_parallel=pool.pipeline_parallel,
                expert_parallel=pool.expert_parallel,
                attention_data_parallel=pool.attention_data_parallel,
                decode_context_parallel=pool.decode_context_parallel,
                weight_format=plan.weight_format,
                kv_cache_dtype=plan.kv_cache_dtype,
                concurrency_per_replica=pool.request.serving.concurrency,
                tokens_per_s_per_gpu=plan.tokens_per_s_per_gpu,
                tokens_per_s_per_user=plan.tokens_per_s_per_user,
                ttft_ms=plan.ttft.mean_ms,
                tpot_ms=plan.tpot.mean_ms,
                meets_slo=True,
                method=plan.latency_method,
            )
        )
    return points


def pareto_frontier(scans: Sequence[FamilyScan], slo: SLOSpec, plans: Sequence[Plan]) -> tuple[FrontierPoint, ...]:
    """The non-dominated points over every fitting family's batch limits (static, steady state at a full batch) and
    the plans (as simulated), by tokens/s per user ascending; at most 64, evenly spaced along the frontier."""
    points = sorted(_points(scans, slo, plans), key=lambda p: (-p.tokens_per_s_per_user, -p.tokens_per_s_per_gpu))
    front: list[FrontierPoint] = []
    best_gpu = -1.0
    for p in points:  # by interactivity descending: a point is on the frontier when it beats every faster one's TPS/GPU
        if p.tokens_per_s_per_gpu > best_gpu:
            front.append(p)
            best_gpu = p.tokens_per_s_per_gpu
    front.reverse()
    if len(front) > MAX_POINTS:
        step = (len(front) - 1) / (MAX_POINTS - 1)
        front = [front[round(i * step)] for i in range(MAX_POINTS)]
    return tuple(front)
