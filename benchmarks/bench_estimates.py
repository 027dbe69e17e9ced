"""How cheap is an estimate? In-process estimates per second and loopback HTTP latency.

Run: .venv/bin/python benchmarks/bench_estimates.py [--seconds 5] [--http-requests 2000]
Prints a table and a JSON line; the README quotes its numbers with the machine they came from.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from planner import InferenceRequest, SpecError, estimate_inference, load_catalog

ROOT = Path(__file__).resolve().parents[1]


def sweep_payloads() -> list[dict[str, Any]]:
    """A capacity-planning sweep: every catalog model × 4 GPUs × TP × contexts × concurrency × formats."""
    catalog = load_catalog()
    payloads = []
    for model, gpu, tp, (prompt, out), batch, fmt in itertools.product(
        [m.id for m in catalog.models],
        ["h100-sxm", "a100-80gb", "h200", "l40s"],
        [1, 8],
        [(512, 128), (7168, 1024), (30000, 2000)],
        [1, 32],
        ["bf16", "int4_awq"],
    ):
        serving = {
            "prompt_tokens": prompt,
            "output_tokens": out,
            "concurrency": batch,
            "tensor_parallel": tp,
            "weight_format": fmt,
        }
        payloads.append({"model": model, "gpu": gpu, "serving": serving})
    return [p for p in payloads if _valid(p)]


def _valid(payload: dict[str, Any]) -> bool:
    """Drop combinations the planner rejects (e.g. TP not dividing a model's heads)."""
    try:
        estimate_inference(InferenceRequest.model_validate(payload), load_catalog())
    except SpecError:
        return False
    return True


def raw_config_payloads() -> list[dict[str, Any]]:
    """Requests that carry a raw config.json each (import + fresh spec: no per-spec cache hits)."""
    base = load_catalog().model("qwen2.5-7b").config
    return [
        {"model": {**base, "num_hidden_layers": 8 + i % 40, "intermediate_size": 18944 + 64 * i}, "gpu": "h100-sxm"}
        for i in range(400)
    ]


def rate(fn: Callable[[dict[str, Any]], object], payloads: list[dict[str, Any]], seconds: float) -> float:
    """Calls per second of fn over the payloads, cycling, for about `seconds`."""
    n, start = 0, time.perf_counter()
    for payload in itertools.cycle(payloads):
        fn(payload)
        n += 1
        if n % 200 == 0 and time.perf_counter() - start > seconds:
            break
    return n / (time.perf_counter() - start)


def in_process(seconds: float) -> dict[str, float]:
    catalog = load_catalog()
    sweep = sweep_payloads()
    prebuilt = [InferenceRequest.model_validate(p) for p in sweep]
    by_id = {id(p): r for p, r in zip(sweep, prebuilt, strict=True)}

    def compute_only(p: dict[str, Any]) -> object:
        return estimate_inference(by_id[id(p)], catalog)

    def full_path(p: dict[str, Any]) -> object:
        return estimate_inference(InferenceRequest.model_validate(p), catalog).model_dump_json()

    for p in sweep:  # warm the per-spec caches as a long-running server would be
        full_path(p)
    return {
        "estimates_per_s_compute": rate(compute_only, sweep, seconds),
        "estimates_per_s_validate_compute_json": rate(full_path, sweep, seconds),
        "estimates_per_s_raw_config_json": rate(full_path, raw_config_payloads(), seconds),
        "sweep_size": len(sweep),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def over_http(requests: int) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "MEMPLAN_PORT": str(port), "MEMPLAN_LOG_LEVEL": "warning"}
    server = subprocess.Popen([sys.executable, "-m", "service"], cwd=ROOT, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            for _ in range(200):
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            sweep = sweep_payloads()
            for p in sweep[:200]:
                client.post("/v1/estimates/inference", json=p)
            latencies = []
            for p in itertools.islice(itertools.cycle(sweep), requests):
                start = time.perf_counter()
                response = client.post("/v1/estimates/inference", json=p)
                latencies.append((time.perf_counter() - start) * 1e3)
                response.raise_for_status()
            bad_latencies = []
            for body in bad_bodies():
                start = time.perf_counter()
                response = client.post(
                    "/v1/estimates/inference", content=body, headers={"content-type": "application/json"}
                )
                bad_latencies.append((time.perf_counter() - start) * 1e3)
                assert 400 <= response.status_code < 500, response.status_code
    finally:
        server.terminate()
        server.wait(timeout=10)
    return {
        "http_p50_ms": percentile(latencies, 50),
        "http_p95_ms": percentile(latencies, 95),
        "http_p99_ms": percentile(latencies, 99),
        "http_requests": requests,
        "bad_input_max_ms": max(bad_latencies),
    }


def bad_bodies() -> list[bytes]:
    """Hostile inputs that must be answered with a 4xx quickly."""
    return [
        b"[" * 100_000,
        b'{"model": ' + b"[" * 60 + b"]" * 60 + b"}",
        b'{"model": "llama-3-8b", "serving": {"prompt_tokens": 1e30}}',
        b'{"model": "llama-3-8b", "serving": {"gpu_memory_utilization": NaN}}',
        b'{"model": {"model_type": "llama", "hidden_size": 1048576, "num_hidden_layers": 1024, '
        b'"num_attention_heads": 16384, "vocab_size": 16777216, "intermediate_size": 16777216}, '
        b'"serving": {"prompt_tokens": 1073741824, "concurrency": 1048576}}',
        b"{" + b'"a": 1,' * 50_000 + b'"model": "x"}',
        b"not json",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="time per in-process measurement")
    parser.add_argument("--http-requests", type=int, default=2000)
    args = parser.parse_args()
    results = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    results |= in_process(args.seconds)
    results |= over_http(args.http_requests)
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:,.1f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
