"""aiconfigurator's own TTFT/TPOT predictions for the measured rows of silicon_sample.csv: the baseline memplan is
scored against, side by side with the measurements.

Run (aiconfigurator is not a memplan dependency; it lives in its own virtual environment):

    /tmp/aicvenv/bin/python benchmarks/aiconfigurator_baseline.py [--systems h100_sxm,h200_sxm] [--modes agg]
        [--backends vllm] [--ids ID,...] [--limit N] [--jobs N] [--timeout S] [--nice N] [--out CSV] [--resume]
        [--no-model-alias] [--no-quant-fallback]

Reads benchmarks/data/silicon/silicon_sample.csv (a byte copy of aiconfigurator-core 0.12.0's
aiconfigurator_core/systems/silicon_sample.csv, see benchmarks/data/silicon/README.md) and writes, by default,
benchmarks/data/silicon/aiconfigurator-<version>-predictions.csv (one row per input row, sorted by id) and a
.meta.json sidecar (versions, command line, summary statistics).

Each row is mapped onto ``aiconfigurator.cli.api.cli_estimate`` the way aiconfigurator's own accuracy tooling does
it (tools/accuracy_regression_testing/predict_silicon_sample.py and tools/accuracy_tracking/run_silicon.py in
github.com/ai-dynamo/aiconfigurator; neither ships in the wheels): model_path, system, mode, backend,
backend_version, isl, osl, gemm_quant_mode and moe_quant_mode (empty: None, aiconfigurator infers), and only the
parallel fields the row fills in: batch_size, tp/pp/attention_dp/moe_tp/moe_ep sizes for agg rows; prefill_*/
decode_* sizes, batch sizes and worker counts for disagg rows. Everything else (kv-cache quantization, MTP, database
mode SILICON, ctx_tokens = isl) is left at cli_estimate's defaults, as upstream does. Departures and retries, each
recorded per row in ``notes``:

* version_fallback: aiconfigurator 0.12.0 only answers for its queryable database versions (current / previous /
  next, systems/query_versions.yaml) and rejects every other backend_version with a ValueError ("looks like an
  old-style raw version query"); upstream's scripts retry such rows with the default (latest) database, and so does
  this one. version_default: the row has no backend_version, the default database is used.
* model_alias=<id>: a model whose HuggingFace config is not bundled with aiconfigurator (it would download it,
  and this machine is offline) is predicted with the bundled config of the same architecture; the row's own quant
  modes are passed, so the checkpoint's quantization does not come from the alias. --no-model-alias turns this off
  (those rows then fail with HuggingFaceDownloadError offline).
* quant_inferred: when aiconfigurator has no kernel table for the row's quant labels (PerfDataNotAvailableError,
  e.g. gpt-oss-120b labelled nvfp4, whose experts are MXFP4; DeepSeek's block-scaled FP8 experts labelled fp8), the
  row is retried with gemm/moe quant modes left to aiconfigurator, which reads them from the bundled checkpoint
  config. Never for aliased models. --no-quant-fallback turns this off; the summary reports both sets.

Other notes: zero_parallel_field (a parallel field is 0 in the sample; passed on as 0, as upstream does, and
aiconfigurator's answer is suspect), concurrency_mismatch (aiconfigurator's concurrency, batch_size x
attention_dp_size for agg, differs from the benchmark's silicon_concurrency in silicon_data_source).

Rows run in worker processes (--jobs of them, niced by --nice), one row at a time each, with a per-row --timeout:
a row that raises is recorded as an error, a row that hangs kills its worker and is recorded as a timeout, and the
run goes on. Completed rows are appended to <out>.partial.csv as they finish, so --resume continues an
interrupted run; the partial file is removed once the final CSV is written.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "data" / "silicon"
DEFAULT_INPUT = DATA / "silicon_sample.csv"

PARALLEL_FIELDS = ("tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size")
AGG_FIELDS = ("batch_size", *PARALLEL_FIELDS)
DISAGG_FIELDS = tuple(
    f"{stage}_{field}" for stage in ("prefill", "decode") for field in (*PARALLEL_FIELDS, "batch_size", "num_workers")
)

# Models in the sample whose HuggingFace config aiconfigurator 0.12.0 does not bundle, and the bundled config of the
# same architecture used instead (offline). Quantization always comes from the row's gemm/moe quant modes.
MODEL_ALIASES = {
    # the same repository under its pre-rename id (identical config.json)
    "meta-llama/Llama-3.1-70B": "meta-llama/Meta-Llama-3.1-70B",
    # Instruct shares the base model's architecture (config.json differs only in eos_token_id)
    "meta-llama/Llama-3.1-8B-Instruct": "meta-llama/Meta-Llama-3.1-8B",
    # NVIDIA ModelOpt FP8 checkpoint of Llama-3.1-8B-Instruct; rows say gemm/moe fp8
    "nvidia/Llama-3.1-8B-Instruct-FP8": "meta-llama/Meta-Llama-3.1-8B",
    # GLM-5 is published on HuggingFace as zai-org/GLM-5 (Zhipu AI's organisation)
    "zhipuai/GLM-5": "zai-org/GLM-5",
    # NVFP4 checkpoints of DeepSeek-R1 and Qwen3-32B; rows say gemm/moe nvfp4
    "nvidia/DeepSeek-R1-NVFP4": "deepseek-ai/DeepSeek-R1",
    "nvidia/Qwen3-32B-NVFP4": "Qwen/Qwen3-32B",
}

# ValueError texts that mean "this backend_version has no (queryable) database": retry with the default one.
VERSION_ERRORS = ("Failed to load perf database", "old-style raw version query")
# PerfDataNotAvailableError texts that mean "no kernel table for the row's quant label": retry with the quant modes
# left to aiconfigurator, which reads them from the (bundled) checkpoint config (e.g. gpt-oss's MXFP4 experts, which
# the sample labels nvfp4; DeepSeek's block-scaled FP8 experts, labelled fp8).
QUANT_ERRORS = ("perf data missing for quant", "MoE data missing for MoeKey")

OUT_FIELDS = (
    "id",
    "aic_ttft_ms",
    "aic_tpot_ms",
    "status",
    "error",
    "wall_s",
    "notes",
    "model_path_used",
    "backend_version_used",
    "aic_concurrency",
    "silicon_concurrency",
)


# --------------------------------------------------------------------------------------------------------------------
# Worker side: everything that imports aiconfigurator runs here, in a child process.


def _quiet_aiconfigurator() -> None:
    import logging
    import warnings

    for name in ("aiconfigurator", "aiconfigurator_core", "aiconfigurator.sdk", "aiconfigurator_core.sdk"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _estimate_kwargs(row: dict[str, str], model_path: str) -> dict[str, Any]:
    fields = AGG_FIELDS if row["mode"] == "agg" else DISAGG_FIELDS
    return dict(
        model_path=model_path,
        system_name=row["system"],
        mode=row["mode"],
        backend_name=row["backend"],
        backend_version=row["backend_version"] or None,
        isl=int(row["isl"]),
        osl=int(row["osl"]),
        gemm_quant_mode=row["gemm_quant_mode"] or None,
        moe_quant_mode=row["moe_quant_mode"] or None,
        **{field: int(float(row[field])) for field in fields if row.get(field)},
    )


def _predict(row: dict[str, str], options: dict[str, bool], bundled: frozenset[str]) -> dict[str, Any]:
    """One row through cli_estimate; never raises."""
    import contextlib
    import io

    from aiconfigurator.cli.api import cli_estimate

    began = time.perf_counter()
    notes: list[str] = []
    model_path = row["model_path"]
    aliased = options["model_alias"] and model_path not in bundled and model_path in MODEL_ALIASES
    if aliased:
        model_path = MODEL_ALIASES[model_path]
        notes.append(f"model_alias={model_path}")
    kwargs = _estimate_kwargs(row, model_path)
    if kwargs["backend_version"] is None:
        notes.append("version_default")
    if any(kwargs.get(field) == 0 for field in (*AGG_FIELDS, *DISAGG_FIELDS)):
        notes.append("zero_parallel_field")  # passed on as 0, as upstream does
    out: dict[str, Any] = dict.fromkeys(OUT_FIELDS, "")
    out.update(id=row["id"], model_path_used=model_path, silicon_concurrency=_silicon_concurrency(row))
    sink = io.StringIO()
    try:
        if row["mode"] == "disagg":
            missing = [f"{stage}_{f}" for stage in ("prefill", "decode") for f in ("batch_size", "num_workers")]
            missing = [name for name in missing if name not in kwargs]
            if missing:
                # cli_estimate raises the same ValueError; upstream checks this before calling it.
                raise ValueError(f"{missing[0]} is required for disagg mode (row lacks {', '.join(missing)})")
        while True:
            try:
                with contextlib.redirect_stdout(sink):
                    result = cli_estimate(**kwargs)
                break
            except Exception as exc:
                text = str(exc)
                if kwargs["backend_version"] is not None and any(t in text for t in VERSION_ERRORS):
                    notes.append("version_fallback")
                    kwargs["backend_version"] = None
                elif (
                    options["quant_fallback"]
                    and not aliased
                    and type(exc).__name__ == "PerfDataNotAvailableError"
                    and any(t in text for t in QUANT_ERRORS)
                    and (kwargs["gemm_quant_mode"] is not None or kwargs["moe_quant_mode"] is not None)
                ):
                    notes.append("quant_inferred")
                    kwargs["gemm_quant_mode"] = kwargs["moe_quant_mode"] = None
                else:
                    raise
        ttft, tpot = float(result.ttft), float(result.tpot)
        if not (math.isfinite(ttft) and math.isfinite(tpot)) or ttft <= 0 or tpot <= 0:
            raise ValueError(f"non-positive or non-finite prediction ttft={ttft} tpot={tpot}")
        concurrency = getattr(result, "concurrency", None)
        out.update(
            aic_ttft_ms=f"{ttft:.6f}",
            aic_tpot_ms=f"{tpot:.6f}",
            status="ok",
            backend_version_used=str(getattr(result, "backend_version", "") or ""),
            aic_concurrency="" if concurrency is None else f"{float(concurrency):g}",
        )
        if (
            concurrency is not None
            and out["silicon_concurrency"]
            and float(concurrency) != float(out["silicon_concurrency"])
        ):
            notes.append("concurrency_mismatch")
    except Exception as exc:
        message = " ".join(str(exc).split())
        out.update(status="error", error=f"{type(exc).__name__}: {message}"[:300])
    out["notes"] = ";".join(notes)
    out["wall_s"] = f"{time.perf_counter() - began:.3f}"
    return out


def _silicon_concurrency(row: dict[str, str]) -> str:
    """The benchmark client's concurrency, from silicon_data_source ('silicon_concurrency=N'); '' when absent."""
    for part in row["silicon_data_source"].split(";"):
        key, _, value = part.strip().partition("=")
        if key == "silicon_concurrency":
            return value
    return ""


def _worker(conn: multiprocessing.connection.Connection, nice: int, options: dict[str, bool]) -> None:
    if nice:
        os.nice(nice)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (aiconfigurator prints; the worker's stdout is discarded)
    _quiet_aiconfigurator()
    from aiconfigurator_core.sdk import common

    bundled = frozenset(common.DefaultHFModels)
    while True:
        row = conn.recv()
        if row is None:
            return
        conn.send(_predict(row, options, bundled))


# --------------------------------------------------------------------------------------------------------------------
# Driver side: no aiconfigurator import here.


class _Slot:
    """One worker process, its pipe, and the row it is working on."""

    def __init__(self, ctx: Any, nice: int, options: dict[str, bool]) -> None:
        self.ctx, self.nice, self.options = ctx, nice, options
        self.group: tuple[str, str] | None = None
        self.row: dict[str, str] | None = None
        self.since = 0.0
        self._start()

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, self.nice, self.options), daemon=True)
        self.proc.start()
        child.close()

    def restart(self) -> None:
        self.stop(kill=True)
        self.group = None
        self._start()

    def stop(self, kill: bool = False) -> None:
        if not kill and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(10)
            except (BrokenPipeError, OSError):
                pass
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(10)
        self.conn.close()

    def submit(self, row: dict[str, str]) -> None:
        group = (row["system"], row["backend"])
        # A fresh worker per (system, backend): the perf databases a worker caches stay bounded.
        if self.group is not None and self.group != group:
            self.restart()
        self.group, self.row, self.since = group, row, time.monotonic()
        self.conn.send(row)


def run_rows(
    rows: list[dict[str, str]], jobs: int, timeout: float, nice: int, options: dict[str, bool], partial: Path | None
) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("fork")
    slots = [_Slot(ctx, nice, options) for _ in range(max(1, min(jobs, len(rows))))]
    pending = list(reversed(rows))
    results: list[dict[str, Any]] = []
    total, began = len(rows), time.monotonic()
    writer = None
    handle = None
    if partial is not None:
        fresh = not partial.exists()
        handle = partial.open("a", newline="")
        writer = csv.DictWriter(handle, fieldnames=OUT_FIELDS, lineterminator="\n")
        if fresh:
            writer.writeheader()

    def finish(record: dict[str, Any]) -> None:
        results.append(record)
        if writer is not None and handle is not None:
            writer.writerow(record)
            handle.flush()
        done = len(results)
        if done % 25 == 0 or done == total or record["status"] != "ok":
            elapsed = time.monotonic() - began
            eta = elapsed / done * (total - done)
            detail = record["status"] if record["status"] == "ok" else record["error"][:120]
            print(
                f"[{done}/{total}] {elapsed / 60:.1f} min, eta {eta / 60:.1f} min: {record['id']}: {detail}", flush=True
            )

    try:
        for slot in slots:
            if pending:
                slot.submit(pending.pop())
        while any(slot.row is not None for slot in slots):
            busy = [slot for slot in slots if slot.row is not None]
            deadline = min(slot.since for slot in busy) + timeout - time.monotonic()
            ready = multiprocessing.connection.wait([slot.conn for slot in busy], timeout=max(0.05, min(5.0, deadline)))
            now = time.monotonic()
            for slot in busy:
                assert slot.row is not None
                record: dict[str, Any] | None = None
                if slot.conn in ready:
                    try:
                        record = slot.conn.recv()
                    except (EOFError, OSError):
                        record = _failure(slot.row, f"worker died (exit code {slot.proc.exitcode})", now - slot.since)
                        slot.restart()
                elif not slot.proc.is_alive():
                    record = _failure(slot.row, f"worker died (exit code {slot.proc.exitcode})", now - slot.since)
                    slot.restart()
                elif now - slot.since > timeout:
                    record = _failure(slot.row, f"timeout after {timeout:g} s", now - slot.since)
                    slot.restart()
                if record is not None:
                    slot.row = None
                    finish(record)
                    if pending:
                        slot.submit(pending.pop())
    finally:
        for slot in slots:
            slot.stop(kill=slot.row is not None)
        if handle is not None:
            handle.close()
    return results


def _failure(row: dict[str, str], message: str, wall: float) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(OUT_FIELDS, "")
    record.update(id=row["id"], status="error", error=message, wall_s=f"{wall:.3f}", model_path_used=row["model_path"])
    return record


# --------------------------------------------------------------------------------------------------------------------
# Summary statistics.


def _errors(pairs: list[tuple[float, float]]) -> dict[str, float | None]:
    """Median APE, MAPE and bias (median and mean signed relative error) of (predicted, measured) pairs."""
    if not pairs:
        return {"median_ape": None, "mape": None, "median_bias": None, "mean_bias": None}
    signed = [(p - m) / m for p, m in pairs]
    ape = [abs(s) for s in signed]
    return {
        "median_ape": round(statistics.median(ape), 6),
        "mape": round(statistics.fmean(ape), 6),
        "median_bias": round(statistics.median(signed), 6),
        "mean_bias": round(statistics.fmean(signed), 6),
    }


def _group_stats(rows: list[dict[str, str]], preds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if preds.get(r["id"], {}).get("status") == "ok"]
    # The rows aiconfigurator predicts with the row's own quant labels (upstream's mapping exactly).
    as_labelled = [r for r in ok if "quant_inferred" not in preds[r["id"]].get("notes", "")]

    def errors(subset: list[dict[str, str]]) -> dict[str, Any]:
        ttft = [(float(preds[r["id"]]["aic_ttft_ms"]), float(r["silicon_ttft_ms"])) for r in subset]
        tpot = [(float(preds[r["id"]]["aic_tpot_ms"]), float(r["silicon_tpot_ms"])) for r in subset]
        return {"ttft": _errors(ttft), "tpot": _errors(tpot)}

    return {
        "rows": len(rows),
        "ok": len(ok),
        **errors(ok),
        "ok_without_quant_inferred": {"ok": len(as_labelled), **errors(as_labelled)},
    }


def _error_kind(message: str) -> str:
    """An error message with numbers and quoted names blanked, cut short: rows failing the same way share it."""
    import re

    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'…'", message))[:90]


def summarize(rows: list[dict[str, str]], preds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rows = [r for r in rows if r["id"] in preds]

    def by(subset: list[dict[str, str]], *keys: str) -> dict[str, Any]:
        groups: dict[str, list[dict[str, str]]] = {}
        for r in subset:
            groups.setdefault("/".join(r[k] for k in keys), []).append(r)
        return {k: _group_stats(v, preds) for k, v in sorted(groups.items())}

    focus = [
        r
        for r in rows
        if r["system"] in ("h100_sxm", "h200_sxm", "b200_sxm") and r["mode"] == "agg" and r["pp_size"] in ("1", "")
    ]
    errors: dict[str, int] = {}
    notes: dict[str, int] = {}
    for record in preds.values():
        if record["status"] != "ok":
            kind = _error_kind(record["error"])
            errors[kind] = errors.get(kind, 0) + 1
        for note in filter(None, record.get("notes", "").split(";")):
            name = note if note.startswith("model_alias") else note.split("=")[0]
            notes[name] = notes.get(name, 0) + 1
    return {
        "definitions": {
            "ape": "|predicted - measured| / measured, per row, over rows with status ok",
            "median_ape": "median of APE",
            "mape": "mean of APE",
            "median_bias": "median of (predicted - measured) / measured (negative: aiconfigurator predicts low)",
            "mean_bias": "mean of (predicted - measured) / measured",
            "ok_without_quant_inferred": "the ok rows predicted with the row's own gemm/moe quant labels",
            "h100_h200_b200_agg_pp1": "rows with system h100_sxm, h200_sxm or b200_sxm, mode agg and pp_size 1",
        },
        "all": _group_stats(rows, preds),
        "by_mode": by(rows, "mode"),
        "by_system_backend_mode": by(rows, "system", "backend", "mode"),
        "h100_h200_b200_agg_pp1": {
            "all": _group_stats(focus, preds),
            "by_system_backend": by(focus, "system", "backend"),
            "by_model": by(focus, "model_path"),
        },
        "error_counts": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
        "note_counts": dict(sorted(notes.items(), key=lambda kv: -kv[1])),
    }


# --------------------------------------------------------------------------------------------------------------------


def _split(value: str | None) -> set[str] | None:
    return {v.strip() for v in value.split(",") if v.strip()} if value else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="silicon_sample.csv (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="output CSV (default: aiconfigurator-<ver>-…csv)")
    parser.add_argument("--systems", help="comma-separated systems to keep (e.g. h100_sxm,h200_sxm)")
    parser.add_argument("--backends", help="comma-separated backends to keep (trtllm,sglang,vllm)")
    parser.add_argument("--modes", help="comma-separated modes to keep (agg,disagg)")
    parser.add_argument("--ids", help="comma-separated row ids to keep")
    parser.add_argument("--limit", type=int, default=0, help="first N selected rows only (0: all)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per row before it is killed")
    parser.add_argument("--nice", type=int, default=10, help="os.nice increment for the workers (default 10)")
    parser.add_argument("--no-model-alias", action="store_true", help="never substitute bundled model configs")
    parser.add_argument(
        "--no-quant-fallback", action="store_true", help="never retry a missing-quant-table row with inferred quant"
    )
    parser.add_argument("--resume", action="store_true", help="skip rows already in <out>.partial.csv")
    args = parser.parse_args()

    from importlib import metadata

    versions = {pkg: metadata.version(pkg) for pkg in ("aiconfigurator", "aiconfigurator-core")}
    out: Path = args.out or DATA / f"aiconfigurator-{versions['aiconfigurator']}-predictions.csv"
    meta_path = out.with_name(out.name.removesuffix(".csv") + ".meta.json")
    partial = out.with_name(out.name.removesuffix(".csv") + ".partial.csv")

    with args.input.open(newline="") as f:
        all_rows = list(csv.DictReader(f))
    systems, backends, modes, ids = _split(args.systems), _split(args.backends), _split(args.modes), _split(args.ids)
    rows = [
        r
        for r in all_rows
        if (systems is None or r["system"] in systems)
        and (backends is None or r["backend"] in backends)
        and (modes is None or r["mode"] in modes)
        and (ids is None or r["id"] in ids)
    ]
    if args.limit:
        rows = rows[: args.limit]

    out.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    if args.resume and partial.exists():
        with partial.open(newline="") as f:
            done = {r["id"]: r for r in csv.DictReader(f)}
    elif partial.exists():
        partial.unlink()
    todo = [r for r in rows if r["id"] not in done]
    # Rows of one (system, backend) together: each worker loads that perf database once.
    todo.sort(key=lambda r: (r["system"], r["backend"], r["mode"], r["model_path"], r["id"]))
    print(
        f"{len(rows)} rows selected, {len(done)} already done, {len(todo)} to run with {args.jobs} job(s)", flush=True
    )

    began = time.time()
    options = {"model_alias": not args.no_model_alias, "quant_fallback": not args.no_quant_fallback}
    fresh = run_rows(todo, args.jobs, args.timeout, args.nice, options, partial)
    selected = {r["id"] for r in rows}
    preds = {k: v for k, v in done.items() if k in selected} | {r["id"]: r for r in fresh}

    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=OUT_FIELDS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for key in sorted(preds):
            writer.writerow(preds[key])

    input_bytes = args.input.read_bytes()
    import hashlib

    meta = {
        "tool": "benchmarks/aiconfigurator_baseline.py",
        "command": [Path(sys.executable).name, *sys.argv],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "input": {
            "path": str(
                args.input.resolve().relative_to(ROOT) if args.input.resolve().is_relative_to(ROOT) else args.input
            ),
            "sha256": hashlib.sha256(input_bytes).hexdigest(),
            "rows": len(all_rows),
        },
        "selection": {
            "systems": sorted(systems) if systems else None,
            "backends": sorted(backends) if backends else None,
            "modes": sorted(modes) if modes else None,
            "ids": len(ids) if ids else None,
            "limit": args.limit or None,
            "rows": len(rows),
        },
        "options": {
            "jobs": args.jobs,
            "timeout_s": args.timeout,
            "nice": args.nice,
            "model_alias": not args.no_model_alias,
            "model_aliases": MODEL_ALIASES if not args.no_model_alias else {},
            "quant_fallback": not args.no_quant_fallback,
            "database_mode": "SILICON (cli_estimate default)",
        },
        "mapping": (
            "cli_estimate(model_path, system_name=system, mode, backend_name=backend, backend_version, isl, osl, "
            "gemm_quant_mode, moe_quant_mode, + the row's non-empty agg fields (batch_size, tp/pp/attention_dp/"
            "moe_tp/moe_ep sizes) or disagg fields (prefill_/decode_ sizes, batch_size, num_workers)); empty "
            "fields are left to cli_estimate (database_mode SILICON, kv-cache quant inferred, no MTP), as in "
            "aiconfigurator's tools/accuracy_regression_testing/predict_silicon_sample.py. Retries, each noted per "
            "row: a rejected backend_version with the default database (version_fallback); a missing kernel table "
            "for the row's quant labels with both quant modes inferred from the checkpoint (quant_inferred, only "
            "for models aiconfigurator bundles, never with an alias). Unbundled models use MODEL_ALIASES "
            "(model_alias=...)."
        ),
        "run_wall_s": round(time.time() - began, 1),
        "summary": summarize(rows, preds),
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    if partial.exists() and len(preds) == len(rows):
        partial.unlink()
    summary = meta["summary"]
    print(f"wrote {out} ({len(preds)} rows, {summary['all']['ok']} ok) and {meta_path}")
    for key, stats in summary["by_system_backend_mode"].items():
        print(
            f"  {key:28s} rows {stats['rows']:5d} ok {stats['ok']:5d}  "
            f"TTFT medAPE {_pct(stats['ttft']['median_ape'])}  TPOT medAPE {_pct(stats['tpot']['median_ape'])}"
        )
    return 0


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


if __name__ == "__main__":
    sys.exit(main())
