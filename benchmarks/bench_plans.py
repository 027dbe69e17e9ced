"""How fast is a plan, and how cheap is an item of a batch?

Run: .venv/bin/python benchmarks/bench_plans.py [--batch-items 10000] [--single 300] [--skip-http] [--runs 1]

1. Plans on one core (the process pins itself to one CPU): the first plan of a fresh process (the kernel tables are
   read and every family's step model is built) and the same plan again, for three workloads; each reports its
   candidates (GPU × engine × precisions × TP × PP × EP × max_num_seqs × replicas), how many were pruned before
   any latency was computed, and how many load simulations confirmed the plans. --runs N times them in N fresh
   processes and reports each time's minimum and median (a shared machine's load moves single runs by ±30 %).
2. The batch endpoint over loopback HTTP against one uvicorn worker: the median round trip of single
   POST /v1/estimates/inference requests drawn from a grid, then one POST /v1/estimates/batch of the whole grid as
   JSON (whole estimates), JSON with a few fields, NDJSON and CSV; the cost per item is the batch's wall time,
   response read to the end, over its items.
Prints a table and a JSON line; the README quotes its numbers with the machine they came from.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import load_catalog  # noqa: E402
from planner.plans.search import plan_serving  # noqa: E402
from planner.plans.spec import PlanRequest  # noqa: E402

PLANS = {
    "llama-3.1-8b chat, 256 users": {
        "model": "llama-3.1-8b",
        "workload": {"input_tokens": 2048, "output_tokens": 256, "concurrency": 256},
        "slo": {"ttft_ms": 1000, "tpot_ms": 40},
    },
    "llama-3-70b, 10 req/s of mixed prompts": {
        "model": "llama-3-70b",
        "workload": {
            "input_tokens": [{"tokens": 1024, "weight": 3}, {"tokens": 4096, "weight": 1}],
            "output_tokens": 512,
            "request_rate": 10,
        },
        "slo": {"ttft_ms": 1000, "tpot_ms": 40},
    },
    "qwen3-32b, 2e9 output tokens/day, p99": {
        "model": "qwen3-32b",
        "workload": {"input_tokens": 1024, "output_tokens": 512, "tokens_per_day": 2e9},
        "slo": {"ttft_ms": 2000, "min_tokens_per_s_per_user": 20, "percentile": "p99"},
    },
}
GRID: dict[str, Any] = {
    "base": {"model": "llama-3-8b", "serving": {"prompt_tokens": 1024}},
    "axes": {
        "gpu": ["h100-sxm", "h200", "a100-80gb", "l40s", "b200"],
        "serving.tensor_parallel": [1, 2, 4, 8],
        "serving.concurrency": [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
        "serving.output_tokens": [128, 256, 512, 1024, 2048],
        "serving.kv_cache_dtype": ["bf16", "fp8"],
        "serving.weight_format": ["bf16", "fp8", "int4_awq", "nvfp4", "fp8_block"],
    },
}
FIELDS = ["fits", "capacity.max_concurrent_sequences", "decode.tpot_s", "prefill.ttft_s", "engine.kv_pool_tokens"]


def pin_to_one_core() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def time_plans() -> list[dict[str, Any]]:
    catalog = load_catalog()
    rows = []
    for name, body in PLANS.items():
        request = PlanRequest.model_validate(body)
        times, cpu = [], []
        for _ in range(3):
            start, start_cpu = time.perf_counter(), time.process_time()
            result = plan_serving(request, catalog)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        s = result.summary
        rows.append(
            {
                "case": name,
                "candidates": s.candidates,
                "families": s.families,
                "pruned_by_memory": s.pruned_by_memory,
                "simulated": s.simulated,
                "plans": s.plans,
                "first_s": times[0],
                "again_s": min(times[1:]),
                "first_cpu_s": cpu[0],
                "again_cpu_s": min(cpu[1:]),
                "best": result.plans[0].label if result.plans else "-",
            }
        )
    return rows


def time_plans_fresh(runs: int) -> list[dict[str, Any]]:
    """time_plans in `runs` fresh processes: each case's rows with its times as the minimum over the runs, and the
    medians beside them."""
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, __file__, "--plans-json"], check=True, capture_output=True, text=True, cwd=ROOT
        ).stdout
        samples.append(json.loads(out))
    rows = []
    for i, row in enumerate(samples[0]):
        merged = dict(row)
        for field in ("first_s", "again_s", "first_cpu_s", "again_cpu_s"):
            values = [sample[i][field] for sample in samples]
            merged[field] = min(values)
            merged[field.replace("_s", "_median_s")] = statistics.median(values)
        rows.append(merged)
    return rows


def grid_items(n: int) -> dict[str, Any]:
    """The grid, cut to n points by dropping values from the last axes."""
    grid = json.loads(json.dumps(GRID))
    names = list(grid["axes"])
    while _size(grid) > n:
        for name in reversed(names):
            if len(grid["axes"][name]) > 1:
                grid["axes"][name].pop()
                break
    return grid


def _size(grid: dict[str, Any]) -> int:
    out = 1
    for values in grid["axes"].values():
        out *= len(values)
    return out


def _points(grid: dict[str, Any]) -> list[dict[str, Any]]:
    names = list(grid["axes"])
    points = []
    for values in itertools.product(*(grid["axes"][n] for n in names)):
        body: dict[str, Any] = json.loads(json.dumps(grid["base"]))
        for name, value in zip(names, values, strict=True):
            node = body
            *parents, leaf = name.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        points.append(body)
    return points


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def time_batch(items: int, singles: int) -> dict[str, Any]:
    grid = grid_items(items)
    n = _size(grid)
    port = free_port()
    env = {**os.environ, "MEMPLAN_PORT": str(port), "MEMPLAN_LOG_LEVEL": "warning"}
    server = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
    out: dict[str, Any] = {"items": n}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            for _ in range(400):
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            client.post("/v1/estimates/batch", json={"grid": grid, "fields": FIELDS})  # warm every shape once
            sample = random.Random(0).sample(_points(grid), singles)
            latencies = []
            for body in sample:
                start = time.perf_counter()
                client.post("/v1/estimates/inference", json=body)
                latencies.append(time.perf_counter() - start)
            out["single_rtt_ms"] = statistics.median(latencies) * 1e3
            variants = {
                "json (whole estimates)": ({"grid": grid}, {}),
                "json (5 fields)": ({"grid": grid, "fields": FIELDS}, {}),
                "ndjson (whole estimates)": ({"grid": grid}, {"Accept": "application/x-ndjson"}),
                "csv (flat table)": ({"grid": grid}, {"Accept": "text/csv"}),
            }
            for label, (body, headers) in variants.items():
                start = time.perf_counter()
                with client.stream("POST", "/v1/estimates/batch", json=body, headers=headers) as response:
                    size = sum(len(chunk) for chunk in response.iter_bytes())
                total = time.perf_counter() - start
                out[label] = {"seconds": total, "per_item_ms": total / n * 1e3, "bytes": size}
    finally:
        server.terminate()
        server.wait(timeout=10)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-items", type=int, default=10_000)
    parser.add_argument("--single", type=int, default=300)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--runs", type=int, default=1, help="fresh processes to time the plans in (min, median)")
    parser.add_argument("--plans-json", action="store_true", help=argparse.SUPPRESS)  # one run of --runs
    args = parser.parse_args()
    cpu = pin_to_one_core()
    if args.plans_json:
        print(json.dumps(time_plans()))
        return
    plans = time_plans() if args.runs == 1 else time_plans_fresh(args.runs)
    runs = "" if args.runs == 1 else f", the minimum of {args.runs} fresh processes (median)"
    print(f"plans on one core (cpu {cpu}), Python {platform.python_version()}, {platform.machine()}{runs}")
    for row in plans:
        median = "" if args.runs == 1 else f" ({row['first_median_s']:.2f} s)"
        print(
            f"  {row['case']}: {row['candidates']:,} candidates, {row['families']} families, "
            f"{row['pruned_by_memory']:,} pruned by memory, {row['simulated']} simulated, {row['plans']} plans: "
            f"first {row['first_s']:.2f} s{median} ({row['first_cpu_s']:.2f} s CPU), again {row['again_s']:.2f} s "
            f"({row['again_cpu_s']:.2f} s CPU) — {row['best']}"
        )
    batch = {} if args.skip_http else time_batch(args.batch_items, args.single)
    if batch:
        single = batch["single_rtt_ms"]
        print(f"batch of {batch['items']:,} over HTTP; a single request's round trip: {single:.2f} ms (median)")
        for label, v in batch.items():
            if isinstance(v, dict):
                print(
                    f"  {label}: {v['seconds']:.2f} s, {v['per_item_ms']:.3f} ms per item "
                    f"(1/{single / v['per_item_ms']:.1f} of a single round trip), {v['bytes'] / 1e6:.1f} MB"
                )
    print(json.dumps({"plans": plans, "batch": batch, "cpus": os.cpu_count(), "python": platform.python_version()}))


if __name__ == "__main__":
    main()
