"""memplan's plans next to `aiconfigurator cli default`'s recommendations, each checked against the measured rows of
aiconfigurator-core's silicon sample (benchmarks/data/silicon/silicon_sample.csv).

Two halves, so that memplan, its tests and CI never need aiconfigurator:

    # (a) aiconfigurator 0.12.0, in its own virtual environment (see benchmarks/data/silicon/README.md):
    /tmp/aicvenv/bin/python benchmarks/compare_plans_aic.py aic [--cases NAME,...]
    #     -> benchmarks/data/silicon/aiconfigurator-0.12.0-default-<case>.json (one small JSON per case)

    # (b) memplan, reading those JSONs:
    .venv/bin/python benchmarks/compare_plans_aic.py compare
    #     -> benchmarks/results/plans-vs-aiconfigurator.json and .md

(a) calls ``aiconfigurator.cli.api.cli_default`` — the programmatic `aiconfigurator cli default --model-path M
--total-gpus N --system S --backend B --isl I --osl O --ttft T --tpot P` — and keeps, per case, the best aggregated
configurations (top 3: TP/PP/attention-DP/MoE-TP/EP, batch size, concurrency, replicas in the N GPUs, predicted
TTFT/TPOT, tokens/s/GPU and tokens/s/user) and the best disaggregated one, and which of the two it chose.

(b) asks memplan's planner (``planner.plans.search.plan_serving``) the same question: the same GPU, engine, weight
and KV-cache formats as aiconfigurator's pick, the same ISL/OSL, TTFT and TPOT targets (and tokens/s/user =
1000 / TPOT), ``max_gpus`` = N, aggregated serving. aiconfigurator's targets carry no percentile: it filters on one
deterministic steady-state TTFT and TPOT per configuration, so memplan is asked at p50, the nearest of its
percentiles. aiconfigurator searches "the most tokens/s/GPU from N GPUs"; memplan plans for a load, so it is given
the load aiconfigurator says the N GPUs serve (its pick's concurrency × replicas, closed loop) and answers its
cheapest plan for it (one GPU type and price: the most tokens/s/GPU that serves that load within the SLO, possibly
on fewer GPUs). Its frontier's best point that meets the SLO (the most tokens/s/GPU at a full batch, any load) is
reported too.

Each recommendation is then looked up in the silicon sample: the aggregated rows of the same system, backend, model,
precision, ISL/OSL, TP (and attention-DP, PP 1) at the concurrency per replica nearest the recommended one. Measured
tokens/s/GPU = concurrency × OSL / (TTFT + (OSL − 1) · TPOT) / GPUs per replica (the closed-loop steady state both
tools use), measured tokens/s/user = 1000 / TPOT. The verdict says which recommendation the measured rows support:
its measured throughput and whether it meets the SLO as measured, against the best measured configuration of the
case. A recommendation with no row of its TP (or with PP > 1, which the sample never measured) has "no measured
row".
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "silicon"
RESULTS = ROOT / "benchmarks" / "results"
AIC_VERSION = "0.12.0"

# Every case: aiconfigurator's inputs, memplan's catalog model, and the silicon sample's rows of the same deployment
# (model_path and precision as the sample labels them). Chosen where the sample measured several TP widths and
# concurrencies at that ISL/OSL; the SLOs are the kind a service states, not tuned to either tool.
CASES: tuple[dict[str, Any], ...] = (
    {
        "name": "llama70b-fp8-h200-trtllm-1k1k",
        "aic_model": "nvidia/Llama-3.1-70B-Instruct-FP8",
        "system": "h200_sxm",
        "backend": "trtllm",
        "isl": 1024,
        "osl": 1024,
        "ttft_ms": 2000.0,
        "tpot_ms": 30.0,
        "total_gpus": 8,
        "catalog": "llama-3.1-70b",
        "silicon_model": "meta-llama/Llama-3.1-70B",
        "silicon_precision": "fp8",
    },
    {
        "name": "llama70b-fp8-h200-trtllm-8k1k",
        "aic_model": "nvidia/Llama-3.1-70B-Instruct-FP8",
        "system": "h200_sxm",
        "backend": "trtllm",
        "isl": 8192,
        "osl": 1024,
        "ttft_ms": 3000.0,
        "tpot_ms": 40.0,
        "total_gpus": 8,
        "catalog": "llama-3.1-70b",
        "silicon_model": "meta-llama/Llama-3.1-70B",
        "silicon_precision": "fp8",
    },
    {
        "name": "llama70b-fp8-h200-vllm-1k1k",
        "aic_model": "nvidia/Llama-3.1-70B-Instruct-FP8",
        "system": "h200_sxm",
        "backend": "vllm",
        "isl": 1024,
        "osl": 1024,
        "ttft_ms": 1000.0,
        "tpot_ms": 20.0,
        "total_gpus": 8,
        "catalog": "llama-3.1-70b",
        "silicon_model": "meta-llama/Llama-3.1-70B",
        "silicon_precision": "fp8",
    },
    {
        "name": "llama8b-bf16-h100-trtllm-2k512",
        "aic_model": "meta-llama/Meta-Llama-3.1-8B",
        "system": "h100_sxm",
        "backend": "trtllm",
        "isl": 2048,
        "osl": 512,
        "ttft_ms": 500.0,
        "tpot_ms": 10.0,
        "total_gpus": 8,
        "catalog": "llama-3.1-8b",
        "silicon_model": "meta-llama/Llama-3.1-8B-Instruct",
        "silicon_precision": "",
    },
    {
        "name": "qwen32b-fp8-h100-trtllm-1k512",
        "aic_model": "Qwen/Qwen3-32B-FP8",
        "system": "h100_sxm",
        "backend": "trtllm",
        "isl": 1024,
        "osl": 512,
        "ttft_ms": 1000.0,
        "tpot_ms": 25.0,
        "total_gpus": 8,
        "catalog": "qwen3-32b",
        "silicon_model": "Qwen/Qwen3-32B",
        "silicon_precision": "fp8",
    },
    {
        "name": "qwen32b-bf16-h100-vllm-1k1k",
        "aic_model": "Qwen/Qwen3-32B",
        "system": "h100_sxm",
        "backend": "vllm",
        "isl": 1024,
        "osl": 1024,
        "ttft_ms": 2000.0,
        "tpot_ms": 30.0,
        "total_gpus": 8,
        "catalog": "qwen3-32b",
        "silicon_model": "Qwen/Qwen3-32B",
        "silicon_precision": "",
    },
    {
        "name": "qwen235b-fp8-h100-trtllm-1k512",
        "aic_model": "Qwen/Qwen3-235B-A22B-FP8",
        "system": "h100_sxm",
        "backend": "trtllm",
        "isl": 1024,
        "osl": 512,
        "ttft_ms": 2000.0,
        "tpot_ms": 40.0,
        "total_gpus": 8,
        "catalog": "qwen3-235b-a22b",
        "silicon_model": "Qwen/Qwen3-235B-A22B-FP8",
        "silicon_precision": "fp8",
        "moe": True,  # measured rows are matched on the expert-parallel width too
    },
)
CASE_BY_NAME = {c["name"]: c for c in CASES}

AGG_KEEP = {  # aiconfigurator's best_configs["agg"] column -> saved field
    "tp": "tp",
    "pp": "pp",
    "dp": "attention_dp",
    "moe_tp": "moe_tp",
    "moe_ep": "moe_ep",
    "bs": "batch_size",
    "concurrency": "concurrency",
    "num_total_gpus": "gpus_per_replica",
    "ttft": "ttft_ms",
    "tpot": "tpot_ms",
    "request_latency": "request_latency_ms",
    "tokens/s": "tokens_per_s_per_replica",
    "tokens/s/gpu": "tokens_per_s_per_gpu",
    "tokens/s/gpu_cluster": "tokens_per_s_per_gpu_cluster",
    "tokens/s/user": "tokens_per_s_per_user",
    "gemm": "gemm",
    "kvcache": "kvcache",
    "memory": "memory_gib",
    "version": "backend_version",
}
DISAGG_KEEP = {
    **{f"({s}){k}": f"{s}_{v}" for s in ("p", "d") for k, v in (("tp", "tp"), ("pp", "pp"), ("dp", "attention_dp"),
                                                                ("moe_ep", "moe_ep"), ("bs", "batch_size"),
                                                                ("workers", "workers"), ("gemm", "gemm"),
                                                                ("kvcache", "kvcache"))},
    "concurrency": "concurrency",
    "num_total_gpus": "gpus",
    "ttft": "ttft_ms",
    "tpot": "tpot_ms",
    "tokens/s/gpu": "tokens_per_s_per_gpu",
    "tokens/s/gpu_cluster": "tokens_per_s_per_gpu_cluster",
    "tokens/s/user": "tokens_per_s_per_user",
}  # fmt: skip


def aic_path(name: str) -> Path:
    return DATA / f"aiconfigurator-{AIC_VERSION}-default-{name}.json"


# --------------------------------------------------------------------------------------------------------------------
# (a) aiconfigurator's side: run under /tmp/aicvenv only.


def _plain(value: Any) -> Any:
    """numpy / pandas scalars as JSON numbers and strings."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    return value


def _rows(frame: Any, keep: dict[str, str], n: int) -> list[dict[str, Any]]:
    if frame is None or len(frame) == 0:
        return []
    out = []
    for _, row in frame.head(n).iterrows():
        out.append({field: _plain(row[col]) for col, field in keep.items() if col in row.index})
    return out


def run_aiconfigurator(case: dict[str, Any], top_n: int = 3) -> dict[str, Any]:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    for name in ("aiconfigurator", "aiconfigurator_core"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from importlib.metadata import version

    from aiconfigurator.cli.api import cli_default  # type: ignore[import-not-found]

    began = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = cli_default(
            model_path=case["aic_model"],
            total_gpus=case["total_gpus"],
            system=case["system"],
            backend=case["backend"],
            isl=case["isl"],
            osl=case["osl"],
            ttft=case["ttft_ms"],
            tpot=case["tpot_ms"],
            top_n=top_n,
        )
    wall = time.perf_counter() - began
    agg = _rows(result.best_configs.get("agg"), AGG_KEEP, top_n)
    for row in agg:
        row["replicas"] = case["total_gpus"] // max(1, int(row["gpus_per_replica"]))
        row["total_concurrency"] = row["replicas"] * int(row["concurrency"])
    disagg = _rows(result.best_configs.get("disagg"), DISAGG_KEEP, 1)
    return {
        "tool": "aiconfigurator",
        "version": version("aiconfigurator"),
        "core_version": version("aiconfigurator-core"),
        "call": "aiconfigurator.cli.api.cli_default (= aiconfigurator cli default), database_mode SILICON, "
        "serving modes agg and disagg, other arguments at their defaults",
        "command": (
            f"aiconfigurator cli default --model-path {case['aic_model']} --total-gpus {case['total_gpus']} "
            f"--system {case['system']} --backend {case['backend']} --isl {case['isl']} --osl {case['osl']} "
            f"--ttft {case['ttft_ms']:g} --tpot {case['tpot_ms']:g} --top-n {top_n}"
        ),
        "case": case,
        "chosen": result.chosen_exp,
        "best_tokens_per_s_per_gpu": {k: _plain(v) for k, v in result.best_throughputs.items()},
        "agg": agg,
        "disagg": disagg,
        "wall_s": round(wall, 1),
    }


def main_aic(names: list[str]) -> None:
    for name in names:
        case = CASE_BY_NAME[name]
        print(f"{name}: aiconfigurator cli default ...", flush=True)
        try:
            record = run_aiconfigurator(case)
        except Exception as exc:  # recorded, so the comparison can say aiconfigurator gave no answer
            record = {"tool": "aiconfigurator", "case": case, "error": f"{type(exc).__name__}: {exc}"[:500]}
        aic_path(name).write_text(json.dumps(record, indent=1) + "\n")
        best = record.get("agg", [{}])[0] if record.get("agg") else {}
        print(
            f"  -> {record.get('chosen')}, agg {best.get('tokens_per_s_per_gpu')} tok/s/GPU, {record.get('wall_s')} s"
        )


# --------------------------------------------------------------------------------------------------------------------
# (b) memplan's side and the measured rows: memplan's venv, no aiconfigurator.

GPU_IDS = {"h100_sxm": "h100-sxm", "h200_sxm": "h200", "b200_sxm": "b200"}
WEIGHTS = {
    "bfloat16": "bf16",
    "float16": "fp16",
    "fp8": "fp8",
    "fp8_static": "fp8",  # per-tensor FP8 (ModelOpt checkpoints)
    "fp8_block": "fp8_block",
    "nvfp4": "nvfp4",
}
KV = {"bfloat16": "bf16", "float16": "fp16", "fp8": "fp8"}


def load_silicon() -> list[dict[str, str]]:
    with (DATA / "silicon_sample.csv").open(newline="") as f:
        return [r for r in csv.DictReader(f) if r["mode"] == "agg"]


def _int(value: str, default: int = 1) -> int:
    return int(float(value)) if value not in ("", None) else default


def measured(row: dict[str, str], osl: int) -> dict[str, Any]:
    """One silicon row as a configuration with its measured throughput."""
    tp, dp, pp = _int(row["tp_size"]), max(1, _int(row["attention_dp_size"])), max(1, _int(row["pp_size"]))
    c = _int(row["batch_size"]) * dp
    ttft, tpot = float(row["silicon_ttft_ms"]), float(row["silicon_tpot_ms"])
    cycle_s = (ttft + (osl - 1) * tpot) / 1e3
    return {
        "id": row["id"],
        "tp": tp,
        "pp": pp,
        "attention_dp": dp,
        "moe_ep": _int(row["moe_ep_size"]),
        "concurrency": c,
        "ttft_ms": round(ttft, 2),
        "tpot_ms": round(tpot, 3),
        "tokens_per_s_per_gpu": round(c * osl / cycle_s / (tp * dp * pp), 1),
        "tokens_per_s_per_user": round(1e3 / tpot, 2),
        "backend_version": row["backend_version"],
    }


def case_rows(case: dict[str, Any], rows: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
    """The measured aggregated rows of the case's deployment (system, backend, model, precision, ISL/OSL)."""
    rows = load_silicon() if rows is None else rows
    return [
        measured(r, case["osl"])
        for r in rows
        if r["system"] == case["system"]
        and r["backend"] == case["backend"]
        and r["model_path"] == case["silicon_model"]
        and r["precision"] == case["silicon_precision"]
        and int(r["isl"]) == case["isl"]
        and int(r["osl"]) == case["osl"]
    ]


def meets(m: dict[str, Any], case: dict[str, Any]) -> bool:
    return bool(m["ttft_ms"] <= case["ttft_ms"] and m["tpot_ms"] <= case["tpot_ms"])


def _level(same: list[dict[str, Any]], c: int) -> dict[str, Any]:
    """The measured runs at concurrency c (repeated runs averaged)."""
    at = [m for m in same if m["concurrency"] == c]
    out = dict(at[0])
    if len(at) > 1:
        for key in ("ttft_ms", "tpot_ms", "tokens_per_s_per_gpu", "tokens_per_s_per_user"):
            out[key] = round(sum(m[key] for m in at) / len(at), 3)
        out["id"] = ",".join(m["id"] for m in at)
    out["runs"] = len(at)
    return out


def nearest(
    rows: list[dict[str, Any]], tp: int, pp: int, dp: int, concurrency: int, osl: int, ep: int | None = None
) -> dict[str, Any] | None:
    """The measured rows of the same TP (and attention-DP, PP) at the concurrency per replica nearest the
    recommended one (on a log scale; repeated runs averaged). Where the recommended concurrency lies between two
    measured ones, their TTFT and TPOT interpolated linearly in the concurrency as well ("interpolated")."""
    same = [m for m in rows if m["tp"] == tp and m["pp"] == pp and m["attention_dp"] == dp]
    same = [m for m in same if ep is None or m["moe_ep"] == ep]
    if not same:
        return None
    levels = sorted({m["concurrency"] for m in same})
    c = min(levels, key=lambda x: (abs(math.log(x / max(1, concurrency))), x))
    out = _level(same, c)
    out["exact"] = c == concurrency
    out["measured_concurrencies"] = levels
    below = [x for x in levels if x < concurrency]
    above = [x for x in levels if x > concurrency]
    if not out["exact"] and below and above:
        lo, hi = _level(same, below[-1]), _level(same, above[0])
        f = (concurrency - lo["concurrency"]) / (hi["concurrency"] - lo["concurrency"])
        ttft = lo["ttft_ms"] + f * (hi["ttft_ms"] - lo["ttft_ms"])
        tpot = lo["tpot_ms"] + f * (hi["tpot_ms"] - lo["tpot_ms"])
        cycle_s = (ttft + (osl - 1) * tpot) / 1e3
        out["interpolated"] = {
            "concurrency": concurrency,
            "between": [lo["concurrency"], hi["concurrency"]],
            "ttft_ms": round(ttft, 2),
            "tpot_ms": round(tpot, 3),
            "tokens_per_s_per_gpu": round(concurrency * osl / cycle_s / (tp * dp * pp), 1),
            "tokens_per_s_per_user": round(1e3 / tpot, 2),
        }
    return out


def best_measured(rows: list[dict[str, Any]], case: dict[str, Any]) -> dict[str, Any] | None:
    """The measured configuration with the most tokens/s/GPU that meets the SLO as measured."""
    ok = [m for m in rows if meets(m, case)]
    return max(ok, key=lambda m: m["tokens_per_s_per_gpu"]) if ok else None


def _aic_predictions() -> dict[str, dict[str, str]]:
    path = DATA / f"aiconfigurator-{AIC_VERSION}-predictions.csv"
    with path.open(newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f) if r["status"] == "ok"}


def predictions_at(ids: list[str], silicon: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Both tools' TTFT/TPOT for the measured rows themselves (averaged over repeated runs): memplan's as
    benchmarks/validate_serving.py predicts them, aiconfigurator's from its committed predictions
    (aiconfigurator-0.12.0-predictions.csv, benchmarks/aiconfigurator_baseline.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import validate_serving

    by_id = {r["id"]: r for r in (load_silicon() if silicon is None else silicon)}
    aic = _aic_predictions()
    out: dict[str, Any] = {}
    mp = [validate_serving.predict(by_id[i]) for i in ids]
    mp = [x for x in mp if x.get("ttft_ms") is not None]
    if mp:
        out["memplan"] = {
            "ttft_ms": round(sum(x["ttft_ms"] for x in mp) / len(mp), 2),
            "tpot_ms": round(sum(x["tpot_ms"] for x in mp) / len(mp), 3),
        }
    ai = [aic[i] for i in ids if i in aic]
    if ai:
        out["aiconfigurator"] = {
            "ttft_ms": round(sum(float(x["aic_ttft_ms"]) for x in ai) / len(ai), 2),
            "tpot_ms": round(sum(float(x["aic_tpot_ms"]) for x in ai) / len(ai), 3),
        }
    return out


def memplan_request(case: dict[str, Any], aic: dict[str, Any]) -> dict[str, Any]:
    """The PlanRequest (as JSON) for the case: aiconfigurator's GPU, engine, formats, lengths, SLO and GPU count, and
    the load its aggregated pick serves."""
    pick = aic["agg"][0]
    return {
        "model": case["catalog"],
        "workload": {
            "input_tokens": case["isl"],
            "output_tokens": case["osl"],
            "concurrency": int(pick["total_concurrency"]),
        },
        "slo": {
            "ttft_ms": case["ttft_ms"],
            "tpot_ms": case["tpot_ms"],
            "min_tokens_per_s_per_user": round(1e3 / case["tpot_ms"], 6),
            "percentile": "p50",
        },
        "constraints": {
            "gpus": [GPU_IDS[case["system"]]],
            "engines": [case["backend"]],
            "max_gpus": case["total_gpus"],
            "weight_formats": [WEIGHTS[pick["gemm"]]],
            "kv_cache_dtypes": [KV[pick["kvcache"]]],
            "disaggregated": False,
        },
    }


def run_memplan(request_json: dict[str, Any]) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from planner import load_catalog
    from planner.plans.search import plan_serving
    from planner.plans.spec import PlanRequest

    began = time.perf_counter()
    result = plan_serving(PlanRequest.model_validate(request_json), load_catalog())
    wall = time.perf_counter() - began
    plan = None
    if result.plans:
        p = result.plans[0]
        pool = p.pools[0]
        load = pool.request.load
        clients = load.concurrency if load is not None and load.concurrency is not None else pool.max_num_seqs
        plan = {
            "label": p.label,
            "tp": pool.tensor_parallel,
            "pp": pool.pipeline_parallel,
            "ep": pool.expert_parallel,
            "attention_dp": pool.attention_data_parallel,
            "replicas": pool.replicas,
            "gpus": p.num_gpus,
            "max_num_seqs": pool.max_num_seqs,
            "concurrency": int(clients),
            "batch": min(int(clients), pool.max_num_seqs),
            "ttft_p50_ms": round(p.ttft.p50_ms, 2),
            "tpot_p50_ms": round(p.tpot.p50_ms, 3),
            "tokens_per_s_per_gpu": round(p.tokens_per_s_per_gpu, 1),
            "tokens_per_s_per_user": round(p.tokens_per_s_per_user, 2),
            "latency_method": p.latency_method,
        }
    best = max((f for f in result.frontier if f.meets_slo), key=lambda f: f.tokens_per_s_per_gpu, default=None)
    frontier_best = None
    if best is not None:
        frontier_best = {
            "label": best.label,
            "tp": best.tensor_parallel,
            "pp": best.pipeline_parallel,
            "ep": best.expert_parallel,
            "attention_dp": best.attention_data_parallel,
            "concurrency": best.concurrency_per_replica,
            "ttft_ms": round(best.ttft_ms, 2),
            "tpot_ms": round(best.tpot_ms, 3),
            "tokens_per_s_per_gpu": round(best.tokens_per_s_per_gpu, 1),
            "tokens_per_s_per_user": round(best.tokens_per_s_per_user, 2),
            "method": best.method,
        }
    return {
        "plan": plan,
        "frontier_best": frontier_best,
        "plans": [p.label for p in result.plans],
        "warnings": list(result.warnings),
        "reasons": result.summary.reasons,
        "wall_s": round(wall, 2),
    }


def _fmt(m: dict[str, Any] | None) -> str:
    if m is None:
        return "no measured row"
    return (
        f"TP{m['tp']} c={m['concurrency']}: {m['tokens_per_s_per_gpu']:,.0f} tok/s/GPU, "
        f"{m['tokens_per_s_per_user']:.1f} tok/s/user (TTFT {m['ttft_ms']:.0f} ms, TPOT {m['tpot_ms']:.1f} ms)"
    )


def _check(who: str, rec: dict[str, Any] | None, row: dict[str, Any] | None, case: dict[str, Any]) -> dict[str, Any]:
    """How the measured rows judge a recommendation: at its concurrency (exact), interpolated between the two
    measured concurrencies around it, or only the nearest one when it lies beyond the measured range."""
    if rec is None:
        return {"who": who, "recommended": None, "measured": None, "status": "no recommendation"}
    if row is None:
        width = rec.get("attention_dp", 1)
        dp = f" DP{width}" if width > 1 else ""
        ep = f" EP{rec.get('moe_ep', rec.get('ep'))}" if case.get("moe") else ""
        tp = rec["tp"] if who == "aiconfigurator" else rec["tp"] // width  # the sample's tp_size: one DP rank's
        why = "PP > 1 was never measured" if rec.get("pp", 1) > 1 else f"no TP{tp}{dp}{ep} row"
        return {"who": who, "recommended": rec, "measured": None, "status": f"no measured row ({why})"}
    judged = row.get("interpolated", row)
    status = "exact" if row["exact"] else "interpolated" if "interpolated" in row else "beyond the measured range"
    return {
        "who": who,
        "recommended": rec,
        "measured": row,
        "status": status,
        "meets_slo_measured": meets(judged, case),
        "measured_tokens_per_s_per_gpu": judged["tokens_per_s_per_gpu"],
    }


def _label(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "no plan"
    dp = f" DP{rec['attention_dp']}" if rec.get("attention_dp", 1) > 1 else ""
    return f"TP{rec['tp']} PP{rec.get('pp', 1)}{dp} at {rec['concurrency']}/replica"


def _layout(rec: dict[str, Any], aic: bool) -> tuple[int, int, int, int]:
    """(GPUs per replica, attention-DP ranks, PP, replicas): aiconfigurator's tp is one attention-DP rank's TP,
    memplan's tensor_parallel all of a replica's GPUs (planner.serving.spec attention_data_parallel)."""
    dp = rec.get("attention_dp", 1)
    return (rec["tp"] * dp if aic else rec["tp"], dp, rec.get("pp", 1), rec["replicas"])


def verdict(case: dict[str, Any], checks: list[dict[str, Any]], best: dict[str, Any] | None) -> dict[str, Any]:
    """Which recommendation the measured rows support. Supported: its TP is the TP of the best measured
    configuration that meets the SLO and the measured rows at its concurrency (exact or interpolated) meet the SLO.
    TP only: the same, but its concurrency lies beyond the measured range, so only its TP is checked."""
    by = {c["who"]: c for c in checks}
    a, p = by["aiconfigurator"]["recommended"], by["memplan"]["recommended"]
    same = p is not None and _layout(a, aic=True) == _layout(p, aic=False)
    parts = [
        ("agree: " if same else "disagree: ")
        + f"aiconfigurator {_label(a)} × {a['replicas']}, memplan {_label(p)}"
        + (f" × {p['replicas']}" if p is not None else "")
    ]
    supported, tp_only = [], []
    for c in checks:
        m = c.get("measured")
        if m is None:
            parts.append(f"{c['who']}: {c['status']}")
            continue
        rec_c = c["recommended"]["concurrency"]
        where = f"nearest measured c={m['concurrency']}" if c["status"].startswith("beyond") else c["status"]
        parts.append(
            f"{c['who']} at {rec_c}/replica ({where}): {c['measured_tokens_per_s_per_gpu']:,.0f} tok/s/GPU "
            f"measured, {'meets' if c['meets_slo_measured'] else 'misses'} the SLO"
        )
        if best is not None and m["tp"] == best["tp"] and c["meets_slo_measured"]:
            (tp_only if c["status"] == "beyond the measured range" else supported).append(c["who"])
    if best is None:
        parts.append("no measured configuration of this deployment meets the SLO")
    else:
        parts.append(f"best measured configuration meeting the SLO: {_fmt(best)}")

    sup, tpo = supported, tp_only
    parts.append("the measured rows support " + (" and ".join(sup) if sup else "neither"))
    if tpo:
        parts.append(f"they support only the TP of {' and '.join(tpo)} (the concurrency was not measured)")
    return {"agree": same, "supported": sup, "tp_only": tpo, "text": "; ".join(parts)}


def compare_case(case: dict[str, Any], silicon: list[dict[str, str]] | None = None) -> dict[str, Any]:
    aic = json.loads(aic_path(case["name"]).read_text())
    rows = case_rows(case, silicon)
    out: dict[str, Any] = {"case": case, "measured_rows": len(rows)}
    if "error" in aic or not aic.get("agg"):
        out["aiconfigurator"] = {"error": aic.get("error", "no aggregated configuration")}
        return out
    pick = aic["agg"][0]
    aic_rec = {
        "tp": int(pick["tp"]),
        "pp": int(pick["pp"]),
        "attention_dp": int(pick["attention_dp"]),
        "moe_ep": int(pick["moe_ep"]),
        "replicas": int(pick["replicas"]),
        "gpus": int(pick["replicas"]) * int(pick["gpus_per_replica"]),
        "batch_size": int(pick["batch_size"]),
        "concurrency": int(pick["concurrency"]),
        "ttft_ms": pick["ttft_ms"],
        "tpot_ms": pick["tpot_ms"],
        "tokens_per_s_per_gpu": pick["tokens_per_s_per_gpu"],
        "tokens_per_s_per_gpu_cluster": pick["tokens_per_s_per_gpu_cluster"],
        "tokens_per_s_per_user": pick["tokens_per_s_per_user"],
        "gemm": pick["gemm"],
        "kvcache": pick["kvcache"],
    }
    request_json = memplan_request(case, aic)
    mp = run_memplan(request_json)
    plan, fb = mp["plan"], mp["frontier_best"]

    def ep(width: int) -> int | None:
        return width if case.get("moe") else None

    aic_row = nearest(
        rows,
        aic_rec["tp"],
        aic_rec["pp"],
        aic_rec["attention_dp"],
        aic_rec["concurrency"],
        case["osl"],
        ep(aic_rec["moe_ep"]),
    )

    def mp_row(rec: dict[str, Any] | None) -> dict[str, Any] | None:
        # memplan's tensor_parallel counts a replica's GPUs; the sample's tp_size is one attention-DP rank's TP
        if rec is None:
            return None
        dp = rec.get("attention_dp", 1)
        return nearest(rows, rec["tp"] // dp, rec["pp"], dp, rec["concurrency"], case["osl"], ep(rec["ep"]))

    plan_row, fb_row = mp_row(plan), mp_row(fb)
    checks = [
        _check("aiconfigurator", aic_rec, aic_row, case),
        _check("memplan", plan, plan_row, case),
        _check("memplan frontier", fb, fb_row, case),
    ]
    for check in checks:
        if check.get("measured") is not None:
            check["predicted_at_measured"] = predictions_at(check["measured"]["id"].split(","), silicon)
    best = best_measured(rows, case)
    out.update(
        aiconfigurator={
            "chosen": aic["chosen"],
            "agg": aic_rec,
            "agg_runner_up": aic["agg"][1:],
            "disagg": aic["disagg"][0] if aic["disagg"] else None,
            "best_tokens_per_s_per_gpu": aic["best_tokens_per_s_per_gpu"],
            "command": aic["command"],
            "version": aic["version"],
        },
        memplan_request=request_json,
        memplan=mp,
        checks=checks,
        best_measured=best,
        verdict=verdict(case, checks, best),
    )
    return out


def _cfg_aic(a: dict[str, Any]) -> str:
    dp = f" DP{a['attention_dp']}" if a["attention_dp"] > 1 else ""
    ep = f" EP{a['moe_ep']}" if a["moe_ep"] > 1 else ""
    return f"TP{a['tp']} PP{a['pp']}{dp}{ep} × {a['replicas']} ({a['gpus']} GPUs), batch {a['batch_size']}"


def _cfg_mp(p: dict[str, Any]) -> str:
    ep = f" EP{p['ep']}" if p["ep"] > 1 else ""
    dp = f" DP{p['attention_dp']}" if p.get("attention_dp", 1) > 1 else ""
    return (
        f"TP{p['tp']} PP{p['pp']}{ep}{dp} × {p['replicas']} ({p['gpus']} GPUs), {p['concurrency']} users/replica "
        f"(max_num_seqs {p['max_num_seqs']})"
    )


def _meas(check: dict[str, Any]) -> str:
    m = check.get("measured")
    if m is None:
        return check["status"]
    c = f"c={m['concurrency']}" + ("" if m["exact"] else f" (nearest to {check['recommended']['concurrency']})")
    pred = check.get("predicted_at_measured", {})
    said = ", ".join(
        f"{'aic' if who == 'aiconfigurator' else who} {v['ttft_ms']:.0f} / {v['tpot_ms']:.1f}"
        for who, v in pred.items()
    )
    text = (
        f"TP{m['tp']} {c}: {m['tokens_per_s_per_gpu']:,.0f} / {m['tokens_per_s_per_user']:.1f}; "
        f"TTFT {m['ttft_ms']:.0f}, TPOT {m['tpot_ms']:.1f}" + (f" (predicted there: {said})" if said else "")
    )
    if "interpolated" in m:
        i = m["interpolated"]
        text += (
            f"; interpolated c={i['concurrency']} (between {i['between'][0]} and {i['between'][1]}): "
            f"{i['tokens_per_s_per_gpu']:,.0f} / {i['tokens_per_s_per_user']:.1f}, TTFT {i['ttft_ms']:.0f}, "
            f"TPOT {i['tpot_ms']:.1f}"
        )
    flag = "meets" if check["meets_slo_measured"] else "misses"
    return f"{text}: **{flag}**" + (" (beyond the measured range)" if check["status"].startswith("beyond") else "")


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# memplan's plans vs `aiconfigurator cli default`, checked against measured runs",
        "",
        f"Made by `benchmarks/compare_plans_aic.py` (aiconfigurator {AIC_VERSION}, database SILICON; memplan's "
        "`plan_serving` at p50, the same GPU, engine, formats, ISL/OSL, SLO and GPU count, for the load "
        "aiconfigurator's pick serves). Throughput: tokens/s/GPU / tokens/s/user. Measured: the silicon sample's "
        "rows of the same system, engine, model, precision, ISL/OSL and TP at the nearest concurrency per replica; "
        "measured tok/s/GPU = c·OSL / (TTFT + (OSL−1)·TPOT) / GPUs per replica, tok/s/user = 1000 / TPOT "
        '(latencies in ms). "predicted there": each tool\'s TTFT / TPOT for that measured row itself (memplan as '
        "benchmarks/validate_serving.py predicts it, aiconfigurator from aiconfigurator-0.12.0-predictions.csv).",
        "",
        "| case | SLO (TTFT / TPOT ms) | tool | recommended | predicted tok/s/GPU / tok/s/user | "
        "measured nearest (tok/s/GPU / tok/s/user) |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["cases"]:
        case = r["case"]
        slo = f"{case['ttft_ms']:g} / {case['tpot_ms']:g}"
        head = f"{case['name']} ({case['total_gpus']} GPUs)"
        if "error" in r.get("aiconfigurator", {}):
            lines.append(f"| {head} | {slo} | aiconfigurator | error: {r['aiconfigurator']['error']} | | |")
            continue
        a, mp = r["aiconfigurator"]["agg"], r["memplan"]
        checks = {c["who"]: c for c in r["checks"]}
        lines.append(
            f"| {head} | {slo} | aiconfigurator (agg) | {_cfg_aic(a)} | {a['tokens_per_s_per_gpu']:,.0f} / "
            f"{a['tokens_per_s_per_user']:.1f} | {_meas(checks['aiconfigurator'])} |"
        )
        d = r["aiconfigurator"]["disagg"]
        if d is not None:
            lines.append(
                f"| | | aiconfigurator (disagg{', chosen' if r['aiconfigurator']['chosen'] == 'disagg' else ''}) | "
                f"prefill TP{d['p_tp']} × {d['p_workers']}, decode TP{d['d_tp']} × {d['d_workers']} batch "
                f"{d['d_batch_size']} ({d['gpus']} GPUs) | {d['tokens_per_s_per_gpu']:,.0f} / "
                f"{d['tokens_per_s_per_user']:.1f} | not compared (agg rows only) |"
            )
        p = mp["plan"]
        if p is None:
            lines.append(f"| | | memplan (plan) | no plan: {'; '.join(mp['warnings'])} | | |")
        else:
            lines.append(
                f"| | | memplan (plan) | {_cfg_mp(p)} | {p['tokens_per_s_per_gpu']:,.0f} / "
                f"{p['tokens_per_s_per_user']:.1f} | {_meas(checks['memplan'])} |"
            )
        fb = mp["frontier_best"]
        if fb is not None:
            fb_ep = f" EP{fb['ep']}" if fb["ep"] > 1 else ""
            fb_ep += f" DP{fb['attention_dp']}" if fb.get("attention_dp", 1) > 1 else ""
            lines.append(
                f"| | | memplan (frontier best) | TP{fb['tp']} PP{fb['pp']}{fb_ep} at {fb['concurrency']}/replica | "
                f"{fb['tokens_per_s_per_gpu']:,.0f} / {fb['tokens_per_s_per_user']:.1f} | "
                f"{_meas(checks['memplan frontier'])} |"
            )
        b = r["best_measured"]
        best = "none meets the SLO" if b is None else (
            f"TP{b['tp']} c={b['concurrency']}: {b['tokens_per_s_per_gpu']:,.0f} / {b['tokens_per_s_per_user']:.1f}"
        )  # fmt: skip
        lines.append(f"| | | measured best meeting the SLO ({r['measured_rows']} rows) | {best} | | |")
    lines += ["", "## Verdicts", ""]
    for r in report["cases"]:
        if "verdict" in r:
            lines.append(f"* **{r['case']['name']}**: {r['verdict']['text']}.")
    return "\n".join(lines) + "\n"


def main_compare(names: list[str], write: bool = True) -> dict[str, Any]:
    silicon = load_silicon()
    report = {
        "source": "benchmarks/compare_plans_aic.py",
        "aiconfigurator": AIC_VERSION,
        "percentile": "p50 (aiconfigurator's targets have none: one steady-state estimate per configuration)",
        "cases": [compare_case(CASE_BY_NAME[n], silicon) for n in names],
    }
    if write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "plans-vs-aiconfigurator.json").write_text(json.dumps(report, indent=1) + "\n")
        md = RESULTS / "plans-vs-aiconfigurator.md"
        draft = ""
        if md.is_file() and "\n## README draft" in md.read_text():  # the hand-written summary is kept
            draft = md.read_text()[md.read_text().index("\n## README draft") :]
        md.write_text(markdown(report) + draft)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("half", choices=("aic", "compare"))
    parser.add_argument("--cases", default=",".join(CASE_BY_NAME), help="comma-separated case names")
    args = parser.parse_args()
    names = [n for n in args.cases.split(",") if n]
    if unknown := [n for n in names if n not in CASE_BY_NAME]:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASE_BY_NAME)}")
    if args.half == "aic":
        main_aic(names)
    else:
        report = main_compare(names)
        print(markdown(report))


if __name__ == "__main__":
    main()
