"""Fit, per engine, a wait at every all-reduce on end-to-end TPOT, cross-validated leaving one model out.

Run: .venv/bin/python benchmarks/fit_allreduce_wait.py [--jobs 2] [--write]

Why: at low concurrency, where a decode step is mostly its kernels, vLLM's measured TPOT on H100 and H200 exceeds
the kernel-table step by about 1 µs per all-reduce at TP 2 and 5–10 µs at TP 4 and 8 (Llama-3.1-70B, gpt-oss-120b).
aiconfigurator-core times each all-reduce alone, back to back under a CUDA graph, with every rank already in step; in
a model the custom all-reduce's barrier waits for the slowest rank's preceding kernels, and the expected wait for the
last of n ranks grows about as log n (the maximum of n jittered arrivals). The form is therefore

    wait = w_engine · log2(ranks)   per all-reduce (prefill and decode, the lm_head's logits gather included)

with one w per engine. This is the one term of the step-time model fitted on end-to-end runs (silicon_sample.csv);
everything else is fitted on kernel tables. So it is fitted and scored without seeing the model it is scored on:
- grid: every w on the engine's grid, each through the full simulation of every H100/H200 aggregated PP-1 row of
  the engine (benchmarks/validate_serving.py's predict);
- leave one model out: for each model, the w with the lowest median TPOT APE over the engine's other models, scored
  on that model's rows; the held-out errors are reported per (GPU, engine) group and overall;
- shipped rule, fixed before writing: an engine gets its all-rows w only if its held-out TPOT median is lower than
  without the wait and no (GPU, engine) group of it with 20 or more rows is worse held out; else w = 0;
- B200 rows never enter the fit; their error with the shipped w is reported as an out-of-GPU check.
--write writes planner/calibration/allreduce_wait.json (the w per engine, this report, provenance); then rerun
`validate_serving.py --jobs 2 --write` so the committed report and every answer's validation status follow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import validate_serving  # noqa: E402

from planner.calibration import kernels  # noqa: E402

OUT = ROOT / "planner" / "calibration" / "allreduce_wait.json"
US = 1e-6
GRIDS_US = {
    "vllm": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0],
    "sglang": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0],
    "trtllm": [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
}
MIN_GROUP_ROWS = 20
Prediction = tuple[float, float]  # (TTFT ms, TPOT ms)


def _set_wait(engine: str, wait_s: float) -> None:
    """In this process, every table of `engine` waits `wait_s` per log2(ranks) at each all-reduce."""
    shipped = kernels.allreduce_wait_s

    def wait_for(name: str) -> float:
        return wait_s if name == engine else shipped(name)

    kernels.allreduce_wait_s = wait_for
    kernels.load_kernel_tables.cache_clear()


def _predict_all(engine: str, wait_us: float, rows: list[dict[str, str]], jobs: int) -> dict[str, Prediction]:
    with ProcessPoolExecutor(jobs, initializer=_set_wait, initargs=(engine, wait_us * US)) as pool:
        preds = list(pool.map(validate_serving.predict, rows, chunksize=16))
    return {p["id"]: (p["ttft_ms"], p["tpot_ms"]) for p in preds if p.get("ttft_ms") is not None}


def _ape(pred: Prediction, row: dict[str, str], which: int) -> float:
    measured = float(row["silicon_tpot_ms"] if which else row["silicon_ttft_ms"])
    return abs(pred[which] / measured - 1)


def _median(ids: list[str], pred: Callable[[str], Prediction], rows: dict[str, dict[str, str]], which: int) -> float:
    return round(statistics.median(_ape(pred(i), rows[i], which) for i in ids), 4)


def _scored_rows(engine: str, systems: tuple[str, ...]) -> list[dict[str, str]]:
    return [
        r
        for r in validate_serving.load_rows()
        if r["backend"] == engine and r["system"] in systems and r["mode"] == "agg" and r["pp_size"] in ("", "1")
    ]


def fit_engine(engine: str, jobs: int) -> dict[str, Any]:
    rows = _scored_rows(engine, validate_serving.HOPPER)
    by_id = {r["id"]: r for r in rows}
    grid: dict[float, dict[str, Prediction]] = {}
    for w in GRIDS_US[engine]:
        began = time.perf_counter()
        grid[w] = _predict_all(engine, w, rows, jobs)
        ids = list(grid[w])
        print(
            f"  {engine} w = {w:4.1f} µs: TPOT {_median(ids, grid[w].__getitem__, by_id, 1):.4f}, "
            f"TTFT {_median(ids, grid[w].__getitem__, by_id, 0):.4f} ({time.perf_counter() - began:.0f} s)",
            flush=True,
        )
    ids = list(grid[0.0])

    def best(train: list[str]) -> float:
        return min(grid, key=lambda w: (statistics.median(_ape(grid[w][i], by_id[i], 1) for i in train), w))

    held: dict[str, Prediction] = {}
    chosen: dict[str, float] = {}
    for model in sorted({by_id[i]["model_path"] for i in ids}):
        w = chosen[model] = best([i for i in ids if by_id[i]["model_path"] != model])
        held |= {i: grid[w][i] for i in ids if by_id[i]["model_path"] == model}
    groups: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        groups[f"{by_id[i]['system']}/{engine}"].append(i)
    report_groups = {
        name: {
            "rows": len(members),
            "tpot_without": _median(members, grid[0.0].__getitem__, by_id, 1),
            "tpot_held_out": _median(members, held.__getitem__, by_id, 1),
            "ttft_without": _median(members, grid[0.0].__getitem__, by_id, 0),
            "ttft_held_out": _median(members, held.__getitem__, by_id, 0),
        }
        for name, members in sorted(groups.items())
    }
    without, held_out = _median(ids, grid[0.0].__getitem__, by_id, 1), _median(ids, held.__getitem__, by_id, 1)
    worse = [
        g for g, v in report_groups.items() if v["rows"] >= MIN_GROUP_ROWS and v["tpot_held_out"] > v["tpot_without"]
    ]
    fitted = best(ids)
    ships = held_out < without and not worse
    return {
        "wait_s_per_log2_ranks": round(fitted * US, 12) if ships else 0.0,
        "fitted_us": fitted,
        "ships": ships,
        "why": (
            f"held-out TPOT {without:.1%} → {held_out:.1%} and no group of {MIN_GROUP_ROWS}+ rows worse"
            if ships
            else f"not shipped: held-out TPOT {without:.1%} → {held_out:.1%}"
            + (f"; worse held out in {', '.join(worse)}" if worse else "")
        ),
        "rows": len(ids),
        "grid_us": GRIDS_US[engine],
        "leave_one_model_out": {"chosen_us": chosen, "tpot_without": without, "tpot_held_out": held_out},
        "groups": report_groups,
        "held_out": held if ships else grid[0.0],  # what ships, scored without seeing the model
        "scored_rows": by_id,
    }


def out_of_gpu_check(engine: str, wait_s: float, jobs: int) -> dict[str, Any]:
    rows = _scored_rows(engine, ("b200_sxm",))
    by_id = {r["id"]: r for r in rows}
    base, shipped = _predict_all(engine, 0.0, rows, jobs), _predict_all(engine, wait_s / US, rows, jobs)
    ids = [i for i in base if i in shipped]
    return {
        "rows": len(ids),
        "tpot_without": _median(ids, base.__getitem__, by_id, 1),
        "tpot_with": _median(ids, shipped.__getitem__, by_id, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    kernels.allreduce_wait_s = lambda engine: 0.0  # fit from no wait at all, whatever the committed file says
    engines: dict[str, Any] = {}
    held: dict[str, Prediction] = {}
    scored: dict[str, dict[str, str]] = {}
    for engine in GRIDS_US:
        fit = fit_engine(engine, args.jobs)
        held |= fit.pop("held_out")
        scored |= fit.pop("scored_rows")
        engines[engine] = fit
        print(f"{engine}: {fit['why']}; ships {fit['wait_s_per_log2_ranks'] / US:.1f} µs per log2(ranks)")
    ids = list(held)
    overall = {
        "rows": len(ids),
        "tpot_held_out": _median(ids, held.__getitem__, scored, 1),
        "ttft_held_out": _median(ids, held.__getitem__, scored, 0),
    }
    print(f"H100 + H200, every engine as shipped, each model held out: {overall}")
    for engine, fit in engines.items():
        if fit["ships"]:
            fit["b200_out_of_gpu"] = out_of_gpu_check(engine, fit["wait_s_per_log2_ranks"], args.jobs)
            print(f"{engine} on B200 (never fitted): {fit['b200_out_of_gpu']}")
    report = {
        "what": "a wait at each all-reduce, w · log2(ranks), per engine: the barrier of a collective waits for the "
        "slowest rank, which kernel microbenchmarks (ranks already in step) do not see",
        "formula": "allreduce_s(elements, n) = measured kernel table latency + w_engine · log2(n)",
        "fitted_on": "end-to-end TPOT of benchmarks/data/silicon/silicon_sample.csv (aiconfigurator-core 0.12.0), "
        "H100 and H200 aggregated PP-1 rows; cross-validated leaving one model out",
        "script": "benchmarks/fit_allreduce_wait.py",
        "fitted": dt.date.today().isoformat(),
        "overall_h100_h200_held_out": overall,
        "engines": engines,
    }
    if args.write:
        OUT.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
