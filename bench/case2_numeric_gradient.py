"""Case 2 (issue 6): the service's numeric gradient (central and complex step) end to end
against a per-element loop in-process (`cases.loop_baseline`)."""

from dataclasses import asdict
from functools import partial
from typing import Any

import numpy as np

from app.numerics.finite_diff import Method
from bench import cases
from bench.client import Connection
from bench.plan import Bench
from bench.report import Row, row


def measure(bench: Bench) -> tuple[list[Row], dict[str, Any]]:
    """One row per method, and each loop's timing and agreement with the service."""
    plan = bench.plan
    payload = cases.problem(*plan.large)
    connection = Connection(bench.shared_server.port)
    rows, details = [], {}
    n, c = plan.large
    for method in (Method.CENTRAL, Method.COMPLEX_STEP):
        request = cases.numeric_gradient_payload(payload, method)
        service_gradient = np.asarray(cases.post_json(connection, request)["numeric_gradient"])
        service = cases.median_time(partial(cases.post_json, connection, request), plan.repeats)
        loop = cases.loop_baseline(
            payload, method, service_gradient, plan.loop_elements, plan.repeats
        )
        loop_total = loop.seconds_per_element * n * c
        rows.append(
            row(
                "2",
                f"2 numeric gradient, {method} (N={n}, C={c})",
                service,
                loop_total,
                "s",
                loop_total / service,
                "per-element loop (in-process) / service end to end",
            )
        )
        details[str(method)] = asdict(loop)
    connection.close()
    return rows, details
