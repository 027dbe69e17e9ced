"""Score memplan's latency against published latency tables: static batches and runs under load (no fitting).

Run: .venv/bin/python benchmarks/validate_static.py [--corpus static under_load] [--write]
Reads benchmarks/data/published_latency/static.json (single-batch and static-batch TTFT, TPOT/ITL and tokens/s from
gpt-fast, the TensorRT-LLM performance docs and blogs, the vLLM CI and blog, the NIM benchmarking page) and
under_load.json (runs at a request rate, a concurrency or offline), maps every row memplan can represent onto a
serving request (benchmarks/data/published_latency/models.json: model names to catalog ids, GPU strings to GPU ids,
engine, precision and KV-cache labels), predicts the row's measured quantities and reports median APE and bias per
source, per (engine, GPU) and overall. APE = |predicted − measured| / measured; bias = median of predicted / measured.

How a row becomes a request:
- a static batch of b sequences (static.json) is a closed loop of b clients sending b requests: all start together,
  so TTFT includes the prefill of the batch and the last token ends the batch (throughput = b·OSL / makespan);
- a row under load keeps its load: a concurrency (closed loop, `num_prompts` requests, else memplan's 8 per client),
  a Poisson request rate, or offline "all requests queued" (a rate of 1e5 requests/s: every request waits at t≈0);
- variable lengths (ShareGPT, random) take the mean lengths the row publishes; without them the row is not scored;
- gpt-fast has no kernel tables or scheduler in memplan: its rows are scored on the answer's static prefill/decode
  figures (one batch-1 generate(): tokens/s = OSL / (TTFT + (OSL − 1)·TPOT));
- each row's record lists the assumptions it needed. The engine versions of 2023-24 (TensorRT-LLM 0.5-0.9, vLLM 0.6,
  SGLang 0.3) predate memplan's profiles: those rows run the newest profile of the engine and say so.

These rows only score: nothing in memplan is fitted on them (the kernel tables are fitted on kernel measurements,
benchmarks/fit_kernels.py). --write writes benchmarks/results/validation-static.json (per-row predictions and the
summaries); tests/benchmarks/test_validate_static.py keeps it current.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import InferenceRequest, SpecError, estimate_inference, load_catalog  # noqa: E402
from planner.serving.engines import resolve_profile  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "published_latency"
REPORT = ROOT / "benchmarks" / "results" / "validation-static.json"
CORPORA = {"static": "static.json", "under_load": "under_load.json"}
OFFLINE_RATE = 1e5  # requests/s for "all requests queued at once" (trtllm-bench): the highest rate LoadSpec takes
FIT_CONTEXTS = (1024, 32768, 125000)  # where the published ITL = a + b·input_len lines are scored (sweep 256..125000)
CATEGORIES = ("ttft", "tpot", "user_tps", "throughput", "e2e")
SERVING_FIELDS = {
    "engine",
    "engine_version",
    "tensor_parallel",
    "weight_format",
    "quant_group_size",
    "activation_dtype",
    "kv_cache_dtype",
    "prompt_tokens",
    "output_tokens",
    "concurrency",
}

# measured key -> (category, statistic of memplan's percentiles, primary for the summaries)
METRICS: dict[str, tuple[str, str, bool]] = {
    "ttft_ms": ("ttft", "mean", True),
    "ttft_ms_mean": ("ttft", "mean", False),
    "ttft_ms_median": ("ttft", "p50", True),
    "ttft_ms_p99": ("ttft", "p99", False),
    "tpot_ms_median": ("tpot", "p50", True),
    "itl_ms": ("tpot", "mean", True),
    "itl_ms_mean": ("tpot", "mean", False),
    "itl_ms_median": ("tpot", "p50", True),
    "itl_ms_p99": ("tpot", "p99", False),
    "e2e_latency_ms_median": ("e2e", "p50", True),
    "e2e_latency_ms_mean": ("e2e", "mean", True),
    "e2e_latency_ms_p99": ("e2e", "p99", False),
    "decode_tokens_per_s_per_user": ("user_tps", "mean", True),
    "output_tokens_per_s_per_gpu": ("throughput", "per_gpu", True),
    "total_output_tokens_per_s": ("throughput", "replica", True),
}
NOT_SCORED = {
    "memory_bandwidth_gbps": "derived by the source (model bytes × tokens/s), not a measurement",
    "total_duration_s": "benchmark wall time: the throughput of the same run is scored",
    "request_throughput_rps": "requests/s of an open loop follow the offered rate",
    "decode_tokens_per_s": "aggregate tokens/s at an unstated batch size",
}


def load_rows(corpora: tuple[str, ...] = tuple(CORPORA)) -> list[dict[str, Any]]:
    """Every published row, with an id `<corpus>:<index in its file>`."""
    rows = []
    for corpus in corpora:
        data = json.loads((DATA / CORPORA[corpus]).read_text())
        rows += [{**r, "id": f"{corpus}:{i}", "corpus": corpus} for i, r in enumerate(data["rows"])]
    return rows


def _mapping() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "models.json").read_text())
    return data


def source_label(row: dict[str, Any], mapping: dict[str, Any] | None = None) -> str:
    m = mapping or _mapping()
    label: str = m["sources"].get(row["source_title"], row["source_title"])
    return label


def _length(value: Any, what: str) -> tuple[int | None, str]:
    """Tokens per request, and the assumption it took (or None and why not)."""
    if isinstance(value, int):
        return value, ""
    if value is None:
        return None, f"{what} length not published"
    text = str(value)
    mean = re.search(r"mean ([\d.]+)", text)
    if mean:
        return round(float(mean.group(1))), f"{what} lengths vary ({text}): the published mean"
    approx = re.fullmatch(r"~(\d+) \(±\d+%\)", text)
    if approx:
        return int(approx.group(1)), f"{what} lengths vary ({text}): the published mean"
    return None, f"{what} lengths vary ({text}) and the row publishes no mean"


def _version(row: dict[str, Any], engine: str, how: dict[str, Any]) -> tuple[str | None, str]:
    stated = row.get("engine_version")
    if how.get("ignore_version"):
        return None, f"engine version '{stated}' is not the {engine} version: the newest {engine} profile"
    found = re.search(r"\d+\.\d+(\.\d+)?", str(stated or ""))
    if not found:
        return None, f"engine version not stated: the newest {engine} profile"
    version = found.group(0)
    try:
        resolve_profile(engine, version)
    except SpecError:
        return None, f"{engine} {version} predates memplan's profiles: the newest {engine} profile"
    return version, ""


def plan_row(row: dict[str, Any], mapping: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], str]:
    """The memplan requests of one row (one per scored point) with what each predicts, or [] and why not."""
    m = mapping or _mapping()
    how = m["engines"].get(row["engine"])
    if how is None:
        return [], f"engine '{row['engine']}' not mapped"
    if row["gpu"] in m["gpus_not_representable"]:
        return [], m["gpus_not_representable"][row["gpu"]]
    gpu = m["gpus"].get(row["gpu"])
    if gpu is None:
        return [], f"GPU '{row['gpu']}' not mapped"
    if row["model"] in m["not_representable"]:
        return [], m["not_representable"][row["model"]]
    model = m["models"].get(row["model"])
    if model is None:
        return [], f"model '{row['model']}' not mapped"
    if "--enable-dp-attention" in row.get("notes", ""):
        return [], "data-parallel attention (--enable-dp-attention) is not modelled"
    if row["weight_precision"] in m["precisions_not_representable"]:
        return [], m["precisions_not_representable"][row["weight_precision"]]
    precision = m["precisions"].get(row["weight_precision"])
    if precision is None:
        return [], f"precision '{row['weight_precision']}' not mapped"
    corpus = row["corpus"]
    batch = row.get("batch_size") if corpus == "static" else 1
    if batch is None:
        return [], f"batch size not published (input: {row['input_tokens']}, output: {row['output_tokens']})"
    measured = {k: v for k, v in row["measured"].items() if v is not None}
    fit = "itl_fit_intercept_ms" in measured
    scored = [k for k in measured if k in METRICS]
    if not scored and not fit:
        return [], f"nothing memplan predicts is measured ({', '.join(measured)})"
    engine = how["engine"]
    static = bool(how.get("static"))
    assumptions = [
        n for n in (how.get("note"), m["gpus"][row["gpu"]].get("note"), model.get("note"), precision.get("note")) if n
    ]
    version: str | None = None
    if not static:
        version, why = _version(row, engine, how)
        if why:
            assumptions.append(why)
    weights = model.get("weight_format") or precision["weight_format"]  # a quantized checkpoint runs its own format
    kv = m["kv_cache_dtypes"].get(str(row.get("kv_cache_dtype")))
    if kv is None:
        if row.get("kv_cache_dtype") is not None:
            return [], f"KV-cache dtype '{row['kv_cache_dtype']}' not mapped"
        kv = "fp8" if engine == "trtllm" and weights.startswith("fp8") else precision.get("activation_dtype", "bf16")
        assumptions.append(f"{m['kv_cache_dtype_unstated']}: {kv}")
    if fit:
        prompts: list[int] = list(FIT_CONTEXTS)
        assumptions.append(
            "the source publishes only the line ITL = intercept + slope·input_len over its sweep "
            f"({row['input_tokens']}): scored at input {', '.join(map(str, FIT_CONTEXTS))}, against memplan's mean "
            "TPOT at concurrency 1"
        )
    else:
        prompt, why = _length(row["input_tokens"], "input")
        if prompt is None:
            return [], why
        prompts = [prompt]
        if why:
            assumptions.append(why)
    output, why = _length(row["output_tokens"], "output")
    if output is None:
        return [], why
    if why:
        assumptions.append(why)
    serving: dict[str, Any] = {
        "engine": engine,
        "engine_version": version,
        "tensor_parallel": int(row["tensor_parallel"]),
        "weight_format": weights,
        "kv_cache_dtype": kv,
        "output_tokens": output,
        "concurrency": int(batch),
    }
    for key in ("quant_group_size", "activation_dtype"):
        if key in precision:
            serving[key] = precision[key]
    load: dict[str, Any] | None = None
    if not static:
        if corpus == "static":
            load = {"concurrency": int(batch), "num_requests": int(batch)}
            if batch > 1:
                assumptions.append(
                    f"static batch of {batch}: {batch} clients each send one request at t=0, scheduled as memplan's "
                    f"{engine} profile schedules them (its token budget may split the batch's prefill)"
                )
        else:
            spec = row["load"]
            n = spec.get("num_prompts")
            if "concurrency" in spec:
                load = {"concurrency": int(spec["concurrency"]), "num_requests": n}
                serving["concurrency"] = int(spec["concurrency"])
                if n is None:
                    assumptions.append("requests sent not published: memplan's default of 8 per client")
            elif isinstance(spec.get("request_rate_rps"), int | float):
                load = {"request_rate": float(spec["request_rate_rps"]), "num_requests": n}
            else:
                load = {"request_rate": OFFLINE_RATE, "num_requests": n}
                assumptions.append(
                    f"offline throughput (all {n} requests queued at once): a Poisson rate of {OFFLINE_RATE:g}/s, "
                    "with memplan's engine defaults (max batch, token budget) rather than the tuned ones of the run"
                )
    if any(k.startswith("itl") for k in scored):
        assumptions.append("ITL compared with memplan's TPOT ((last token − first token) / (OSL − 1) per request)")
    points = []
    for prompt in prompts:
        metrics: dict[str, dict[str, Any]] = {}
        if fit:
            line = measured["itl_fit_intercept_ms"] + measured["itl_fit_slope_ms_per_context_token"] * prompt
            metrics[f"itl_ms@{prompt}"] = {
                "category": "tpot",
                "stat": "mean",
                "primary": True,
                "measured": line,
                "derived": "intercept + slope · input_len (the published fit)",
            }
        for key in sorted(scored, key=list(METRICS).index):  # the first primary key of a category is the one scored
            category, stat, primary = METRICS[key]
            primary = primary and not any(v["primary"] and v["category"] == category for v in metrics.values())
            metrics[key] = {"category": category, "stat": stat, "primary": primary, "measured": float(measured[key])}
        has_tpot = any(v["category"] == "tpot" for v in metrics.values())
        if "decode_tokens_per_s_per_user" in metrics and not has_tpot:
            metrics["tpot_ms (1000 / tokens/s)"] = {
                "category": "tpot",
                "stat": "mean",
                "primary": True,
                "measured": 1000 / float(measured["decode_tokens_per_s_per_user"]),
                "derived": "1000 / tokens/s = wall time / OSL; predicted (TTFT + (OSL − 1)·TPOT) / OSL",
            }
        elif "e2e_latency_ms_mean" in metrics and not has_tpot and corpus == "static":
            metrics["tpot_ms (e2e / OSL)"] = {
                "category": "tpot",
                "stat": "mean",
                "primary": True,
                "measured": float(measured["e2e_latency_ms_mean"]) / output,
                "derived": "latency of the batch / OSL, measured and predicted alike (includes the prefill)",
            }
        point_id = f"{row['id']}@{prompt}" if fit else row["id"]
        request = InferenceRequest(
            model=model["catalog"], gpu=gpu["gpu"], serving={**serving, "prompt_tokens": prompt}, load=load
        )
        points.append(
            {"id": point_id, "request": request, "metrics": metrics, "static": static, "assumptions": assumptions}
        )
    return points, ""


def _predicted(metric: dict[str, Any], key: str, estimate: Any, static: bool, output: int, tp: int) -> float:
    category, stat = metric["category"], metric["stat"]
    if static:  # one static batch from the answer's prefill and decode figures
        ttft, tpot = estimate.prefill.ttft_s * 1e3, estimate.decode.tpot_s * 1e3
        e2e = ttft + (output - 1) * tpot
        values = {
            "ttft": ttft,
            "tpot": e2e / output if "tokens/s" in key else tpot,
            "e2e": e2e,
            "user_tps": output * 1e3 / e2e,
            "throughput": estimate.decode.batch * output * 1e3 / e2e,
        }
        return values[category]
    load = estimate.load
    if category == "throughput":
        return float(load.output_tokens_per_s / (tp if stat == "per_gpu" else 1))
    if category == "tpot" and "e2e" in key:
        return float(load.e2e.mean_ms / output)
    percentiles = {"ttft": load.ttft, "tpot": load.tpot, "e2e": load.e2e}[category]
    return float(getattr(percentiles, f"{stat}_ms"))


def predict_point(point: dict[str, Any]) -> dict[str, Any]:
    """memplan's figures for one planned point, next to the measured ones."""
    request: InferenceRequest = point["request"]
    serving = request.serving
    out: dict[str, Any] = {
        "id": point["id"],
        "request": {
            "model": request.model,
            "gpu": request.gpu,
            "serving": serving.model_dump(mode="json", include=SERVING_FIELDS),
            "load": request.load.model_dump(mode="json", exclude_defaults=True) if request.load else None,
            "figures": "static prefill/decode" if point["static"] else "load simulation",
        },
        "assumptions": point["assumptions"],
    }
    try:
        estimate = estimate_inference(request, load_catalog())
    except SpecError as exc:
        return {**out, "scored": False, "reason": f"memplan refuses the request: {exc}"}
    metrics = {}
    for key, metric in point["metrics"].items():
        predicted = _predicted(metric, key, estimate, point["static"], serving.output_tokens, serving.tensor_parallel)
        ratio = predicted / metric["measured"]
        metrics[key] = {
            **metric,
            "predicted": round(predicted, 6),
            "ratio": round(ratio, 6),
            "ape": round(abs(ratio - 1), 6),
        }
    load = estimate.load
    return {
        **out,
        "scored": True,
        "metrics": metrics,
        "fits": estimate.fits,
        "fit_reasons": list(estimate.fit_reasons),
        "method": estimate.decode.method,
        "preemptions": load.preemptions if load else None,
        "mean_decode_batch": round(load.mean_decode_batch, 2) if load else None,
    }


def predict_row(row: dict[str, Any], mapping: dict[str, Any] | None = None) -> dict[str, Any]:
    """The row's record: where it comes from, and its scored points or why it is not scored."""
    m = mapping or _mapping()
    gpu = m["gpus"].get(row["gpu"], {}).get("gpu")
    record: dict[str, Any] = {
        "id": row["id"],
        "corpus": row["corpus"],
        "source": source_label(row, m),
        "source_url": row["source_url"],
        "group": f"{row['engine']}/{gpu or row['gpu']}",
        "model": row["model"],
    }
    unscored = {k: NOT_SCORED[k] for k in row["measured"] if k in NOT_SCORED}
    if unscored:
        record["measurements_not_scored"] = unscored
    points, why = plan_row(row, m)
    if not points:
        return {**record, "scored": False, "reason": why}
    predicted = [predict_point(p) for p in points]
    refused = [p["reason"] for p in predicted if not p["scored"]]
    if refused:
        return {**record, "scored": False, "reason": refused[0], "points": predicted}
    return {**record, "scored": True, "points": predicted}


def _stats(values: list[tuple[float, float]]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median_ape": None, "bias": None}
    return {
        "n": len(values),
        "median_ape": round(statistics.median(abs(p / m - 1) for p, m in values), 4),
        "bias": round(statistics.median(p / m for p, m in values), 4),
    }


def summarize(records: list[dict[str, Any]], key: Any) -> dict[str, Any]:
    """Per group and category: points, median APE and bias over the primary metrics of the scored points."""
    groups: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    points: dict[str, int] = defaultdict(int)
    for record in records:
        if not record["scored"]:
            continue
        name = key(record)
        for point in record["points"]:
            points[name] += 1
            for metric in point["metrics"].values():
                if metric["primary"]:
                    groups[name][metric["category"]].append((metric["predicted"], metric["measured"]))
    return {
        name: {"points": points[name], **{c: _stats(groups[name][c]) for c in CATEGORIES}} for name in sorted(groups)
    }


def summaries(records: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for corpus in CORPORA:
        mine = [r for r in records if r["corpus"] == corpus]
        if not mine:
            continue
        scored = [r for r in mine if r["scored"]]
        reasons: dict[str, int] = defaultdict(int)
        for r in mine:
            if not r["scored"]:
                reasons[r["reason"]] += 1
        out[corpus] = {
            "coverage": {
                "rows": len(scored),
                "of": len(mine),
                "points": sum(len(r["points"]) for r in scored),
                "not_scored": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            },
            "overall": summarize(mine, lambda r: "overall")["overall"] if scored else None,
            "by_source": summarize(mine, lambda r: r["source"]),
            "by_engine_gpu": summarize(mine, lambda r: r["group"]),
        }
    return out


def _cell(stats: dict[str, Any]) -> str:
    if not stats["n"]:
        return "-"
    return f"{stats['median_ape'] * 100:.1f} % / {stats['bias']:.2f} ({stats['n']})"


def print_groups(title: str, groups: dict[str, Any]) -> None:
    print(f"\n{title}  (cells: median APE / bias (points))")
    print("| group | points | TTFT | TPOT / ITL | tokens/s per user | throughput | e2e |")
    print("|---|---:|---|---|---|---|---|")
    for name, g in groups.items():
        print(f"| {name} | {g['points']} | " + " | ".join(_cell(g[c]) for c in CATEGORIES) + " |")


def run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    mapping = _mapping()
    return [predict_row(r, mapping) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", nargs="*", choices=list(CORPORA), default=list(CORPORA))
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rows = load_rows(tuple(args.corpus))
    began = time.perf_counter()
    records = run(rows)
    wall = time.perf_counter() - began
    summary = summaries(records)
    for corpus, s in summary.items():
        cov = s["coverage"]
        print(f"\n## {corpus}: {cov['rows']} of {cov['of']} rows scored ({cov['points']} points); not scored:")
        for reason, n in cov["not_scored"].items():
            print(f"- {n} × {reason}")
        if s["overall"]:
            print_groups(f"{corpus}: overall", {"overall": s["overall"]})
        print_groups(f"{corpus}: per source", s["by_source"])
        print_groups(f"{corpus}: per (engine, GPU)", s["by_engine_gpu"])
    print(f"\n{len(rows)} rows predicted in {wall:.1f} s")
    if args.write:
        report = {
            "source": "benchmarks/validate_static.py",
            "corpus": "benchmarks/data/published_latency/{static,under_load}.json (published tables; nothing fitted)",
            "summaries": summary,
            "rows": {r["id"]: r for r in records},
        }
        REPORT.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
