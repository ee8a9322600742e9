"""Case 5 (issue 6): end-to-end cost against output size, over N and over C up to the largest
request the limits allow (`measure_scaling`: the slope of log time against log size), and the
peak memory of that largest request against its output size (`measure_memory`: the numerics
in a fresh process, and fresh servers' peak RSS growth for .npz and JSON)."""

import os
import subprocess
import sys
from functools import partial
from typing import Any

import orjson

from bench import cases
from bench.client import Connection, build_request
from bench.plan import Bench
from bench.report import Row, row
from bench.server import running_server
from tests.helpers import ROOT


def measure_scaling(bench: Bench) -> tuple[list[Row], list[dict[str, Any]]]:
    """End-to-end cost against N (C fixed) and against C (N fixed), up to the limits: one
    slope row per axis and format, and the points (the PNG's)."""
    server, plan, settings = bench.shared_server, bench.plan, bench.settings
    connection = Connection(server.port)
    points: list[dict[str, Any]] = []
    sweeps = {
        "N": [
            (n, plan.scaling_classes)
            for n in cases.geometric(
                8, cases.largest_batch(plan.scaling_classes, settings), plan.scaling_points
            )
        ],
        "C": [
            (plan.scaling_samples, c)
            for c in cases.geometric(
                10, cases.largest_classes(plan.scaling_samples, settings), plan.scaling_points
            )
        ],
    }
    for axis, shapes in sweeps.items():
        for n, c in shapes:
            payload = cases.problem(n, c)
            fields = cases.post_npz(connection, payload)
            npz = cases.median_time(
                partial(cases.post_npz, connection, payload), plan.scaling_repeats
            )
            json_time = cases.median_time(
                partial(cases.post_json, connection, payload), plan.scaling_repeats
            )
            points.append(
                {
                    "axis": axis,
                    "N": n,
                    "C": c,
                    "output_entries": cases.output_bytes(fields) // 8,
                    "npz_seconds": npz,
                    "json_seconds": json_time,
                }
            )
    connection.close()
    rows = []
    for axis in sweeps:
        line = [p for p in points if p["axis"] == axis]
        entries = [p["output_entries"] for p in line]
        for fmt in ("npz", "json"):
            slope = cases.large_end_slope(entries, [p[f"{fmt}_seconds"] for p in line])
            last = line[-1]
            rows.append(
                row(
                    "5 slope",
                    f"5 cost against {axis}, {fmt} (up to N={last['N']}, C={last['C']})",
                    last[f"{fmt}_seconds"],
                    last["output_entries"],
                    "s / entries",
                    slope,
                    "slope of log time against log output size (1 = linear, < 1: the fixed "
                    "cost of a request still shows)",
                )
            )
    return rows, points


def measure_memory(bench: Bench) -> tuple[list[Row], dict[str, Any]]:
    """Peak memory of the largest allowed request against its output size.

    Output size: 8 bytes per float64 number in the response's arrays. Measured twice: the
    numerics in a fresh process (tracemalloc peak), and the server's peak RSS growth (VmHWM)
    while it serves the request, as .npz and as JSON (each on a fresh server).
    """
    plan, settings, env = bench.plan, bench.settings, bench.env
    n, c = cases.largest_batch(plan.scaling_classes, settings), plan.scaling_classes
    payload = cases.problem(n, c)
    small = cases.problem(*plan.small)
    numerics = orjson.loads(
        subprocess.run(
            [sys.executable, "-m", "bench.memory", str(n), str(c)],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        ).stdout
    )
    growth = {}
    response_bytes = {}
    for fmt, post in (("npz", cases.post_npz), ("json", cases.post_json)):
        with running_server(env) as server:
            connection = Connection(server.port)
            cases.post_npz(connection, small)
            cases.post_json(connection, small)
            before = server.peak_rss_bytes()
            raw = build_request(
                "POST",
                cases.CROSS_ENTROPY_PATH,
                orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
                cases.NPZ_HEADERS if fmt == "npz" else cases.JSON_HEADERS,
            )
            reply = connection.request(raw).raise_for_status()
            growth[fmt] = server.peak_rss_bytes() - before
            response_bytes[fmt] = len(reply.body)
            post(connection, small)
            connection.close()
    output = numerics["output_bytes"]
    rows = [
        row(
            "5 memory, numerics",
            f"5 peak memory, numerics (N={n}, C={c})",
            numerics["peak_bytes"],
            output,
            "bytes",
            numerics["peak_bytes"] / output,
            "tracemalloc peak / output size",
        ),
        row(
            "5 memory, server .npz",
            f"5 peak memory, server .npz (N={n}, C={c})",
            growth["npz"],
            output,
            "bytes",
            growth["npz"] / output,
            "server peak RSS growth / output size",
        ),
        row(
            "5 memory, server JSON",
            f"5 peak memory, server JSON (N={n}, C={c})",
            growth["json"],
            output + response_bytes["json"],
            "bytes",
            growth["json"] / (output + response_bytes["json"]),
            "server peak RSS growth / (output size + JSON body)",
        ),
    ]
    return rows, {"numerics": numerics, "server_growth": growth, "response_bytes": response_bytes}
