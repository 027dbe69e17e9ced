"""Score memplan's latency under load against measured end-to-end serving runs, side by side with aiconfigurator.

Run: .venv/bin/python benchmarks/validate_serving.py [--systems h100_sxm h200_sxm b200_sxm] [--limit N] [--jobs 2]
     [--write]
Reads benchmarks/data/silicon/silicon_sample.csv (5,221 runs shipped by aiconfigurator-core 0.12.0: TTFT and TPOT of
vLLM, SGLang and TensorRT-LLM at a concurrency, input and output length), maps every row memplan can represent
onto a serving request with a closed-loop load (benchmarks/data/silicon/models.json), predicts TTFT and TPOT, and
reports median APE, MAPE and bias per (GPU, engine), per (GPU, engine, model, precision) and overall, next to
aiconfigurator's own predictions of the same rows (benchmarks/data/silicon/aiconfigurator-0.12.0-predictions.csv,
made by benchmarks/aiconfigurator_baseline.py). APE = |predicted − measured| / measured; bias = median of
predicted / measured.

These rows only score: nothing in the step-time model is fitted on them (the kernel tables are fitted on kernel
measurements, benchmarks/fit_kernels.py).
--write updates benchmarks/results/validation-serving.json and planner/calibration/validation/serving.json (the
per-(GPU, engine) status every serving answer reports).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.inferencex_settings import settings_for, variables  # noqa: E402
from planner import InferenceRequest, SpecError, estimate_inference, load_catalog  # noqa: E402
from planner.serving.engines import resolve_profile  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "silicon"
SCORED_SYSTEMS = ("h100_sxm", "h200_sxm")  # the target; b200 is reported too
HOPPER = ("h100_sxm", "h200_sxm")
# aiconfigurator's quant-mode labels -> memplan weight formats (the kernels the row's engine ran)
FORMATS = {"": "bf16", "fp8": "fp8", "fp8_block": "fp8_block", "nvfp4": "nvfp4", "int4_wo": "int4_sym"}


def load_rows() -> list[dict[str, str]]:
    with (DATA / "silicon_sample.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _mapping() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "models.json").read_text())
    data["clients"] = json.loads((DATA / "clients.json").read_text())
    return data


def client_of(row: dict[str, str]) -> str:
    """Which load generator a row ran under (benchmarks/data/silicon/clients.json): aiconfigurator's own gap-analysis
    sweeps, or the InferenceX client every other row's grid matches."""
    return "aiconfigurator-sweep" if "aic-auto-gap-analysis" in row["silicon_data_source"] else "inferencex"


def uniform_lengths(tokens: int, ratio: float, points: int) -> list[dict[str, int]] | None:
    """bench_serving's random lengths, uniform over the integers [int(tokens · ratio), tokens], as `points` evenly
    spaced lengths of equal weight; None for fixed lengths (ratio 1)."""
    low = int(tokens * ratio)
    if low >= tokens:
        return None
    step = (tokens - low) / (points - 1)
    return [{"tokens": round(low + i * step)} for i in range(points)]


def load_for(row: dict[str, str], concurrency: int, mapping: dict[str, Any], clients_mode: str) -> dict[str, Any]:
    """The row's closed-loop load. `documented` (the scored default): the load generator the row's provenance names
    (benchmarks/data/silicon/clients.json): its prompts per client, its length distribution, and its warm-up
    prompts (sent first, not measured) unless the generator waits for them to finish before the measured ones, which
    then start on an idle engine as if there had been none. `fixed`: `concurrency` clients starting together, 8
    requests each, every prompt and output of the row's lengths."""
    if clients_mode == "fixed":
        return {"concurrency": concurrency}
    clients = mapping["clients"]
    client = clients["clients"][client_of(row)]
    # sent first and not measured (aiperf --warmup-request-count), unless the generator drains them first
    warmup = 0 if client.get("warmup_barrier") else client["warmup_per_client"] * concurrency
    load: dict[str, Any] = {
        "concurrency": concurrency,
        "num_requests": client["prompts_per_client"] * concurrency + warmup,
        "warmup_requests": warmup,
    }
    points = clients["length_points"]
    for field, column in (("input_lengths", "isl"), ("output_lengths", "osl")):
        lengths = uniform_lengths(int(row[column]), client["range_ratio"], points)
        if lengths:
            load[field] = lengths
    return load


def sweep_server_settings(engine: str, isl: int, batch_size: int) -> dict[str, int]:
    """The batch limits aiconfigurator's generator writes into the engine configuration of an aggregated deployment,
    which its gap-analysis sweeps ran (benchmarks/data/silicon/clients.json, `aiconfigurator-sweep`): aiconfigurator
    0.12.0 generator/rule_plugin/<engine>.rule, the default rule plugin (`when not preserve_engine_limits`):
    - TensorRT-LLM: `agg max_num_tokens = ceil32(max_batch_size + isl + 500)` (tokens_per_block 32), so about one
      whole context fits an iteration, where the engine's default 8,192 would take eight 1,024-token prompts at once;
    - vLLM: `agg_decode max_batch_size = 512 if max_batch_size < 512 else 2 · max_batch_size` (--max-num-seqs), then
      `agg max_num_tokens = max_batch_size + isl + 1500` (--max-num-batched-tokens);
    - SGLang: `agg_prefill_decode max_prefill_tokens = isl + 1500` (--max-prefill-tokens), the token budget of one
      prefill batch (its `agg enable_mixed_chunk = true` is not modelled: memplan's SGLang loop runs prefill first);
    - TensorRT-LLM and SGLang: `agg_decode cuda_graph_batch_sizes` = 1..16, then steps up to 512, and
      max_batch_size ± 8, with `cuda_graph_enable_padding = true`: decode batches up to max(512, max_batch_size + 8)
      replay CUDA graphs (cuda_graph_max_batch_size); vLLM's rule sets none (its default, min(2 · 512, 512)).
    The deployment's own max_batch_size is not recorded in a row; its batch size (the benchmark's concurrency per
    rank) stands in for it."""
    graphs = max(512, batch_size + 8)
    if engine == "trtllm":
        return {"max_num_batched_tokens": -(-(batch_size + isl + 500) // 32) * 32, "cuda_graph_max_batch_size": graphs}
    if engine == "vllm":
        seqs = 512 if batch_size < 512 else 2 * batch_size
        return {"max_num_seqs": seqs, "max_num_batched_tokens": seqs + isl + 1500}
    if engine == "sglang":
        return {"max_num_batched_tokens": isl + 1500, "cuda_graph_max_batch_size": graphs}
    return {}


def image_version(image: str) -> str | None:
    """The engine version a container image's tag names (`vllm/vllm-openai:v0.10.2`, `.../release:1.1.0rc2.post2`,
    `lmsysorg/sglang:v0.5.9-cu130`), or None for a tag that names none (`gpt-oss-dev`, `glm5-hopper`)."""
    match = re.search(r":v?(\d+\.\d+\.\d+(?:rc\d+)?(?:\.post\d+)?)", image)
    return match.group(1) if match else None


def cuda_graph_limit(unmodelled: dict[str, Any], names: dict[str, int]) -> int | None:
    """The largest CUDA-graph batch an InferenceX launch script set (benchmarks/data/silicon/inferencex_settings.json
    keeps the flags as the script wrote them): vLLM `--max-cudagraph-capture-size`, SGLang `--cuda-graph-max-bs`,
    TensorRT-LLM's `cuda_graph_config.max_batch_size` (every script that sets it sets enable_padding); a value may
    name the script's CONC. None where the script leaves the engine's default."""
    config = unmodelled.get("cuda_graph_config")
    for value in (
        unmodelled.get("max_cudagraph_capture_size"),
        unmodelled.get("cuda_graph_max_bs"),
        config.get("max_batch_size") if isinstance(config, dict) else None,
    ):
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("=") in names:
            return names[value.strip().lstrip("=")]
    return None


def inferencex_server(row: dict[str, str], serving: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The serving fields of an InferenceX row with the server flags its launch script set
    (benchmarks/data/silicon/inferencex_settings.json, read from InferenceX's git history), or None and why the row
    cannot be represented: its run decoded speculatively (MTP), or ran data-parallel attention the row does not
    record. Expert parallelism the script turned on (vLLM --enable-expert-parallel) spreads the experts over the TP
    GPUs; a row that records no engine version runs the version its container image names. A row no entry matches
    keeps the engine's defaults."""
    found = settings_for(row)
    if found is None:
        return serving, ""
    settings, unmodelled, source = found
    if unmodelled.get("speculative_config"):
        return None, f"speculative decoding (MTP) in the run's server settings ({source})"
    if unmodelled.get("enable_attention_dp") is True and serving["attention_data_parallel"] == 1:
        return None, f"the run's server ran data-parallel attention, which the row does not record ({source})"
    out = serving | settings
    graphs = cuda_graph_limit(unmodelled, variables(row))
    if graphs is not None:
        out["cuda_graph_max_batch_size"] = graphs
    version = image_version(str(unmodelled.get("image", "")))
    if serving["engine_version"] is None and version is not None:
        try:
            resolve_profile(row["backend"], version)
            out["engine_version"] = version  # the row records none; its run's container image names it
        except SpecError:
            pass
    if str(unmodelled.get("enable_expert_parallel", "")).lower().startswith("true"):
        out["expert_parallel"] = serving["tensor_parallel"]
    return out, ""


def request_for(
    row: dict[str, str], mapping: dict[str, Any] | None = None, clients: str = "documented"
) -> tuple[InferenceRequest | None, str]:
    """The memplan request for a silicon row (its load as `clients` says, see load_for), or None and why it cannot
    be represented."""
    m = mapping or _mapping()
    if row["mode"] != "agg":
        return None, "disaggregated prefill/decode"
    if row["pp_size"] not in ("", "1"):
        return None, "pipeline parallel"
    if row["system"] not in m["gpus"]:
        return None, f"no kernel tables for {row['system']}"
    model = m["models"].get(row["model_path"])
    if model is None:
        return None, m["not_representable"].get(row["model_path"], f"model {row['model_path']} not mapped")
    spec_moe = load_catalog().model(model["catalog"]).spec.moe is not None
    weights, experts = FORMATS[row["gemm_quant_mode"]], FORMATS[row["moe_quant_mode"]]
    hopper = row["system"] in HOPPER
    checkpoint = model.get("weight_format")
    checkpoint_experts = model.get("expert_weight_format") or checkpoint
    if not row["gemm_quant_mode"] and checkpoint:
        weights = checkpoint
    if hopper and weights == "nvfp4":  # no FP4 tensor cores on SM90: the engine runs the checkpoint's format
        weights = checkpoint if checkpoint != "nvfp4" else "bf16"
    fp4_row = not hopper and experts == "nvfp4" and checkpoint_experts not in ("mxfp4", "nvfp4")
    if checkpoint_experts and not fp4_row and not (hopper and checkpoint_experts == "nvfp4"):
        experts = checkpoint_experts  # a block-FP8 checkpoint runs the engine's block-FP8 MoE kernels
    # an FP4 row of an FP8 model on Blackwell ran the model's NVFP4 checkpoint (nvidia/<model>-NVFP4): its experts
    # are NVFP4, not the FP8 checkpoint's
    version = row["backend_version"] or None
    try:
        resolve_profile(row["backend"], version)
    except SpecError:
        version = None  # nightly or dev builds: the newest profile
    # aiconfigurator's agg rows: tp_size is the attention TP of one attention-DP rank, the GPUs are tp × dp, and
    # moe_tp × moe_ep covers them; batch_size is per DP rank (its concurrency is batch_size × attention_dp_size).
    # memplan's tensor_parallel is the GPUs (SGLang --tp-size) and attention_data_parallel divides it.
    dp = int(row["attention_dp_size"] or 1)
    if dp < 1:
        return None, f"attention_dp_size {row['attention_dp_size']} (a zero parallel field in the sample)"
    tp = int(row["tp_size"]) * dp
    ep = int(row["moe_ep_size"] or 1) if spec_moe else 1
    if dp > 1 and not spec_moe:
        return None, "data-parallel attention on a dense model"
    if dp > 1 and int(row["moe_tp_size"] or 1) * ep != tp:
        return None, f"moe_tp {row['moe_tp_size']} × moe_ep {ep} does not cover tp {row['tp_size']} × dp {dp}"
    if ep > 1 and tp % ep:
        return None, f"expert parallel {ep} does not divide TP {tp}"
    concurrency = int(row["batch_size"]) * dp
    serving = {
        "engine": row["backend"],
        "engine_version": version,
        "tensor_parallel": tp,
        "expert_parallel": ep,
        "attention_data_parallel": dp,
        "weight_format": weights,
        "expert_weight_format": experts if spec_moe else None,
        "kv_cache_dtype": "fp8" if row["backend"] == "trtllm" and weights.startswith("fp8") else "bf16",
        "prompt_tokens": int(row["isl"]),
        "output_tokens": int(row["osl"]),
        "concurrency": concurrency,
    }
    if client_of(row) == "aiconfigurator-sweep":
        limits = sweep_server_settings(row["backend"], int(row["isl"]), int(row["batch_size"]))
        if row["backend"] == "sglang":  # SGLang's token limits are for the whole server, split over the DP ranks
            limits = {k: v * dp if k != "cuda_graph_max_batch_size" else v for k, v in limits.items()}
        serving |= limits
    elif client_of(row) == "inferencex":
        server, why = inferencex_server(row, serving)
        if server is None:
            return None, why
        serving = server
    request = InferenceRequest(
        model=model["catalog"],
        gpu=m["gpus"][row["system"]],
        serving=serving,
        load=load_for(row, concurrency, m, clients),
    )
    return request, ""


def _dp(row: dict[str, str]) -> bool:
    """The row ran data-parallel attention (attention_dp_size > 1)."""
    return row["attention_dp_size"] not in ("", "0", "1")


def predict(row: dict[str, str], clients: str = "documented") -> dict[str, Any]:
    """memplan's TTFT and TPOT (means over the simulated requests, as the benchmarks report) for one row."""
    request, why = request_for(row, clients=clients)
    out: dict[str, Any] = {"id": row["id"], "representable": request is not None, "reason": why}
    if request is None:
        return out
    began = time.perf_counter()
    try:
        estimate = estimate_inference(request, load_catalog())
    except SpecError as exc:
        return {**out, "representable": False, "reason": str(exc)}
    load = estimate.load
    assert load is not None
    return {
        **out,
        "ttft_ms": load.ttft.mean_ms,
        "tpot_ms": load.tpot.mean_ms,
        "fits": estimate.fits,
        "preemptions": load.preemptions,
        "wall_ms": (time.perf_counter() - began) * 1e3,
    }


def load_aiconfigurator() -> dict[str, tuple[float, float]]:
    path = DATA / "aiconfigurator-0.12.0-predictions.csv"
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        return {
            r["id"]: (float(r["aic_ttft_ms"]), float(r["aic_tpot_ms"]))
            for r in csv.DictReader(f)
            if r["status"] == "ok" and r["aic_ttft_ms"] and r["aic_tpot_ms"]
        }


def _stats(pred: list[float], meas: list[float]) -> dict[str, float | None]:
    if not pred:
        return {"median_ape": None, "mape": None, "bias": None}
    apes = [abs(p / m - 1) for p, m in zip(pred, meas, strict=True)]
    ratios = [p / m for p, m in zip(pred, meas, strict=True)]
    return {
        "median_ape": round(statistics.median(apes), 4),
        "mape": round(statistics.fmean(apes), 4),
        "bias": round(statistics.median(ratios), 4),
    }


def summarize(rows: list[dict[str, str]], preds: dict[str, dict[str, Any]], aic: dict[str, tuple[float, float]],
              key: Any) -> dict[str, Any]:  # fmt: skip
    """Per group: rows, memplan's and aiconfigurator's TTFT/TPOT errors on the rows both predict."""
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        p = preds.get(row["id"])
        if p and p.get("ttft_ms") is not None:
            groups[key(row)].append(row)
    out = {}
    for name, members in sorted(groups.items()):
        both = [r for r in members if r["id"] in aic]
        meas_t = [float(r["silicon_ttft_ms"]) for r in members]
        meas_p = [float(r["silicon_tpot_ms"]) for r in members]
        out[name] = {
            "rows": len(members),
            "memplan": {
                "ttft": _stats([preds[r["id"]]["ttft_ms"] for r in members], meas_t),
                "tpot": _stats([preds[r["id"]]["tpot_ms"] for r in members], meas_p),
            },
            "rows_both": len(both),
            "memplan_on_both": {
                "ttft": _stats([preds[r["id"]]["ttft_ms"] for r in both], [float(r["silicon_ttft_ms"]) for r in both]),
                "tpot": _stats([preds[r["id"]]["tpot_ms"] for r in both], [float(r["silicon_tpot_ms"]) for r in both]),
            },
            "aiconfigurator_on_both": {
                "ttft": _stats([aic[r["id"]][0] for r in both], [float(r["silicon_ttft_ms"]) for r in both]),
                "tpot": _stats([aic[r["id"]][1] for r in both], [float(r["silicon_tpot_ms"]) for r in both]),
            },
        }
    return out


def run(rows: list[dict[str, str]], jobs: int, clients: str = "documented") -> dict[str, dict[str, Any]]:
    one = partial(predict, clients=clients)
    if jobs <= 1:
        return {r["id"]: one(r) for r in rows}
    with ProcessPoolExecutor(jobs) as pool:
        return {p["id"]: p for p in pool.map(one, rows, chunksize=16)}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f} %"


def print_groups(title: str, groups: dict[str, Any]) -> None:
    print(f"\n{title}")
    print("| group | rows | TTFT median APE | TPOT median APE | TTFT bias | TPOT bias | rows with aiconfigurator |"
          " aiconfigurator TTFT / TPOT | memplan on those rows |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for name, g in groups.items():
        m, a, mb = g["memplan"], g["aiconfigurator_on_both"], g["memplan_on_both"]
        print(
            f"| {name} | {g['rows']} | {_pct(m['ttft']['median_ape'])} | {_pct(m['tpot']['median_ape'])} | "
            f"{m['ttft']['bias'] or 0:.2f} | {m['tpot']['bias'] or 0:.2f} | {g['rows_both']} | "
            f"{_pct(a['ttft']['median_ape'])} / {_pct(a['tpot']['median_ape'])} | "
            f"{_pct(mb['ttft']['median_ape'])} / {_pct(mb['tpot']['median_ape'])} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", nargs="*", default=["h100_sxm", "h200_sxm", "b200_sxm"])
    parser.add_argument("--limit", type=int, default=0, help="score only the first N rows of each system")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument(
        "--clients",
        choices=("documented", "fixed"),
        default="documented",
        help="documented: each row's own load generator, benchmarks/data/silicon/clients.json (the scored default); "
        "fixed: every row's clients start together with fixed lengths, 8 requests each (--write then writes "
        "benchmarks/results/validation-serving-fixed-clients.json only)",
    )
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    all_rows = [r for r in load_rows() if r["system"] in args.systems]
    if args.limit:
        by_system: dict[str, list[dict[str, str]]] = defaultdict(list)
        for r in all_rows:
            if len(by_system[r["system"]]) < args.limit:
                by_system[r["system"]].append(r)
        all_rows = [r for rows in by_system.values() for r in rows]
    began = time.perf_counter()
    preds = run(all_rows, args.jobs, args.clients)
    wall = time.perf_counter() - began
    aic = load_aiconfigurator()
    target = [r for r in all_rows if r["system"] in SCORED_SYSTEMS and r["mode"] == "agg" and r["pp_size"] == "1"]
    covered = [r for r in target if preds[r["id"]].get("ttft_ms") is not None]
    reasons: dict[str, int] = defaultdict(int)
    for r in target:
        if preds[r["id"]].get("ttft_ms") is None:
            reasons[preds[r["id"]]["reason"]] += 1
    by_engine = summarize(all_rows, preds, aic, lambda r: f"{r['system']}/{r['backend']}")
    by_model = summarize(
        all_rows, preds, aic, lambda r: f"{r['system']}/{r['backend']}/{r['model_path']}/{r['precision'] or 'bf16'}"
    )
    overall = summarize(target, preds, aic, lambda r: "h100+h200 agg")
    # the rows data-parallel attention made representable, and the others (whose answers it must leave unchanged)
    plain = summarize([r for r in target if not _dp(r)], preds, aic, lambda r: "h100+h200 agg, attention DP 1")
    dp_rows = [r for r in all_rows if _dp(r)]
    attention_dp = {
        **summarize([r for r in dp_rows if r in target], preds, aic, lambda r: "h100+h200 agg, attention DP > 1"),
        **summarize(dp_rows, preds, aic, lambda r: f"{r['system']}/{r['backend']}/dp{r['attention_dp_size']}"),
    }
    share = len(covered) / max(1, len(target))
    print(f"coverage: {len(covered)} of {len(target)} H100/H200 aggregated pp-1 rows ({share:.1%}); not representable:")
    print(f"  {dict(reasons)}; {len(all_rows)} rows predicted in {wall:.0f} s")
    print_groups("overall", overall)
    print_groups("attention DP 1 (the rows covered before data-parallel attention)", plain)
    print_groups("data-parallel attention rows", attention_dp)
    print_groups("per (GPU, engine)", by_engine)
    print_groups("per (GPU, engine, model, precision)", by_model)
    if args.write and args.clients == "fixed":
        report = {
            "source": "benchmarks/validate_serving.py --clients fixed",
            "corpus": "benchmarks/data/silicon/silicon_sample.csv (aiconfigurator-core 0.12.0)",
            "clients": "every row's clients start together, 8 requests each, fixed lengths",
            "coverage": {"rows": len(covered), "of": len(target)},
            "overall": overall,
            "groups": by_engine,
            "models": by_model,
        }
        out = ROOT / "benchmarks" / "results" / "validation-serving-fixed-clients.json"
        out.write_text(json.dumps(report, indent=1) + "\n")
    elif args.write:
        report = {
            "source": "benchmarks/validate_serving.py",
            "corpus": "benchmarks/data/silicon/silicon_sample.csv (aiconfigurator-core 0.12.0)",
            "clients": "each row's load generator: benchmarks/data/silicon/clients.json",
            "coverage": {"rows": len(covered), "of": len(target), "not_representable": dict(reasons)},
            "overall": overall,
            "attention_dp": {**plain, **attention_dp},
            "groups": by_engine,
            "models": by_model,
            "rows": preds,
        }
        (ROOT / "benchmarks" / "results" / "validation-serving.json").write_text(json.dumps(report, indent=1) + "\n")
        status = {
            gname.replace("h100_sxm", "h100-sxm").replace("h200_sxm", "h200").replace("b200_sxm", "b200"): {
                "status": "validated",
                "runs": g["rows"],
                "ttft_median_ape": g["memplan"]["ttft"]["median_ape"],
                "tpot_median_ape": g["memplan"]["tpot"]["median_ape"],
                "summary": f"TPOT median error {_pct(g['memplan']['tpot']['median_ape'])}, TTFT "
                f"{_pct(g['memplan']['ttft']['median_ape'])} on {g['rows']} measured runs ({gname})",
            }
            for gname, g in by_engine.items()
        }
        (ROOT / "planner" / "calibration" / "validation" / "serving.json").write_text(
            json.dumps({"source": "benchmarks/validate_serving.py", "groups": status}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
