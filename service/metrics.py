"""Prometheus metrics: HTTP requests by route template and status, and the probe queue and outcomes.

Each app has its own registry (tests build many apps in one process). Under several uvicorn workers each worker
answers /metrics for itself; scrape them behind the load balancer as separate targets, or run one worker per
replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE", "Metrics", "MetricsMiddleware", "probe_outcome"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED_ROUTE = "<unmatched>"  # every path no route matched shares one label (no label per scanned URL)
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PROBE_BUCKETS_S = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def probe_outcome(error: str | None, out_of_memory: bool) -> str:
    """The outcome label of an ended probe: done, out_of_memory, timeout, interrupted or failed."""
    if error is None:
        return "out_of_memory" if out_of_memory else "done"
    for label, prefix in (("timeout", "timed out"), ("interrupted", "interrupted"), ("out_of_memory", "out of memory")):
        if error.startswith(prefix):
            return label
    return "failed"


class Metrics:
    """The collectors one app updates, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "memplan_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "memplan_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.probe_queue = Gauge("memplan_probe_queue_depth", "Probes waiting to start.", registry=self.registry)
        self.probe_outcomes = Counter(
            "memplan_probe_outcomes", "Probes that ended, by outcome.", ["outcome"], registry=self.registry
        )
        self.probe_duration = Histogram(
            "memplan_probe_duration_seconds",
            "Wall time of a probe from its start to its outcome.",
            ["outcome"],
            buckets=PROBE_BUCKETS_S,
            registry=self.registry,
        )

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Read the probe queue depth from `depth` at each scrape."""
        self.probe_queue.set_function(depth)

    def probe_ended(self, outcome: str, duration_s: float) -> None:
        self.probe_outcomes.labels(outcome).inc()
        self.probe_duration.labels(outcome).observe(duration_s)

    def render(self) -> bytes:
        """The Prometheus text exposition of every collector."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Count every HTTP request and time it, labelled by method, route template (not the raw path) and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # what the client gets if the app raises before it starts a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            labels = (scope["method"], template, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - began)
