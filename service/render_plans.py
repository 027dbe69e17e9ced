"""Plain-text tables of plans for the CLI (bytes in GiB, latencies in ms, cost in USD)."""

from __future__ import annotations

from collections import Counter

from planner.plans.result import PlanResult
from planner.plans.training_fit import TrainingFitResult
from service.render import _table

__all__ = ["plan_table", "training_fit_table"]

GIB = 1 << 30
REJECTED_SHOWN = 12


def _plans(result: PlanResult) -> str:
    p = result.slo.percentile
    header = ("#", "plan", "GPUs", "$/M out", "$/h", "tok/s", "tok/s/GPU", f"TTFT {p}", f"TPOT {p}", "latency")
    rows = [
        (
            str(plan.rank),
            plan.label,
            str(plan.num_gpus),
            f"{plan.cost_per_million_output_tokens_usd:.3f}",
            f"{plan.cost_per_hour_usd:.2f}",
            f"{plan.output_tokens_per_s:,.0f}",
            f"{plan.tokens_per_s_per_gpu:,.0f}",
            f"{getattr(plan.ttft, p + '_ms'):.0f} ms",
            f"{getattr(plan.tpot, p + '_ms'):.1f} ms",
            plan.latency_method,
        )
        for plan in result.plans
    ]
    return _table(header, rows)


def _memory(result: PlanResult) -> str:
    if not result.plans:
        return ""
    pool = result.plans[0].pools[-1]
    rows = [(t.name, f"{t.bytes / GIB:.2f}") for t in pool.memory.terms]
    return f"memory per GPU of plan 1 ({pool.role}, GiB):\n" + _table(("term", "GiB"), rows)


def _rejected(result: PlanResult) -> str:
    reasons = Counter(result.summary.reasons)
    lines = [
        f"{result.summary.candidates:,} candidates in {result.summary.families} families: "
        f"{result.summary.pruned_by_memory:,} pruned before any latency, {result.summary.simulated} simulated",
        "rejected candidates by reason: " + ", ".join(f"{k} {v:,}" for k, v in reasons.most_common()),
    ]
    for family in result.rejected[:REJECTED_SHOWN]:
        lines.append(f"  {family.family}: {family.reason} — {family.closest}")
    if len(result.rejected) > REJECTED_SHOWN:
        lines.append(f"  … and {len(result.rejected) - REJECTED_SHOWN} more families (--json lists them all)")
    return "\n".join(lines)


def plan_table(result: PlanResult) -> str:
    """Plans (cheapest first), the first plan's memory, and the rejections in brief."""
    parts = [_plans(result) if result.plans else "no plan meets the SLO within the constraints", _memory(result)]
    parts.append(_rejected(result))
    parts += [f"warning: {w}" for w in result.warnings]
    return "\n\n".join(p for p in parts if p)


def training_fit_table(result: TrainingFitResult) -> str:
    """The request's verdict, then the fitting configurations fastest first."""
    head = (
        f"as requested: {'fits' if result.fits else 'does not fit'} — peak {result.peak_bytes / GIB:.2f} GiB of "
        f"{result.budget_bytes / GIB:.2f} GiB; {result.searched:,} combinations, {result.fitting:,} fit"
    )
    rows = [
        (
            str(o.rank),
            f"{o.tokens_per_s:,.0f}",
            f"{o.peak_bytes / GIB:.1f}",
            str(o.num_gpus),
            "yes" if o.changes_method else "",
            ", ".join(f"{k}={v}" for k, v in o.changes.items()) or "(as requested)",
        )
        for o in result.options
    ]
    table = _table(("#", "tok/s", "peak GiB", "GPUs", "changes method", "changes"), rows) if rows else "none fits"
    best = result.best_keeping_method
    keep = (
        f"fastest keeping the method: {best.tokens_per_s:,.0f} tok/s at {best.peak_bytes / GIB:.1f} GiB — "
        + ", ".join(f"{k}={v}" for k, v in best.changes.items())
        if best
        else "nothing fits without changing the method"
    )
    return "\n\n".join((head, table, keep))
