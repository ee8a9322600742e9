"""No default-level response reveals the reference: for many random problems and wrong answers,
no number in a native, Gradescope or PrairieLearn result (in its JSON or inside its text) equals a
reference value, a difference submitted − expected, a ratio submitted / expected, or an error
size. A student who sends `{"loss": 0}` must not read the loss back.

The numbers a student may see are their own: the submitted values, positions, counts, scores,
points and the tolerance. A reference-derived value that happens to coincide with one of those
on some problem is no leak, and is set aside before the check (few are).
"""

import math
import re
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

RESULT_FORMATS = ("native", "gradescope", "prairielearn")
PARTS = ("probabilities", "loss", "gradient")
POINTS = {"probabilities": 1, "loss": 1, "gradient": 2}
TOLERANCE = {"atol": 1e-5, "rtol": 1e-3}
NUMBER = re.compile(r"(?<![\w.])-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
RELATIVE = 1e-6


def problems(rng: np.random.Generator, count: int) -> Iterator[dict[str, Any]]:
    """Random problems in full: shapes, scales, reductions, weights and smoothing vary."""
    for _ in range(count):
        samples, classes = int(rng.integers(1, 6)), int(rng.integers(2, 7))
        problem: dict[str, Any] = {
            "logits": (rng.normal(size=(samples, classes)) * rng.choice([0.5, 1, 3]))
            .round(4)
            .tolist(),
            "labels": rng.integers(0, classes, samples).tolist(),
            "reduction": str(rng.choice(["mean", "sum", "none"])),
        }
        if rng.random() < 0.4:
            problem["weight"] = rng.uniform(0.2, 3, classes).round(3).tolist()
        if rng.random() < 0.3:
            problem["label_smoothing"] = 0.1
        yield problem


def wrong_answers(expected: dict[str, Any], rng: np.random.Generator) -> list[dict[str, Any]]:
    """The probes a student would send: zeros, one entry set to 10, twice, the opposite, noise,
    near misses."""
    values = {part: np.asarray(expected[part], np.float64) for part in PARTS}

    def each(change: Any) -> dict[str, Any]:
        return {part: np.asarray(change(part, value)).tolist() for part, value in values.items()}

    def one_set_to_ten(part: str, value: np.ndarray) -> np.ndarray:
        changed = value.copy()
        changed.flat[0] = 10.0
        return changed

    def near_miss(part: str, value: np.ndarray) -> np.ndarray:
        signs = rng.choice([-1.0, 1.0], size=value.shape)
        return value * (1 + 0.02 * signs) + 1e-3 * signs

    return [
        each(lambda part, value: np.zeros_like(value)),
        each(one_set_to_ten),
        each(lambda part, value: 2 * value),
        each(lambda part, value: -value),
        each(lambda part, value: rng.normal(size=value.shape).round(3)),
        each(near_miss),
    ]


def numbers_in(node: object) -> Iterator[tuple[float, float]]:
    """(number, relative tolerance) of every number in a JSON value, strings' numbers included:
    a number written with d ≥ 5 significant digits (as messages write six) matches anything
    that rounds to it."""
    if isinstance(node, bool) or node is None:
        return
    if isinstance(node, int | float):
        yield float(node), RELATIVE
    elif isinstance(node, str):
        for text in NUMBER.findall(node):
            digits = len(re.sub(r"[eE].*", "", text).lstrip("-").replace(".", "").lstrip("0"))
            tolerance = max(RELATIVE, 0.5 * 10.0 ** (1 - digits)) if digits >= 5 else RELATIVE
            yield float(text), tolerance
    elif isinstance(node, dict):
        for value in node.values():
            yield from numbers_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from numbers_in(value)


def close(value: float, reference: float, tolerance: float) -> bool:
    return abs(value - reference) <= max(tolerance * abs(reference), 1e-300)


def forbidden_values(expected: dict[str, Any], submitted: dict[str, Any], full: Any) -> list[float]:
    """Everything derived from the reference: values, differences, ratios, error sizes."""
    found: list[float] = []
    for part in PARTS:
        e = np.asarray(expected[part], np.float64).ravel()
        s = np.asarray(submitted[part], np.float64).ravel()
        found += [*e, *(s - e), *(e - s), *(np.abs(s - e))]
        found += [*(s[e != 0] / e[e != 0]), *(e[s != 0] / s[s != 0])]
    for part in full["parts"]:
        found += [part["max_abs_error"], part["max_rel_error"]]
    return [value for value in found if value is not None and math.isfinite(value)]


def public_values(submitted: dict[str, Any]) -> list[float]:
    """What the student knows or may be told: their own values, counts, positions, points,
    scores (points × k/entries), the tolerance."""
    values = [float(x) for part in PARTS for x in np.ravel(submitted[part])]
    values += [float(k) for k in range(0, 41)]
    values += [TOLERANCE["atol"], TOLERANCE["rtol"]]
    for points in {*POINTS.values(), sum(POINTS.values())}:
        for entries in range(1, 41):
            values += [points * k / entries for k in range(entries + 1)]
    return values


def leaks(
    result: Any, forbidden: list[float], public: np.ndarray
) -> tuple[list[tuple[float, float]], int]:
    """The numbers of `result` equal to a forbidden value that no public value explains, and how
    many forbidden values were left to check."""
    checked = [f for f in forbidden if f != 0 and not np.any(np.abs(public - f) <= 2e-5 * abs(f))]
    hits = [
        (number, f)
        for number, tolerance in numbers_in(result)
        for f in checked
        if close(number, f, tolerance)
    ]
    return hits, len(checked)


async def batch(client: httpx.AsyncClient, body: dict[str, Any]) -> list[Any]:
    response = await client.post("/v1/grade/batch", json=body)
    assert response.status_code == 200, response.text
    results: list[Any] = response.json()["results"]
    return results


async def test_no_default_response_holds_a_number_of_the_reference(
    asgi_client: httpx.AsyncClient,
) -> None:
    rng = np.random.default_rng(20240515)
    problem_list = list(problems(rng, 40))
    # half the problems by signed id, as a course hands them out
    for index in range(0, len(problem_list), 2):
        response = await asgi_client.post(
            "/v1/problems",
            json={
                "seed": f"leak-{index}",
                "batch_size": int(rng.integers(1, 6)),
                "num_classes": int(rng.integers(2, 7)),
            },
        )
        assert response.status_code == 200
        problem_list[index] = response.json()
    options = {"points": POINTS, "tolerance": TOLERANCE, "partial_credit": True}

    def item(problem: dict[str, Any], submission: object) -> dict[str, Any]:
        if "problem_id" in problem:
            return {"problem_id": problem["problem_id"], "submission": submission}
        return {"problem": problem, "submission": submission}

    oracle = await batch(
        asgi_client,
        {"items": [item(p, {}) for p in problem_list], "reveal_expected": True, **options},
    )
    expected = [{part["name"]: part["expected"] for part in r["parts"]} for r in oracle]
    items, answers = [], []
    for problem, values in zip(problem_list, expected, strict=True):
        for submission in wrong_answers(values, rng):
            items.append(item(problem, submission))
            answers.append((values, submission))
    full = await batch(asgi_client, {"items": items, "feedback": "full", **options})
    defaults = {
        result_format: await batch(
            asgi_client, {"items": items, "format": result_format, **options}
        )
        for result_format in RESULT_FORMATS
    }
    assert len(items) == 240

    checked_total = forbidden_total = 0
    for index, (values, submission) in enumerate(answers):
        forbidden = forbidden_values(values, submission, full[index])
        public = np.asarray(public_values(submission))
        for result_format in RESULT_FORMATS:
            result = defaults[result_format][index]
            hits, checked = leaks(result, forbidden, public)
            assert not hits, (result_format, index, hits[:3], result)
        checked_total += checked
        forbidden_total += len(forbidden)
        # the same check finds the answer in `full` feedback, which documents that it reveals it
        if index % 6 == 0:
            assert leaks(full[index], forbidden, public)[0], full[index]
    # set aside: mostly the answers that hold the expected values themselves (all but one entry
    # set to 10) and their zero differences and unit ratios
    assert checked_total > 0.6 * forbidden_total


@pytest.mark.parametrize("result_format", RESULT_FORMATS)
async def test_the_loss_zero_probe_reads_nothing_back(
    asgi_client: httpx.AsyncClient, result_format: str
) -> None:
    """The issue's attack: {"loss": 0} returned the expected loss as the error size."""
    problem = {"logits": [[0.3, -1.2, 2.2], [1.1, 0.4, -0.7]], "labels": [2, 0]}
    response = await asgi_client.post(
        "/v1/grade",
        json={"problem": problem, "submission": {"loss": 0}, "format": result_format},
    )
    assert response.status_code == 200
    loss = 0.5 * (
        -math.log(math.exp(2.2) / sum(math.exp(z) for z in (0.3, -1.2, 2.2)))
        - math.log(math.exp(1.1) / sum(math.exp(z) for z in (1.1, 0.4, -0.7)))
    )
    text = response.text
    for digits in (3, 4, 5, 6):
        assert f"{loss:.{digits}g}" not in text
