"""Case 3 (issue 6, target restated by issue 13 item 4): requests per second of small requests
(N×C of `Plan.small`, default outputs) with one worker and `Plan.concurrency` keep-alive
connections, against the bare endpoint of the same app; with the rates of the thread-hop and
no-numerics endpoints (bench/app.py), and the coalescer's mean batch, for reference."""

import statistics
from typing import Any

import orjson

from bench import cases
from bench.client import Connection, build_request, requests_per_second
from bench.plan import Bench
from bench.report import Row, row
from bench.server import Server


def measure(bench: Bench) -> tuple[list[Row], dict[str, Any]]:
    """The row of case 3, and the rates of every endpoint."""
    server, plan = bench.shared_server, bench.plan
    body = orjson.dumps(cases.problem(*plan.small), option=orjson.OPT_SERIALIZE_NUMPY)
    requests = {
        "service": build_request("POST", cases.CROSS_ENTROPY_PATH, body, cases.JSON_HEADERS),
        "bare": build_request("POST", cases.CONSTANT_PATH, body, cases.JSON_HEADERS),
        "bare_with_thread_hop": build_request("POST", cases.HOP_PATH, body, cases.JSON_HEADERS),
        "service_without_numerics": build_request(
            "POST", cases.NO_NUMERICS_PATH, body, cases.JSON_HEADERS
        ),
    }
    connection = Connection(server.port)
    for raw in requests.values():
        connection.request(raw).raise_for_status()
    connection.close()
    warm_up = min(0.5, plan.rps_seconds)
    for raw in requests.values():
        requests_per_second(server.port, raw, plan.concurrency, warm_up)
    batches_before = coalesced_batches(server)
    rates: dict[str, list[float]] = {name: [] for name in requests}
    for _ in range(plan.rps_runs):
        for name, raw in requests.items():
            rates[name].append(
                requests_per_second(server.port, raw, plan.concurrency, plan.rps_seconds)
            )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    rate, bare_rate = medians["service"], medians["bare"]
    n, c = plan.small
    case3 = row(
        "3",
        f"3 small requests/s (N={n}, C={c}, {plan.concurrency} connections)",
        rate,
        bare_rate,
        "req/s",
        rate / bare_rate,
        "service / bare endpoint of the same app",
    )
    batches, requests_in_batches = (
        after - before
        for after, before in zip(coalesced_batches(server), batches_before, strict=True)
    )
    details = {
        "requests_per_second": medians,
        "bare_with_thread_hop_over_bare": medians["bare_with_thread_hop"] / bare_rate,
        "service_without_numerics_over_bare": medians["service_without_numerics"] / bare_rate,
        "mean_requests_per_coalesced_batch": requests_in_batches / max(batches, 1),
    }
    return [case3], details


def coalesced_batches(server: Server) -> tuple[float, float]:
    """(batches, requests in them) computed by the server's coalescer so far (/metrics)."""
    connection = Connection(server.port)
    reply = connection.request(build_request("GET", "/metrics")).raise_for_status()
    text = bytes(reply.body).decode()
    connection.close()
    values = dict(
        line.split(" ", 1)
        for line in text.splitlines()
        if line.startswith("gradcheck_coalesced_requests_")
    )
    return float(values["gradcheck_coalesced_requests_count"]), float(
        values["gradcheck_coalesced_requests_sum"]
    )
