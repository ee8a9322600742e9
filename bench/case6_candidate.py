"""Case 6 (issues 14 and 27): a caller's own outputs checked. 6a: a candidate gradient with the
request of cases 1 and 4, end to end against the same request without it; 6b: a candidate
Jacobian as large as the body limit allows, end to end against its in-process parse-and-compare
floor; each with a correct candidate and with a classic mistake (diagnosed). 6c: a candidate
gradient that no code nor pair explains, against the same request with a right one.
"not available" rows if the service refuses `candidate`."""

import time
from functools import partial
from typing import Any

import orjson
import pydantic_core

from app.core.config import Settings
from app.numerics.gradcheck import Output
from bench import cases
from bench.client import Connection
from bench.plan import Bench, Plan
from bench.report import Row, reply_detail, row, unavailable

GRADIENT_INCLUDE = ["gradient"]
"""Outputs of case 6a's information rows: only the one its candidate is checked against, so
that the check's cost is not hidden behind the 2.56 M-entry Jacobian of the default outputs."""
JACOBIAN_INCLUDE = ["loss"]
"""Outputs of case 6b's requests: a small response, so that the case measures the candidate."""


def _verdict(response: dict[str, Any], output: str) -> dict[str, Any]:
    """What the service said of a candidate output: passed, entries checked, diagnoses."""
    check = response["candidate_check"]
    return {
        "passed": check["passed"],
        "checked": check["outputs"][output]["checked"],
        "diagnoses": [d["code"] for d in check["diagnoses"]],
    }


GRADIENT_MEANING = "end-to-end time / the same request without a candidate"
JACOBIAN_MEANING = "end-to-end time / in-process floor (parse, numerics, compare)"
TOO_SLOW_TO_REPEAT = 10.0
"""A 6b request whose first run takes this many times its floor is not run again: its one
time is reported (the bench stays bounded when the service is far off its target)."""


def measure(bench: Bench) -> tuple[list[Row], dict[str, Any]]:
    """Case 6 (issue 14): (a) a candidate gradient, N×C of plan.large, end to end against the
    same request without it; (b) a candidate Jacobian as large as the body limit allows, end to
    end against its in-process parse-and-compare floor. Each with a correct candidate and with
    a classic mistake (diagnosed). "not available" rows if the service refuses `candidate`."""
    plan, settings = bench.plan, bench.settings
    connection = Connection(bench.shared_server.port, timeout=900.0)
    try:
        if not cases.candidate_accepted(connection):
            n, c = plan.large
            reason = cases.CANDIDATE_UNAVAILABLE
            return [
                unavailable(
                    "6a", f"6a candidate gradient (N={n}, C={c})", "s", GRADIENT_MEANING, reason
                ),
                unavailable(
                    "6b",
                    f"6b candidate Jacobian (C={plan.jacobian_classes})",
                    "s",
                    JACOBIAN_MEANING,
                    reason,
                ),
                unavailable(
                    "6c",
                    f"6c unexplained gradient (N={n}, C={c})",
                    "s",
                    UNEXPLAINED_MEANING,
                    reason,
                ),
            ], {"available": False}
        gradient_rows, gradient_details = candidate_gradient_case(connection, plan)
        jacobian_rows, jacobian_details = candidate_jacobian_case(connection, plan, settings)
        unexplained_rows, unexplained_details = unexplained_gradient_case(connection, plan)
    finally:
        connection.close()
    details = {
        "available": True,
        "gradient": gradient_details,
        "jacobian": jacobian_details,
        "unexplained": unexplained_details,
    }
    return [*gradient_rows, *jacobian_rows, *unexplained_rows], details


def candidate_gradient_case(connection: Connection, plan: Plan) -> tuple[list[Row], dict[str, Any]]:
    """Case 6a: the request of cases 1 and 4 (N×C of plan.large, default outputs) with a
    candidate gradient, correct or not divided by N, against the same request without one;
    and, for information, the same three requests asking for the gradient alone, where the
    Jacobian's 2.56 M numbers do not hide what the candidate costs."""
    n, c = plan.large
    payload = cases.problem(n, c)
    candidates = {
        "without": None,
        "correct": {"gradient": cases.candidate_gradient(payload)},
        "not_divided": {"gradient": cases.candidate_gradient(payload, divided=False)},
    }
    variants = {"default": cases.DEFAULT_INCLUDE_NAMES, "gradient_only": GRADIENT_INCLUDE}
    bodies = {
        variant: {
            name: cases.candidate_request(payload, include, candidate)
            for name, candidate in candidates.items()
        }
        for variant, include in variants.items()
    }
    verdicts = {
        variant: {
            name: _verdict(cases.post_ready_json(connection, body), "gradient")
            for name, body in group.items()
            if name != "without"
        }
        for variant, group in bodies.items()
    }
    repeats = {"default": plan.repeats, "gradient_only": plan.candidate_repeats}
    times = {
        variant: cases.interleaved(
            {
                name: partial(cases.post_ready_json, connection, body)
                for name, body in group.items()
            },
            repeats[variant],
        )
        for variant, group in bodies.items()
    }
    rows = []
    for variant, key, outputs in (
        ("default", "6a", "default outputs"),
        ("gradient_only", "6a gradient only", "gradient only, information"),
    ):
        group = times[variant]
        for name, label in (("correct", "correct"), ("not_divided", "not divided by N")):
            rows.append(
                row(
                    key,
                    f"6a candidate gradient, {label}; {outputs} (N={n}, C={c})",
                    group[name],
                    group["without"],
                    "s",
                    group[name] / group["without"],
                    GRADIENT_MEANING,
                )
            )
    details = {
        "include": variants,
        "body_bytes": {
            variant: {name: len(body) for name, body in group.items()}
            for variant, group in bodies.items()
        },
        "seconds": times,
        "verdicts": verdicts,
    }
    return rows, details


def candidate_jacobian_case(
    connection: Connection, plan: Plan, settings: Settings
) -> tuple[list[Row], dict[str, Any]]:
    """Case 6b: include ["loss"] with a correct candidate Jacobian and with one missing its
    diagonal, N the largest that the body limit allows for C = plan.jacobian_classes; each
    against `cases.candidate_floor` of the same body. Also times the parse alone (pydantic's
    and orjson's) for information."""
    c = plan.jacobian_classes
    limit = settings.max_body_bytes
    n = cases.largest_candidate_batch(c, limit, JACOBIAN_INCLUDE, settings.max_batch_size)
    bodies = cases.jacobian_bodies(cases.problem(n, c, seed=1), JACOBIAN_INCLUDE)
    include = frozenset(Output(item) for item in JACOBIAN_INCLUDE)
    verdicts: dict[str, Any] = {}
    first: dict[str, float] = {}
    failed: dict[str, str] = {}
    for name, body in bodies.items():
        cases.candidate_floor(body, include)  # warm
        started = time.perf_counter()
        reply = cases.post_body(connection, body)
        first[name] = time.perf_counter() - started
        if reply.status == 200:
            verdicts[name] = _verdict(orjson.loads(reply.body), "jacobian")
        else:
            failed[name] = f"not available: HTTP {reply.status} ({reply_detail(reply.body)})"
    floors = cases.interleaved(
        {name: partial(cases.candidate_floor, body, include) for name, body in bodies.items()},
        1,
    )
    too_slow = {name for name in verdicts if first[name] > TOO_SLOW_TO_REPEAT * floors[name]}
    actions: dict[str, Any] = {}
    for name, body in bodies.items():
        actions[f"{name}_floor"] = partial(cases.candidate_floor, body, include)
        if name in verdicts and name not in too_slow:
            actions[name] = partial(cases.post_ready_json, connection, body)
    actions["parse_only_pydantic"] = partial(pydantic_core.from_json, bodies["correct"])
    actions["parse_only_orjson"] = partial(orjson.loads, bodies["correct"])
    times = cases.interleaved(actions, plan.jacobian_repeats)
    for name in too_slow:
        times[name] = first[name]
    rows = []
    for name, label in (("correct", "correct"), ("missing_diagonal", "missing diagonal")):
        case = f"6b candidate Jacobian, {label} (N={n}, C={c})"
        if name in failed:
            rows.append(unavailable("6b", case, "s", JACOBIAN_MEANING, failed[name]))
            continue
        floor = times[f"{name}_floor"]
        rows.append(row("6b", case, times[name], floor, "s", times[name] / floor, JACOBIAN_MEANING))
    details = {
        "include": JACOBIAN_INCLUDE,
        "N": n,
        "C": c,
        "max_body_bytes": limit,
        "body_bytes": {name: len(body) for name, body in bodies.items()},
        "seconds": times,
        "first_run_seconds": first,
        "run_once_as_too_slow": sorted(too_slow),
        "verdicts": verdicts,
    }
    return rows, details


UNEXPLAINED_MEANING = "end-to-end time / the same request with a right candidate"


def unexplained_gradient_case(
    connection: Connection, plan: Plan
) -> tuple[list[Row], dict[str, Any]]:
    """Case 6c (issue 27): a candidate gradient that no single code explains (every entry off by
    a random 10 %), N×C of plan.large, gradient only, against the same request with a right
    candidate: every hypothesis, then every pair, fails on the probe rows (a few samples), so
    the diagnosis costs a few rows per hypothesis, not the batch. For information, the pair
    that does fit (gradient ascent: sign flipped and not divided), checked on every row once."""
    n, c = plan.large
    payload = cases.problem(n, c)
    candidates = {
        "correct": cases.candidate_gradient(payload),
        "unexplained": cases.unexplained_gradient(payload),
        "pair": cases.ascent_gradient(payload),
    }
    bodies = {
        name: cases.candidate_request(payload, GRADIENT_INCLUDE, {"gradient": gradient})
        for name, gradient in candidates.items()
    }
    verdicts = {
        name: _verdict(cases.post_ready_json(connection, body), "gradient")
        for name, body in bodies.items()
    }
    times = cases.interleaved(
        {name: partial(cases.post_ready_json, connection, body) for name, body in bodies.items()},
        plan.candidate_repeats,
    )
    rows = [
        row(
            key,
            f"6c candidate gradient, {label}; gradient only (N={n}, C={c})",
            times[name],
            times["correct"],
            "s",
            times[name] / times["correct"],
            UNEXPLAINED_MEANING,
        )
        for key, name, label in (
            ("6c", "unexplained", "no code nor pair explains it"),
            ("6c pair", "pair", "sign flipped and not divided (a pair), information"),
        )
    ]
    details = {
        "include": GRADIENT_INCLUDE,
        "body_bytes": {name: len(body) for name, body in bodies.items()},
        "seconds": times,
        "verdicts": verdicts,
    }
    return rows, details
