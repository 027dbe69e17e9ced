"""Fit, per engine, the step-time terms no kernel table measures, on end-to-end TPOT and TTFT, leaving one model out.

Run: .venv/bin/python benchmarks/fit_engine_terms.py [--jobs 2] [--write]

The step-time model is the measured kernels of an iteration. Three things an engine spends per iteration are in no
kernel microbenchmark; the first two show in the silicon sample's TPOT at low concurrency, where a decode step is
mostly its kernels, the third in how TPOT grows with the batch:
- a wait at every all-reduce: aiconfigurator-core times each all-reduce alone, back to back under a CUDA graph, with
  every rank already in step; in a model the custom all-reduce's barrier waits for the slowest rank's preceding
  kernels, and the expected wait for the last of n jittered ranks grows about as log n. vLLM's measured TPOT on
  H100 and H200 exceeds the kernel step by about 1 µs per all-reduce at TP 2 and 5–10 µs at TP 4 and 8;
- a fixed cost per iteration: the scheduler, input preparation, sampling and output processing the GPU does not
  overlap, and the launch gaps between CUDA graphs and eager kernels. TensorRT-LLM's and SGLang's measured TPOT at
  concurrency 8 sits a few hundred µs above the kernel step at every TP;
- a cost per sequence per iteration: the scheduler's, the input preparation's and the output processing's work for
  each scheduled request, on the host CPU. On H100, TPOT exceeds the kernel step by 20–45 µs more for every further
  client (vLLM, with Qwen3-32B, Llama-3.1-70B and gpt-oss-120b alike, at every TP, so not a GPU kernel); on H200 the
  same engines and models show about none. It is a cost of the hosts, and each GPU's rows come from one cluster, so
  it is fitted per (GPU, engine); GPUs without silicon rows get none;
- the host's launches of an iteration that replays no CUDA graph (every prefill under SGLang and TensorRT-LLM; under
  vLLM a step beyond its largest capture size, min(2 · max_num_seqs, 512) tokens): each kernel is launched from
  Python, so a step whose kernels are short waits for them. The silicon sample's TTFT at 1,024-token prompts sits far
  above the kernel step where a model has many MoE layers (MiniMax-M2.5 on H200, vLLM TP 8, 4 clients: 106 ms
  measured, 40 ms of kernels; DeepSeek-R1 under SGLang +178 ms) and not at 8,192 (the kernels outlast the launches);
  a MoE layer launches the router, top-k, token alignment and grouped GEMMs besides a dense layer's kernels, so the
  host time is one value per dense and one per MoE layer. aiconfigurator 0.12.0's vLLM backend adds a similar
  0.8 ms per layer ("dispatch overhead", fitted on the silicon corpus).
The form is therefore

    allreduce  = measured kernel + w_engine · log2(ranks)   (prefill and decode, the lm_head's logits gather included)
    iteration  = its kernels + f_engine + s_(gpu, engine) · sequences scheduled            (CUDA graphs replayed)
    iteration  = max(its kernels, L_dense · e_dense + L_moe · e_moe) + f_engine + s · sequences   (eager)

with one (w, f, e_dense, e_moe) per engine and one s per (GPU, engine). These are the only terms of the step-time
model fitted on end-to-end runs (silicon_sample.csv); everything else is fitted on kernel tables. So they are fitted
and scored without seeing the model they are scored on:
- grid: each candidate term, each through the full simulation of every H100/H200 aggregated PP-1 row
  of the engine (benchmarks/validate_serving.py's predict);
- leave one model out: for each model, the (w, f) with the lowest median TPOT APE over the engine's other models,
  scored on that model's rows; the held-out errors are reported per (GPU, engine) group and overall;
- three stages in a fixed order, one term each on its own grid: the wait w (f = s = 0), then f on top of stage 1's
  w (a joint grid over both let each held-out model pick a different corner and did worse held out), then s per GPU
  on top of both, fitted and held out on that GPU's rows only (a model held out there is fitted on the other models
  of that GPU; with none, it gets none); nested, so a model held out in a stage keeps the terms the stages before
  chose without it;
- shipped rule, fixed before writing, per stage: the term ships (at its all-rows value) only if the engine's
  held-out TPOT median is lower than after the stage before and no (GPU, engine) group of it with 20 or more rows
  is worse held out (for s: its GPU's group has 20 or more rows and is better held out, and the published
  measurements under load of that (GPU, engine), benchmarks/data/published_latency/under_load.json, which are
  never fitted, are not worse; that last check was added after the first fit of s, which it would have shipped
  for TensorRT-LLM on H100 at 30 µs: its perf-overview throughputs at ~2,000 sequences went from 3.2 % to 13.1 %);
  else it stays 0;
- a last stage, e_dense and e_moe on one joint grid on top of the three, fitted on TTFT (an eager iteration is a
  prefill's; decode batches replay graphs): each held-out model gets the pair of the lowest TTFT median over the
  engine's other models; it ships only if the engine's held-out TTFT median falls, its held-out TPOT median does not
  rise and no (GPU, engine) group of 20 or more rows is worse held out in TTFT (rule fixed before the first fit);
- B200 rows never enter the fit; their error with the shipped terms is reported as an out-of-GPU check.
--write writes planner/calibration/engine_terms.json (the terms per engine, this report, provenance); then rerun
`validate_serving.py --jobs 2 --write` and `validate_static.py --write` so the committed reports and every answer's
validation status follow.
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
import validate_static  # noqa: E402

from planner.calibration import kernels  # noqa: E402

OUT = ROOT / "planner" / "calibration" / "engine_terms.json"
US = 1e-6
WAIT_GRIDS_US = {
    "vllm": [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
    "sglang": [0.0, 1.0, 2.0, 4.0, 6.0],
    "trtllm": [0.0, 0.5, 1.0, 2.0, 3.0],
}
STEP_GRID_US = [0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 800.0, 1000.0]
MIN_GROUP_ROWS = 20
PER_SEQUENCE_GRID_US = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0]
# the eager host time per (dense, MoE) layer, µs: one joint grid (the dense and MoE layers of a model launch together)
EAGER_DENSE_GRID_US = [0.0, 100.0, 200.0, 300.0, 500.0, 800.0]
EAGER_MOE_GRID_US = [0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0]
PerGpu = tuple[tuple[str, float], ...]  # (planner GPU id, s µs per sequence), sorted
Eager = tuple[float, float]  # (µs per dense layer, µs per MoE layer) of an iteration run without CUDA graphs
Terms = tuple[float, float, PerGpu, Eager]  # (w µs per log2 ranks, f µs per iteration, s per GPU, eager)
Prediction = tuple[float, float]  # (TTFT ms, TPOT ms)
NONE: Terms = (0.0, 0.0, (), (0.0, 0.0))


def _with_sequence(terms: Terms, gpu: str, value: float) -> Terms:
    per_gpu = dict(terms[2])
    per_gpu[gpu] = value
    return terms[0], terms[1], tuple(sorted((g, v) for g, v in per_gpu.items() if v)), terms[3]


def _set_terms(engine: str, terms: Terms) -> None:
    """In this process, every table of `engine` carries the wait, step overhead, per-sequence and eager `terms`
    (µs)."""
    wait, step, sequence = kernels.allreduce_wait_s, kernels.step_overhead_s, kernels.step_per_sequence_s
    eager = kernels.eager_layer_s
    per_gpu = dict(terms[2])

    def wait_for(name: str) -> float:
        return terms[0] * US if name == engine else wait(name)

    def step_for(name: str) -> float:
        return terms[1] * US if name == engine else step(name)

    def sequence_for(name: str, gpu: str) -> float:
        return per_gpu.get(gpu, 0.0) * US if name == engine else sequence(name, gpu)

    def eager_for(name: str) -> tuple[float, float]:
        return (terms[3][0] * US, terms[3][1] * US) if name == engine else eager(name)

    kernels.allreduce_wait_s, kernels.step_overhead_s, kernels.step_per_sequence_s = wait_for, step_for, sequence_for
    kernels.eager_layer_s = eager_for
    kernels.load_kernel_tables.cache_clear()


def _predict_all(engine: str, terms: Terms, rows: list[dict[str, str]], jobs: int) -> dict[str, Prediction]:
    with ProcessPoolExecutor(jobs, initializer=_set_terms, initargs=(engine, terms)) as pool:
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


def _label(terms: Terms) -> str:
    label = f"w {terms[0]:g} µs, f {terms[1]:g} µs" + "".join(f", s {g} {v:g} µs" for g, v in terms[2])
    return label + (f", eager {terms[3][0]:g} / {terms[3][1]:g} µs" if any(terms[3]) else "")


def _groups(
    engine: str, ids: list[str], base: dict[str, Prediction], held: dict[str, Prediction], by_id: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    members: dict[str, list[str]] = defaultdict(list)
    for i in ids:
        members[f"{by_id[i]['system']}/{engine}"].append(i)
    return {
        name: {
            "rows": len(group),
            "tpot_without": _median(group, base.__getitem__, by_id, 1),
            "tpot_held_out": _median(group, held.__getitem__, by_id, 1),
            "ttft_without": _median(group, base.__getitem__, by_id, 0),
            "ttft_held_out": _median(group, held.__getitem__, by_id, 0),
        }
        for name, group in sorted(members.items())
    }


def fit_engine(engine: str, jobs: int) -> dict[str, Any]:
    """Three stages in a fixed order, each one term on its own grid with the others held, each with the shipping
    rule: the wait w (no step overhead), then the step overhead f on top of the wait as stage 1 left it, then the
    cost per sequence s of each GPU on top of both. Nested: a model held out in a stage keeps the terms the stages
    before chose without it, so no held-out figure saw its model."""
    rows = _scored_rows(engine, validate_serving.HOPPER)
    by_id = {r["id"]: r for r in rows}
    grid: dict[Terms, dict[str, Prediction]] = {}

    def predictions(terms: Terms) -> dict[str, Prediction]:
        if terms not in grid:
            began = time.perf_counter()
            grid[terms] = _predict_all(engine, terms, rows, jobs)
            ids = list(grid[terms])
            print(
                f"  {engine} {_label(terms)}: TPOT {_median(ids, grid[terms].__getitem__, by_id, 1):.4f}, "
                f"TTFT {_median(ids, grid[terms].__getitem__, by_id, 0):.4f} ({time.perf_counter() - began:.0f} s)",
                flush=True,
            )
        return grid[terms]

    ids = list(predictions(NONE))
    models = sorted({by_id[i]["model_path"] for i in ids})

    def best(candidates: list[Terms], train: list[str], which: int = 1) -> Terms:
        """The candidate of the lowest median APE over `train` (which: 0 TTFT, 1 TPOT)."""
        return min(candidates, key=lambda t: (statistics.median(_ape(grid[t][i], by_id[i], which) for i in train), t))

    def others(model: str) -> list[str]:
        return [i for i in ids if by_id[i]["model_path"] != model]

    stages: list[dict[str, Any]] = []
    # what stands before each stage: all-rows terms, the terms each held-out model got, its held-out predictions
    shipped, per_model, held = NONE, dict.fromkeys(models, NONE), dict(grid[NONE])
    for stage, (term, axis) in enumerate((("wait", WAIT_GRIDS_US[engine]), ("step", STEP_GRID_US))):

        def vary(base: Terms, value: float, stage: int = stage) -> Terms:
            return (value, base[1], base[2], base[3]) if stage == 0 else (base[0], value, base[2], base[3])

        for base in {shipped, *per_model.values()}:
            for value in axis:
                predictions(vary(base, value))
        chosen: dict[str, Terms] = {}
        stage_held: dict[str, Prediction] = {}
        for model in models:
            chosen[model] = best([vary(per_model[model], v) for v in axis], others(model))
            stage_held |= {i: grid[chosen[model]][i] for i in ids if by_id[i]["model_path"] == model}
        before, after = _median(ids, held.__getitem__, by_id, 1), _median(ids, stage_held.__getitem__, by_id, 1)
        groups = _groups(engine, ids, held, stage_held, by_id)
        worse = [g for g, v in groups.items() if v["rows"] >= MIN_GROUP_ROWS and v["tpot_held_out"] > v["tpot_without"]]
        fitted = best([vary(shipped, v) for v in axis], ids)
        ships = after < before and not worse
        stages.append(
            {
                "term": term,
                "grid_us": axis,
                "fitted_us": fitted[stage],
                "ships": ships,
                "why": (
                    f"held-out TPOT {before:.1%} → {after:.1%} and no group of {MIN_GROUP_ROWS}+ rows worse"
                    if ships
                    else f"not shipped: held-out TPOT {before:.1%} → {after:.1%}"
                    + (f"; worse held out in {', '.join(worse)}" if worse else "")
                ),
                "leave_one_model_out": {
                    "chosen_us": {m: t[stage] for m, t in chosen.items()},
                    "tpot_without": before,
                    "tpot_held_out": after,
                },
                "groups": groups,  # "without": as the stage before left it
            }
        )
        if ships:
            shipped, per_model, held = fitted, chosen, stage_held
    gpu_of = validate_serving._mapping()["gpus"]
    for system in sorted({by_id[i]["system"] for i in ids}):
        gpu = gpu_of[system]
        group = [i for i in ids if by_id[i]["system"] == system]
        for base in {shipped, *per_model.values()}:
            for value in PER_SEQUENCE_GRID_US:
                predictions(_with_sequence(base, gpu, value))
        in_group = sorted({by_id[i]["model_path"] for i in group})
        chosen, stage_held = dict(per_model), dict(held)
        for model in in_group:
            train = [i for i in group if by_id[i]["model_path"] != model]
            candidates = [_with_sequence(per_model[model], gpu, v) for v in PER_SEQUENCE_GRID_US]
            # no other model on this GPU: nothing to fit it on without it, so it keeps no term
            chosen[model] = best(candidates, train) if train else per_model[model]
            stage_held |= {i: grid[chosen[model]][i] for i in group if by_id[i]["model_path"] == model}
        before, after = _median(group, held.__getitem__, by_id, 1), _median(group, stage_held.__getitem__, by_id, 1)
        fitted = best([_with_sequence(shipped, gpu, v) for v in PER_SEQUENCE_GRID_US], group)
        ships = len(group) >= MIN_GROUP_ROWS and after < before
        published = None
        if ships:  # and what it does to measurements it never saw
            without, with_s = published_under_load(engine, gpu, shipped), published_under_load(engine, gpu, fitted)
            published = {"points": with_s["points"], "without": without["median_ape"], "with": with_s["median_ape"]}
            ships = not with_s["points"] or with_s["median_ape"] <= without["median_ape"]
        stages.append(
            {
                "term": "per_sequence",
                "gpu": gpu,
                "grid_us": PER_SEQUENCE_GRID_US,
                "fitted_us": dict(fitted[2]).get(gpu, 0.0),
                "ships": ships,
                "why": (
                    f"{system} held-out TPOT {before:.1%} → {after:.1%}"
                    if ships
                    else f"not shipped: {system} held-out TPOT {before:.1%} → {after:.1%}"
                    + (f" ({len(group)} rows, fewer than {MIN_GROUP_ROWS})" if len(group) < MIN_GROUP_ROWS else "")
                    + (
                        f"; published under-load measurements ({published['points']} points) "
                        f"{published['without']:.1%} → {published['with']:.1%}"
                        if published
                        else ""
                    )
                ),
                "published_under_load": published,
                "leave_one_model_out": {
                    "chosen_us": {m: dict(chosen[m][2]).get(gpu, 0.0) for m in in_group},
                    "tpot_without": before,
                    "tpot_held_out": after,
                },
                "groups": _groups(engine, group, held, stage_held, by_id),
            }
        )
        if ships:
            shipped, per_model, held = fitted, chosen, stage_held
    shipped, per_model, held = _eager_stage(
        engine, ids, by_id, models, stages, predictions, best, shipped, per_model, held
    )
    return {
        "wait_s_per_log2_ranks": round(shipped[0] * US, 12),
        "step_s": round(shipped[1] * US, 12),
        "per_sequence_s_by_gpu": {gpu: round(v * US, 12) for gpu, v in shipped[2]},
        "eager_s_per_dense_layer": round(shipped[3][0] * US, 12),
        "eager_s_per_moe_layer": round(shipped[3][1] * US, 12),
        "ships": shipped != NONE,
        "rows": len(ids),
        "stages": stages,
        "tpot_without": _median(ids, grid[NONE].__getitem__, by_id, 1),
        "tpot_held_out": _median(ids, held.__getitem__, by_id, 1),
        "ttft_without": _median(ids, grid[NONE].__getitem__, by_id, 0),
        "ttft_held_out": _median(ids, held.__getitem__, by_id, 0),
        "groups": _groups(engine, ids, grid[NONE], held, by_id),  # neither term against what ships, held out
        "held_out": held,  # what ships, scored without seeing the model
        "scored_rows": by_id,
    }


def _eager_stage(
    engine: str,
    ids: list[str],
    by_id: dict[str, dict[str, str]],
    models: list[str],
    stages: list[dict[str, Any]],
    predictions: Callable[[Terms], dict[str, Prediction]],
    best: Callable[..., Terms],
    shipped: Terms,
    per_model: dict[str, Terms],
    held: dict[str, Prediction],
) -> tuple[Terms, dict[str, Terms], dict[str, Prediction]]:
    """The last stage: the eager host time per dense and per MoE layer, one joint grid on top of the TPOT stages,
    fitted on TTFT (an eager iteration is mostly a prefill: decode steps replay CUDA graphs), each model held out as
    before. Ships only if the engine's held-out TTFT median is lower, no (GPU, engine) group of 20+ rows is worse
    held out in TTFT, and the engine's held-out TPOT median is not higher."""
    axis = [(d, m) for d in EAGER_DENSE_GRID_US for m in EAGER_MOE_GRID_US]

    def vary(base: Terms, value: Eager) -> Terms:
        return base[0], base[1], base[2], value

    grid = {vary(base, v): predictions(vary(base, v)) for base in {shipped, *per_model.values()} for v in axis}
    chosen: dict[str, Terms] = {}
    stage_held: dict[str, Prediction] = {}
    for model in models:
        train = [i for i in ids if by_id[i]["model_path"] != model]
        chosen[model] = best([vary(per_model[model], v) for v in axis], train, 0)
        stage_held |= {i: grid[chosen[model]][i] for i in ids if by_id[i]["model_path"] == model}
    ttft_before, ttft_after = _median(ids, held.__getitem__, by_id, 0), _median(ids, stage_held.__getitem__, by_id, 0)
    tpot_before, tpot_after = _median(ids, held.__getitem__, by_id, 1), _median(ids, stage_held.__getitem__, by_id, 1)
    groups = _groups(engine, ids, held, stage_held, by_id)
    worse = [g for g, v in groups.items() if v["rows"] >= MIN_GROUP_ROWS and v["ttft_held_out"] > v["ttft_without"]]
    fitted = best([vary(shipped, v) for v in axis], ids, 0)
    ships = ttft_after < ttft_before and tpot_after <= tpot_before and not worse
    summary = f"held-out TTFT {ttft_before:.1%} → {ttft_after:.1%}, TPOT {tpot_before:.1%} → {tpot_after:.1%}"
    stages.append(
        {
            "term": "eager_per_layer",
            "grid_us": {"dense": EAGER_DENSE_GRID_US, "moe": EAGER_MOE_GRID_US},
            "fitted_us": {"dense": fitted[3][0], "moe": fitted[3][1]},
            "ships": ships,
            "why": (
                f"{summary}; no group of {MIN_GROUP_ROWS}+ rows worse in TTFT"
                if ships
                else f"not shipped: {summary}" + (f"; TTFT worse held out in {', '.join(worse)}" if worse else "")
            ),
            "leave_one_model_out": {
                "chosen_us": {m: {"dense": t[3][0], "moe": t[3][1]} for m, t in chosen.items()},
                "ttft_without": ttft_before,
                "ttft_held_out": ttft_after,
                "tpot_without": tpot_before,
                "tpot_held_out": tpot_after,
            },
            "groups": groups,
        }
    )
    if ships:
        return fitted, chosen, stage_held
    return shipped, per_model, held


def _published_primary(record: dict[str, Any]) -> list[tuple[float, float]]:
    return [
        (metric["predicted"], metric["measured"])
        for point in record.get("points", [])
        for metric in point["metrics"].values()
        if metric["primary"]
    ]


def published_under_load(engine: str, gpu: str, terms: Terms) -> dict[str, Any]:
    """The median APE over the primary metrics of the published under-load rows of (gpu, engine) with `terms`."""
    rows = [r for r in validate_static.load_rows(("under_load",)) if r["engine"] == engine]
    with ProcessPoolExecutor(1, initializer=_set_terms, initargs=(engine, terms)) as pool:
        records = list(pool.map(validate_static.predict_row, rows))
    pairs = [pm for r in records if r["scored"] and r["group"] == f"{engine}/{gpu}" for pm in _published_primary(r)]
    ape = round(statistics.median(abs(p / m - 1) for p, m in pairs), 4) if pairs else None
    return {"points": len(pairs), "median_ape": ape}


def out_of_gpu_check(engine: str, terms: Terms, jobs: int) -> dict[str, Any]:
    rows = _scored_rows(engine, ("b200_sxm",))
    by_id = {r["id"]: r for r in rows}
    base, shipped = _predict_all(engine, NONE, rows, jobs), _predict_all(engine, terms, rows, jobs)
    ids = [i for i in base if i in shipped]
    return {
        "rows": len(ids),
        "tpot_without": _median(ids, base.__getitem__, by_id, 1),
        "tpot_with": _median(ids, shipped.__getitem__, by_id, 1),
        "ttft_without": _median(ids, base.__getitem__, by_id, 0),
        "ttft_with": _median(ids, shipped.__getitem__, by_id, 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    # fit from neither term at all, whatever the committed file says
    kernels.allreduce_wait_s = kernels.step_overhead_s = lambda engine: 0.0
    kernels.step_per_sequence_s = lambda engine, gpu: 0.0
    kernels.eager_layer_s = lambda engine: (0.0, 0.0)
    engines: dict[str, Any] = {}
    held: dict[str, Prediction] = {}
    scored: dict[str, dict[str, str]] = {}
    for engine in WAIT_GRIDS_US:
        fit = fit_engine(engine, args.jobs)
        held |= fit.pop("held_out")
        scored |= fit.pop("scored_rows")
        engines[engine] = fit
        for stage in fit["stages"]:
            print(f"{engine} {stage['term']}: {stage['why']}")
        print(
            f"{engine}: ships w = {fit['wait_s_per_log2_ranks'] / US:g} µs per log2(ranks), "
            f"f = {fit['step_s'] / US:g} µs per iteration, s = "
            f"{ {g: v / US for g, v in fit['per_sequence_s_by_gpu'].items()} } µs per sequence; held-out TPOT "
            f"{fit['tpot_without']:.1%} → "
            f"{fit['tpot_held_out']:.1%}"
        )
    ids = list(held)
    overall = {
        "rows": len(ids),
        "tpot_held_out": _median(ids, held.__getitem__, scored, 1),
        "ttft_held_out": _median(ids, held.__getitem__, scored, 0),
    }
    print(f"H100 + H200, every engine as shipped, each model held out: {overall}")
    for engine, fit in engines.items():
        if fit["ships"]:
            terms = (
                fit["wait_s_per_log2_ranks"] / US,
                fit["step_s"] / US,
                tuple(sorted((g, v / US) for g, v in fit["per_sequence_s_by_gpu"].items())),
                (fit["eager_s_per_dense_layer"] / US, fit["eager_s_per_moe_layer"] / US),
            )
            fit["b200_out_of_gpu"] = out_of_gpu_check(engine, terms, args.jobs)
            print(f"{engine} on B200 (never fitted): {fit['b200_out_of_gpu']}")
    report = {
        "what": "the step-time terms no kernel table measures, per engine: a wait at each all-reduce, w · log2(ranks) "
        "(the barrier of a collective waits for the slowest rank; kernel microbenchmarks run ranks already in step), "
        "a fixed cost f per iteration outside its kernels (scheduling, input preparation, sampling, output "
        "processing and launch gaps the GPU does not overlap), and a cost s per scheduled sequence per iteration on "
        "the host (per request scheduling, input preparation and output processing), fitted per GPU because each "
        "GPU's rows come from one cluster's hosts",
        "formula": "allreduce_s(elements, n) = measured kernel table latency + w_engine · log2(n); "
        "iteration_s = Σ its kernels + f_engine + s_(gpu, engine) · sequences scheduled",
        "fitted_on": "end-to-end TPOT of benchmarks/data/silicon/silicon_sample.csv (aiconfigurator-core 0.12.0), "
        "H100 and H200 aggregated PP-1 rows; cross-validated leaving one model out",
        "script": "benchmarks/fit_engine_terms.py",
        "fitted": dt.date.today().isoformat(),
        "overall_h100_h200_held_out": overall,
        "engines": engines,
    }
    if args.write:
        OUT.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
