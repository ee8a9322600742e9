"""Case 8 (issue 20 item 5): second order. Hessian requests (N×C of `Plan.large`, N·C·C numbers
as the Jacobian of case 1) end to end against their in-process floors, as JSON and as .npz in
and out; and Hessian-vector products against N·C (the slope of log time against log N·C)."""

from functools import partial
from typing import Any

from bench import cases
from bench.client import Connection
from bench.plan import Bench
from bench.report import Row, row

HESSIAN_MEANING = "end-to-end time / in-process floor (encode, decode, numerics, encode, decode)"
HESSIAN_REQUESTS = {
    "Hessian": cases.HESSIAN_INCLUDE,
    "Hessian and numeric Hessian": ["hessian", "numeric_hessian"],
}


def measure(bench: Bench) -> tuple[list[Row], dict[str, Any]]:
    """Case 8 (issue 20 item 5): Hessian requests (N×C of plan.large, N·C·C numbers as the
    Jacobian of case 1) end to end against their in-process floors, as JSON and as .npz in
    and out; and Hessian-vector products (include ["hessian_vector_product"] with a
    `vector`, .npz in and out) against N·C, C swept at N = plan.hvp_samples: the slope of log
    time against log N·C, like case 5's."""
    plan = bench.plan
    n, c = plan.large
    payload = cases.problem(n, c)
    connection = Connection(bench.shared_server.port, timeout=300.0)
    actions: dict[str, Any] = {}
    for label, include in HESSIAN_REQUESTS.items():
        json_body = cases.json_request(payload, include)
        binary_body = cases.npz_request(payload, {"include": include})
        actions[f"{label}, JSON"] = partial(cases.post_ready_json, connection, json_body)
        actions[f"{label}, JSON floor"] = partial(
            cases.hessian_floor, payload, include, binary=False
        )
        actions[f"{label}, .npz"] = partial(cases.post_binary, connection, binary_body)
        actions[f"{label}, .npz floor"] = partial(
            cases.hessian_floor, payload, include, binary=True
        )
    keys = {name: sorted(action()) for name, action in actions.items()}  # warm, and what came
    times = cases.interleaved(actions, plan.repeats)
    rows = []
    for label in HESSIAN_REQUESTS:
        for fmt, shown in (("JSON", "JSON"), (".npz", ".npz in and out")):
            name = f"{label}, {fmt}"
            rows.append(
                row(
                    "8",
                    f"8 {label}, {shown} (N={n}, C={c})",
                    times[name],
                    times[f"{name} floor"],
                    "s",
                    times[name] / times[f"{name} floor"],
                    HESSIAN_MEANING,
                )
            )
    points: list[dict[str, Any]] = []
    for classes in cases.geometric(10, plan.hvp_max_classes, plan.hvp_points):
        request = cases.with_vector(cases.problem(plan.hvp_samples, classes))
        body = cases.npz_request(request, {"include": cases.HVP_INCLUDE})
        cases.post_binary(connection, body)
        seconds = cases.median_time(
            partial(cases.post_binary, connection, body), plan.scaling_repeats
        )
        points.append(
            {
                "N": plan.hvp_samples,
                "C": classes,
                "entries": plan.hvp_samples * classes,
                "seconds": seconds,
            }
        )
    connection.close()
    slope = cases.large_end_slope([p["entries"] for p in points], [p["seconds"] for p in points])
    last = points[-1]
    rows.append(
        row(
            "8 HVP slope",
            f"8 Hessian-vector product against N·C, .npz (up to N={last['N']}, C={last['C']})",
            last["seconds"],
            last["N"] * last["C"],
            "s / entries",
            slope,
            "slope of log time against log N·C (1 = linear, < 1: the fixed cost of a request "
            "still shows)",
        )
    )
    return rows, {"seconds": times, "response_keys": keys, "hvp": points}
