"""Score memplan's engine memory model against published engine startup logs.

Run: .venv/bin/python benchmarks/validate_memory.py [--write]
Reads benchmarks/data/engine_memory/{vllm,sglang,trtllm}_logs.json (published logs, a source per row) and
requests.json (how each log maps onto a memplan request), predicts every logged term, and prints the error per term:
the KV pool (GiB and tokens), the profile-run activation peak and the weights (where the log prints them).
--write updates benchmarks/results/validation-engine-memory.json (every row) and
planner/calibration/validation/engine_memory.json (per engine profile: what each serving answer reports).
Errors are (predicted − logged) / logged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import InferenceRequest, estimate_inference, load_catalog  # noqa: E402
from planner.gpu_spec import GpuSpec  # noqa: E402

DATA = ROOT / "benchmarks" / "data" / "engine_memory"
GIB = 1 << 30
LOGS = ("vllm_logs.json", "sglang_logs.json", "trtllm_logs.json")
# logged key -> (predicted quantity, unit). GiB keys are 2^30 bytes (SGLang's "GB" is GiB: it divides by 1 << 30).
KV_GIB_KEYS = ("available_kv_cache_gib", "available_kv_cache_gib_per_gpu", "kv_cache_allocated_gib")
KV_TOKEN_KEYS = ("kv_cache_tokens", "kv_tokens", "kv_cache_max_tokens")


def load_rows() -> list[dict[str, Any]]:
    rows = []
    for name in LOGS:
        rows += json.loads((DATA / name).read_text())["rows"]
    return rows


def _model(ref: str) -> str | dict[str, Any]:
    if ref.startswith("model_configs/"):
        config: dict[str, Any] = json.loads((ROOT / "benchmarks" / "data" / ref).read_text())
        return config
    return ref


def request_for(mapping: dict[str, Any]) -> InferenceRequest:
    gpu = mapping["gpu"]
    return InferenceRequest(
        model=_model(mapping["model"]),
        gpu=GpuSpec.model_validate(gpu) if isinstance(gpu, dict) else gpu,
        serving=mapping["serving"],
    )


def _logged_kv(logged: dict[str, Any]) -> float | None:
    for key in KV_GIB_KEYS:
        if key in logged:
            return float(logged[key])
    if "k_size_gb" in logged:
        return float(logged["k_size_gb"]) + float(logged["v_size_gb"])
    if "kv_size_gb" in logged:
        return float(logged["kv_size_gb"])
    return None


def _logged_tokens(logged: dict[str, Any]) -> int | None:
    for key in KV_TOKEN_KEYS:
        if key in logged:
            return int(logged[key])
    return int(logged["max_total_num_tokens"]) if "max_total_num_tokens" in logged else None


def _err(pred: float | None, meas: float | None) -> float | None:
    if pred is None or meas is None or meas == 0:
        return None
    return (pred - meas) / meas


def score_row(row: dict[str, Any], mapping: dict[str, Any], catalog: Any) -> dict[str, Any]:
    """Predicted and logged values of one log row and their relative errors."""
    e = estimate_inference(request_for(mapping), catalog)
    logged = row["logged"]
    weights = sum(t.bytes for t in e.memory.terms if t.name.startswith("weights/")) / GIB
    peak = e.memory.get("activations/profile_peak") / GIB
    kv_gib = (e.engine.kv_pool_bytes or 0) / GIB
    tokens = e.engine.kv_pool_tokens
    logged_weights = logged.get(
        "weights_memory_gib", logged.get("model_loading_gib", logged.get("weights_mem_usage_gb"))
    )
    logged_peak = logged.get("torch_peak_increase_gib", logged.get("activation_peak_gib"))
    return {
        "id": row["id"],
        "source_url": row["source_url"],
        "engine": mapping["serving"]["engine"],
        "profile": e.engine.profile,
        "model": row["model"],
        "gpu": e.gpu.id,
        "tensor_parallel": e.serving.tensor_parallel,
        "predicted": {"kv_pool_gib": kv_gib, "kv_tokens": tokens, "weights_gib": weights, "activation_peak_gib": peak},
        "logged": {
            "kv_pool_gib": _logged_kv(logged),
            "kv_tokens": _logged_tokens(logged),
            "weights_gib": logged_weights,
            "activation_peak_gib": logged_peak,
        },
        "error": {
            "kv_pool": _err(kv_gib, _logged_kv(logged)),
            "kv_tokens": _err(tokens, _logged_tokens(logged)),
            "weights": _err(weights, logged_weights),
            "activation_peak": _err(peak, logged_peak) if peak else None,
        },
        "note": mapping.get("note"),
    }


def score_all() -> tuple[list[dict[str, Any]], dict[str, str]]:
    mappings = json.loads((DATA / "requests.json").read_text())
    catalog = load_catalog()
    rows = {r["id"]: r for r in load_rows()}
    scored = [score_row(rows[rid], m, catalog) for rid, m in mappings["rows"].items()]
    unsupported = dict(mappings["unsupported"])
    missing = set(rows) - set(mappings["rows"]) - set(unsupported)
    if missing:
        raise SystemExit(f"log rows with no mapping and no reason: {sorted(missing)}")
    return scored, unsupported


def _abs_median(values: list[float | None]) -> float | None:
    kept = [abs(v) for v in values if v is not None]
    return statistics.median(kept) if kept else None


def profile_summary(scored: list[dict[str, Any]]) -> dict[str, Any]:
    """Per engine profile: how many logs, median and max |KV pool error|, median |activation error|."""
    out: dict[str, Any] = {}
    for profile in sorted({s["profile"] for s in scored}):
        rows = [s for s in scored if s["profile"] == profile]
        kv = [s["error"]["kv_pool"] for s in rows]
        act = [s["error"]["activation_peak"] for s in rows]
        kv_abs = [abs(v) for v in kv if v is not None]
        median = _abs_median(kv)
        act_median = _abs_median(act)
        out[profile] = {
            "status": "validated",
            "logs": len(rows),
            "kv_pool_median_error": _round(median),
            "kv_pool_max_error": _round(max(kv_abs) if kv_abs else None),
            "activation_median_error": _round(act_median),
            "summary": f"KV pool within {max(kv_abs):.1%} (median {median:.1%}) of {len(rows)} published "
            f"startup logs of {profile}"
            if kv_abs
            else f"{len(rows)} logs, none prints the KV pool",
        }
    return out


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:+.1%}"


def print_table(scored: list[dict[str, Any]], unsupported: dict[str, str]) -> None:
    print("| log | profile | TP | KV pool GiB (logged → predicted) | KV error | tokens error | activation error |")
    print("|---|---|---:|---|---:|---:|---:|")
    for s in scored:
        p, m, e = s["predicted"], s["logged"], s["error"]
        kv = f"{m['kv_pool_gib']:.2f} → {p['kv_pool_gib']:.2f}" if m["kv_pool_gib"] is not None else "-"
        print(
            f"| {s['id']} | {s['profile']} | {s['tensor_parallel']} | {kv} | {_pct(e['kv_pool'])} | "
            f"{_pct(e['kv_tokens'])} | {_pct(e['activation_peak'])} |"
        )
    for rid, why in unsupported.items():
        print(f"| {rid} | not scored: {why} | | | | | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="update the reports")
    args = parser.parse_args()
    scored, unsupported = score_all()
    print_table(scored, unsupported)
    summary = profile_summary(scored)
    for profile, s in summary.items():
        print(f"{profile}: {s['summary']}; activation median |error| {_pct(s['activation_median_error'])}")
    if args.write:
        (ROOT / "benchmarks" / "results" / "validation-engine-memory.json").write_text(
            json.dumps({"rows": scored, "unsupported": unsupported}, indent=1) + "\n"
        )
        out = ROOT / "planner" / "calibration" / "validation" / "engine_memory.json"
        out.write_text(json.dumps({"source": "benchmarks/validate_memory.py", "profiles": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
