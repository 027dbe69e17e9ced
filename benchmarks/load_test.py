"""A bounded load test on loopback: N concurrent clients against the estimate endpoints and the probe listing.

It starts the service under uvicorn (`--workers` processes, a throwaway SQLite job store) on 127.0.0.1, runs
`--clients` clients that each send `--requests` requests (a fixed mix: serving estimates, training estimates,
the probe listing) or stop at `--max-seconds`, and reports requests per second, p50 / p95 / p99 latency, errors
(any non-2xx answer or failed request) and the server's resident memory (all its processes, sampled, the peak).

    .venv/bin/python benchmarks/load_test.py --clients 200 --requests 25 --workers 2

Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"  # loopback only, never anything else
STARTUP_S = 60.0
REQUEST_TIMEOUT_S = 60.0
MIX: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/estimates/inference", {"model": "llama-3-8b", "gpu": "h100-sxm"}),
    (
        "POST",
        "/v1/estimates/inference",
        {"model": "llama-3-70b", "gpu": "h200", "serving": {"tensor_parallel": 4, "concurrency": 64}},
    ),
    ("POST", "/v1/estimates/inference", {"model": "deepseek-v3", "gpu": "h200", "serving": {"tensor_parallel": 8}}),
    ("GET", "/v1/probes?limit=20", None),
    (
        "POST",
        "/v1/estimates/training",
        {"model": "llama-3-8b", "training": {"method": {"kind": "lora", "rank": 16}, "sequence_length": 4096}},
    ),
    ("POST", "/v1/estimates/inference", {"model": "qwen2.5-7b", "gpu": "l4", "serving": {"prompt_tokens": 4096}}),
    ("GET", "/v1/probes?status=done", None),
    ("POST", "/v1/estimates/training", {"model": "mixtral-8x7b", "training": {"method": {"kind": "full"}}}),
]


@dataclass
class Tally:
    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _tree(pid: int) -> list[int]:
    """A process and all its descendants (Linux /proc)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def _rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    total = 0
    for current in _tree(pid):
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) << 10 for line in status.splitlines() if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
    return total


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants, so far."""
    ticks = 0
    for current in _tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.every_s, self.peak_bytes = pid, every_s, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            self.peak_bytes = max(self.peak_bytes, _rss_bytes(self.pid))


def start_server(port: int, workers: int, database: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MEMPLAN_DATABASE_URL": f"sqlite:///{database}", "MEMPLAN_LOG_LEVEL": "warning"}
    env.pop("MEMPLAN_API_KEY", None)
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "service.app:create_app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
        "--timeout-keep-alive",
        "5",
        "--limit-concurrency",
        "1024",
    ]
    server = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not become ready")


class Connection:
    """One keep-alive HTTP/1.1 connection with the least client work per request (httpx spends ~7 ms of CPU per
    request at 200 concurrent clients, more than the server, on the same two cores)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        status_line = await self.reader.readline()
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        await self.reader.readexactly(length)
        if close or not status_line:
            self.close()
        return int(status_line.split()[1]) if status_line else 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def client(port: int, index: int, requests: int, stop_at: float, tally: Tally) -> None:
    connection = Connection(port)
    try:
        for n in range(requests):
            if time.monotonic() > stop_at:
                return
            method, path, body = MIX[(index + n) % len(MIX)]
            payload = json.dumps(body).encode() if body is not None else b""
            began = time.perf_counter()
            try:
                status = await asyncio.wait_for(connection.request(method, path, payload), REQUEST_TIMEOUT_S)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                tally.error(type(exc).__name__)
                connection.close()
                continue
            tally.latencies_s.append(time.perf_counter() - began)
            if not 200 <= status < 300:
                tally.error(str(status))
    finally:
        connection.close()


async def load(port: int, clients: int, requests: int, max_seconds: float) -> tuple[Tally, float]:
    tally = Tally()
    began = time.perf_counter()
    stop_at = time.monotonic() + max_seconds
    await asyncio.gather(*(client(port, i, requests, stop_at, tally) for i in range(clients)))
    return tally, time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=25, help="Requests per client (the run is bounded).")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="Clients stop sending after this.")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        server = start_server(port, args.workers, Path(tmp) / "jobs.db")
        sampler = RssSampler(server.pid)
        sampler.start()
        server_cpu_before, client_cpu_before = _cpu_s(server.pid), time.process_time()
        try:
            tally, wall_s = asyncio.run(load(port, args.clients, args.requests, args.max_seconds))
            server_cpu_s = _cpu_s(server.pid) - server_cpu_before
            client_cpu_s = time.process_time() - client_cpu_before
        finally:
            sampler.done.set()
            sampler.join()
            server.terminate()
            server.wait(30)
    ms = sorted(1000 * s for s in tally.latencies_s)
    report = {
        "clients": args.clients,
        "workers": args.workers,
        "requests": len(ms) + sum(tally.errors.values()),
        "seconds": round(wall_s, 2),
        "requests_per_s": round(len(ms) / wall_s, 1),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "errors": tally.errors,
        "server_rss_peak_mib": round(sampler.peak_bytes / 2**20, 1),
        "server_cpu_ms_per_request": round(1000 * server_cpu_s / max(len(ms), 1), 2),
        "client_cpu_ms_per_request": round(1000 * client_cpu_s / max(len(ms), 1), 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
