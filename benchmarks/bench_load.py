"""How long does a latency-under-load answer take? Wall time of estimate_inference with `load`, by concurrency.

Run: .venv/bin/python benchmarks/bench_load.py [--repeat 5]
Each configuration is answered once cold (its step model built, nothing memoized) and `--repeat` times warm (the
same request again: the kernel-table picks and the step pieces it memoized are reused, as in a sweep); the table
gives the median of each, and the best warm time (the least disturbed by other jobs on a shared machine). Also reports
process CPU time, which is steadier than wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from planner import InferenceRequest, estimate_inference, load_catalog  # noqa: E402
from planner.serving import step_time  # noqa: E402

CASES = [  # (model, gpu, engine, tp, weights, prompt, output)
    ("llama-3.1-8b", "h100-sxm", "vllm", 1, "bf16", 1024, 256),
    ("llama-3.1-70b", "h200", "trtllm", 4, "fp8", 2048, 512),
    ("qwen3-235b-a22b", "h200", "sglang", 8, "fp8_block", 1024, 1024),
    ("deepseek-v3", "h200", "vllm", 8, "fp8_block", 4096, 512),
]
CONCURRENCY = (1, 8, 32, 64, 128, 256)


def _time(request: InferenceRequest) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    estimate_inference(request, load_catalog())
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for model, gpu, engine, tp, weights, prompt, output in CASES:
        for c in CONCURRENCY:
            serving = {"engine": engine, "tensor_parallel": tp, "weight_format": weights, "prompt_tokens": prompt,
                       "output_tokens": output}  # fmt: skip
            request = InferenceRequest(
                model=model, gpu=gpu, serving={**serving, "concurrency": c}, load={"concurrency": c}
            )
            step_time._build.cache_clear()
            cold_wall, cold_cpu = _time(request)
            warm = [_time(request) for _ in range(args.repeat)]
            rows.append(
                {
                    "case": f"{model} {weights} {gpu} {engine} TP{tp} {prompt}/{output}",
                    "concurrency": c,
                    "cold_ms": round(cold_wall, 1),
                    "cold_cpu_ms": round(cold_cpu, 1),
                    "warm_ms": round(statistics.median(w for w, _ in warm), 2),
                    "warm_cpu_ms": round(statistics.median(c for _, c in warm), 2),
                    "warm_best_ms": round(min(w for w, _ in warm), 2),
                }
            )
    print("| configuration | concurrency | cold ms (CPU) | warm ms (CPU) | warm best ms |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['case']} | {r['concurrency']} | {r['cold_ms']} ({r['cold_cpu_ms']}) | {r['warm_ms']} "
            f"({r['warm_cpu_ms']}) | {r['warm_best_ms']} |"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
