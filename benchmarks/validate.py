"""Validate the planner against real PyTorch runs: the probe grid on one backend, as a JSON report and a table.

Run: .venv/bin/python benchmarks/validate.py [--backend cpu|cuda|fake|auto] [--out DIR] [--quick] [--fake-full-size]
     [--explain] [--jobs N]
     .venv/bin/python benchmarks/validate.py --random N [--seed S]   (the randomized campaign, cpu: models.campaign)
Writes DIR/validation-<backend>-<device-slug>.json (…-full-size.json for --fake-full-size; campaign-cpu-seed-S.json
for --random); progress goes to stderr.
--fake-full-size traces Llama-3-8B and Llama-3-70B training steps at full size on the fake backend, `--jobs`
processes at a time (each probe in its own process: an aborting trace cannot take the run down).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import platform
import re
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's planner and models, whatever checkout the venv's editable install names

from models.campaign import UNPROBEABLE, Outcome, check_draw, run_campaign, shrink  # noqa: E402
from models.grid import GridCase, default_grid, full_size_grid, quick_grid  # noqa: E402
from models.runner import run_probe_detailed  # noqa: E402
from planner import SpecError  # noqa: E402

PEAK_TOLERANCE = 0.03  # the grid test's per-configuration bound (tests/models/test_grid.py)
SHRINK_TRIES = 8  # probes spent simplifying each campaign miss


def run_case(case: GridCase, backend: str, explain: bool) -> dict[str, Any]:
    """One probe as a JSON-ready record: the ProbeResult, the measurements and planner terms behind it, or why not."""
    request = case.request.model_copy(update={"backend": backend}) if backend else case.request
    began = time.perf_counter()
    try:
        result, details = run_probe_detailed(request, explain=explain)
    except SpecError as exc:
        return {"id": case.id, "request": request.model_dump(mode="json"), "unsupported": str(exc)}
    return {
        "id": case.id,
        "request": request.model_dump(mode="json"),
        "result": result.model_dump(mode="json"),
        "measurements": {k: dataclasses.asdict(m) for k, m in details.measurements.items()},
        "planner": details.planner,
        "wall_s": time.perf_counter() - began,
    }


def _progress(done: int, total: int, record: dict[str, Any]) -> None:
    status = "unsupported" if "unsupported" in record else f"{record['wall_s']:.1f} s"
    print(f"[{done}/{total}] {record['id']}: {status}", file=sys.stderr, flush=True)


def run_grid(cases: list[GridCase], backend: str, explain: bool, jobs: int) -> list[dict[str, Any]]:
    if jobs <= 1:
        records = []
        for i, case in enumerate(cases, 1):
            records.append(run_case(case, backend, explain))
            _progress(i, len(cases), records[-1])
        return records
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(run_case, case, backend, explain) for case in cases]
        records = []
        for i, future in enumerate(futures, 1):
            records.append(future.result())
            _progress(i, len(cases), records[-1])
        return records


def _comparison(record: dict[str, Any], name: str) -> dict[str, Any] | None:
    comparisons = record.get("result", {}).get("comparisons", [])
    return next((c for c in comparisons if c["name"] == name), None)


def _cell(record: dict[str, Any], name: str) -> str:
    c = _comparison(record, name)
    return "-" if c is None else f"{100 * c['rel_error']:+.2f}%"


def _peak_names(record: dict[str, Any]) -> list[str]:
    return ["peak/inference"] if record["request"]["kind"] == "inference" else ["peak/first_step", "peak/steady"]


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Exact components that are off, peaks beyond the tolerance, and the median |peak error|."""
    errors = [abs(c["rel_error"]) for r in records for n in _peak_names(r) if (c := _comparison(r, n)) is not None]
    inexact = [
        f"{r['id']} {c['name']}"
        for r in records
        for c in r.get("result", {}).get("comparisons", [])
        if c["exact"] and c["measured_bytes"] != c["estimated_bytes"]
    ]
    misses = [
        f"{r['id']} {n}"
        for r in records
        for n in _peak_names(r)
        if (c := _comparison(r, n)) is not None and abs(c["rel_error"]) > PEAK_TOLERANCE
    ]
    return {
        "probes": len(records),
        "unsupported": [r["id"] for r in records if "unsupported" in r],
        "peaks_compared": len(errors),
        "median_abs_peak_error": statistics.median(errors) if errors else None,
        "peaks_beyond_tolerance": misses,
        "exact_components_off": inexact,
    }


def table(records: list[dict[str, Any]]) -> str:
    head = f"{'configuration':34} {'measured peak':>15} {'estimated':>15} {'rel err':>8}  {'1st step':>8} "
    head += f"{'weights':>8} {'saved act':>9} {'kv':>8} {'time':>6}"
    lines = [head, "-" * len(head)]
    for r in records:
        if "unsupported" in r:
            lines.append(f"{r['id']:34} unsupported: {r['unsupported'][:80]}")
            continue
        main = _comparison(r, _peak_names(r)[-1])
        measured, estimated = (main["measured_bytes"], main["estimated_bytes"]) if main else (0, 0)
        first = _cell(r, "peak/first_step") if r["request"]["kind"] == "training" else "-"
        lines.append(
            f"{r['id']:34} {measured:>15,} {estimated:>15,} {_cell(r, _peak_names(r)[-1]):>8}  {first:>8} "
            f"{_cell(r, 'weights'):>8} {_cell(r, 'saved_activations'):>9} {_cell(r, 'kv_cache'):>8} "
            f"{r['wall_s']:>5.1f}s"
        )
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def _outcome_record(o: Outcome) -> dict[str, Any]:
    return {
        "draw": dataclasses.asdict(o.draw),
        "label": o.draw.label(),
        "refused": o.refused,
        "misses": list(o.misses),
        "errors": o.errors(),
    }


def _same_miss(kinds: set[str]) -> Any:
    """A shrink predicate: the draw still misses in one of the same components."""

    def still(d: Any) -> bool:
        return bool(kinds & {m.split(":")[0] for m in check_draw(d).misses})

    return still


def campaign(n: int, seed: int, out: Path, shrink_misses: int) -> None:
    """The randomized campaign: n draws from `seed`; the first `shrink_misses` misses shrunk to simpler draws that
    still miss in the same component."""
    began = time.perf_counter()
    outcomes: list[Outcome] = []

    def record(o: Outcome) -> None:
        outcomes.append(o)
        status = "miss" if o.misses else "refused" if o.refused else "ok"
        print(f"[{len(outcomes)}/{n}] {status}: {o.draw.label()}", file=sys.stderr, flush=True)

    run_campaign(n, seed, record)
    probed = [o for o in outcomes if o.result is not None]
    misses = [o for o in outcomes if o.misses]
    shrunk = []
    for o in misses[:shrink_misses]:
        simpler = shrink(o.draw, _same_miss({m.split(":")[0] for m in o.misses}), max_tries=SHRINK_TRIES)
        shrunk.append({"original": o.draw.label(), "shrunk": _outcome_record(check_draw(simpler))})
    peaks = [abs(e) for o in probed for k, e in o.errors().items() if k.startswith("peak/")]
    exact_off = [o for o in probed if any(not k.startswith("peak/") and e for k, e in o.errors().items())]
    worst = sorted(
        probed, key=lambda o: -max((abs(e) for k, e in o.errors().items() if k.startswith("peak/")), default=0)
    )
    refused = [o for o in outcomes if o.refused and not o.misses]
    reasons: dict[str, int] = {}
    for o in refused:
        key = next((why for what, why in UNPROBEABLE.items() if what in (o.draw.method, o.draw.optimizer)), None)
        key = key or (o.refused or "").split(" (peft:")[0][:140]
        reasons[key] = reasons.get(key, 0) + 1
    report = {
        "seed": seed,
        "draws": len(outcomes),
        "probed": len(probed),
        "refused": len(refused),
        "refusal_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "misses": len(misses),
        "peaks_beyond_1pct": sum(1 for e in peaks if e > 0.01),
        "exact_components_off": len(exact_off),
        "median_abs_peak_error": statistics.median(peaks) if peaks else None,
        "max_abs_peak_error": max(peaks) if peaks else None,
        "worst": [_outcome_record(o) for o in worst[:10]],
        "missed": [_outcome_record(o) for o in misses],
        "shrunk": shrunk,
        "total_s": time.perf_counter() - began,
    }
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"campaign-cpu-seed-{seed}.json"
    path.write_text(json.dumps(report, indent=1))
    for o in misses:
        print(f"MISS {o.draw.label()}\n     {'; '.join(o.misses)}")
    for s in shrunk:
        print(f"SHRUNK {s['shrunk']['label']}\n     {'; '.join(s['shrunk']['misses'])}")
    median, largest = report["median_abs_peak_error"], report["max_abs_peak_error"]
    median_text = "-" if median is None else f"{100 * median:.3f}%"
    largest_text = "-" if largest is None else f"{100 * largest:.2f}%"
    print(
        f"\n{len(outcomes)} draws (seed {seed}) in {report['total_s']:.0f} s: {len(probed)} probed, "
        f"{len(refused)} refused as peft or the probe refuse them, {len(misses)} missing; peaks beyond 1 %: "
        f"{report['peaks_beyond_1pct']}; exact components off: {len(exact_off)}; median |peak error| {median_text}, "
        f"largest {largest_text}; report: {path}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["cpu", "cuda", "fake", "auto"], default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="report directory")
    parser.add_argument("--quick", action="store_true", help="a few configurations only")
    parser.add_argument("--fake-full-size", action="store_true", help="full-size Llama-3-8B/70B traces (fake)")
    parser.add_argument("--explain", action="store_true", help="record the storages live at each peak (cpu, fake)")
    parser.add_argument("--jobs", type=int, default=None, help="probe processes at once (default: 2 full-size, 1)")
    parser.add_argument("--random", type=int, default=0, metavar="N", help="a randomized campaign of N draws (cpu)")
    parser.add_argument("--seed", type=int, default=0, help="the campaign's seed")
    parser.add_argument("--shrink", type=int, default=1000, metavar="K", help="shrink the first K misses (0: none)")
    args = parser.parse_args()
    if args.random:
        campaign(args.random, args.seed, args.out, args.shrink)
        return

    if args.fake_full_size:
        cases, backend, grid_name = full_size_grid(), "fake", "full-size"
    else:
        cases, backend, grid_name = (quick_grid() if args.quick else default_grid()), args.backend, "default"
        grid_name = "quick" if args.quick else grid_name
    jobs = args.jobs or (2 if args.fake_full_size else 1)
    began = time.perf_counter()
    records = run_grid(cases, backend, args.explain, jobs)
    total_s = time.perf_counter() - began
    first = next((r["result"] for r in records if "result" in r), None)
    backend_run = first["backend"] if first else backend
    device = first["device"] if first else backend
    report = {
        "grid": grid_name,
        "backend": backend_run,
        "device": device,
        "versions": {k: first[k] for k in ("torch_version", "transformers_version", "peft_version")} if first else {},
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "total_s": total_s,
        "jobs": jobs,
        "summary": summary(records),
        "cases": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "-full-size" if args.fake_full_size else ""
    path = args.out / f"validation-{backend_run}-{_slug(device)}{suffix}.json"
    path.write_text(json.dumps(report, indent=1))
    print(table(records))
    s = report["summary"]
    median = s["median_abs_peak_error"]
    print(
        f"\n{s['probes']} probes on {backend_run} ({device}) in {total_s:.1f} s; median |peak error| "
        f"{'-' if median is None else f'{100 * median:.2f}%'}; {len(s['peaks_beyond_tolerance'])} peaks beyond "
        f"{100 * PEAK_TOLERANCE:.0f}%; {len(s['exact_components_off'])} exact components off; report: {path}"
    )


if __name__ == "__main__":
    main()
