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
REFUSAL_REASONS = ("too_large", "queue_full", "timeout")
CLIENT_CLOSED_REQUEST = 499
"""Status counted for a request whose client went away before its response was sent (nginx's
convention): a disconnect mid-body, or a response not read within GRADCHECK_SEND_TIMEOUT_SECONDS."""


def multiprocess_mode() -> bool:
    """True when the values are shared between worker processes through files."""
    return bool(os.environ.get(MULTIPROCESS_ENV))


class HttpMetrics:
    """Request count, latency and payload sizes per (method, route, status), requests in
    progress per method, how many requests each coalesced computation served, and the memory
    budget: its size, the memory in flight, the queue and the refusals by reason."""

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

        self.memory_budget = Gauge(
            "gradcheck_memory_budget_bytes",
            "Memory budget of the requests being computed (app/core/budget.py).",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.memory_in_flight = Gauge(
            "gradcheck_memory_in_flight_bytes",
            "Estimated peak memory of the requests admitted and not finished.",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.admission_queued = Gauge(
            "gradcheck_admission_queued_requests",
            "Requests waiting for memory.",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.admission_refusals = Counter(
            "gradcheck_admission_refusals",
            "Requests refused by admission control: too_large (413, over the whole budget), "
            "queue_full and timeout (503 with Retry-After).",
            ("reason",),
            registry=self.registry,
        )
        for reason in REFUSAL_REASONS:
            self.admission_refusals.labels(reason)

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
