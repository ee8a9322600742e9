"""Prometheus metrics of the HTTP traffic, labelled by route template, method and status.

Each app has its own registry (tests build many apps in one process). With several uvicorn
workers, set PROMETHEUS_MULTIPROC_DIR to an empty directory before the server starts: every
worker then writes its values there and `/metrics` adds them up over all workers.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
LABELS = ("method", "route", "status")
UNMATCHED_ROUTE = "<unmatched>"
"""Route label of requests that matched no route (kept constant: no raw paths as labels)."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SIZE_BUCKETS = tuple(float(4**k) for k in range(4, 15))
"""256 B … 64 MiB in factors of 4."""
BATCH_BUCKETS = (1, 2, 4, 8, 16)


def multiprocess_mode() -> bool:
    """True when the values are shared between worker processes through files."""
    return bool(os.environ.get(MULTIPROCESS_ENV))


class HttpMetrics:
    """Request count, latency and payload sizes per (method, route, status), requests in
    progress per method, and how many requests each coalesced computation served."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gradcheck_http_requests",
            "HTTP requests answered.",
            LABELS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "gradcheck_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.request_size = Histogram(
            "gradcheck_http_request_size_bytes",
            "Request body size: Content-Length, or the bytes read for a chunked body.",
            LABELS,
            buckets=SIZE_BUCKETS,
            registry=self.registry,
        )
        self.response_size = Histogram(
            "gradcheck_http_response_size_bytes",
            "Response body size in bytes.",
            LABELS,
            buckets=SIZE_BUCKETS,
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "gradcheck_http_requests_in_progress",
            "HTTP requests being served right now.",
            ("method",),
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.coalesced = Histogram(
            "gradcheck_coalesced_requests",
            "Small cross-entropy requests computed together in one batch (app/api/coalesce.py).",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )

    def observe(
        self,
        labels: tuple[str, str, str],
        seconds: float,
        request_bytes: int,
        response_bytes: int,
    ) -> None:
        """Record one finished request."""
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)
        self.request_size.labels(*labels).observe(request_bytes)
        self.response_size.labels(*labels).observe(response_bytes)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its media type (summed over workers if shared)."""
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def mark_worker_exited() -> None:
    """Drop this worker's live gauges from the shared files (multiprocess mode only)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
