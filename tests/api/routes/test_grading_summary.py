"""Grading names the new mistakes and pairs of them, and /v1/grade/batch answers a class summary
for the instructor: per part, in how many submissions each code was found, and the score
distribution, with no number derived from the reference.

Submissions are written here with numpy from the textbook formulas (softmax, one-hot targets,
label smoothing (1 − ε)·onehot + ε/C), independently of app.numerics.
"""

import re
from typing import Any

import httpx
import numpy as np

from app.grading.summary import class_summary

Z = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [0.0, -1.0, 1.5], [1.0, 0.0, 3.0]])
LABELS = np.array([0, 1, 2, 0])
EPS = 0.1
PROBLEM = {"logits": Z.tolist(), "labels": LABELS.tolist(), "label_smoothing": EPS}
NUMBER = re.compile(r"\d+\.\d+|\d+e-?\d+")


def answer(*, smoothing: float = EPS, divide: bool = True, sign: float = 1.0) -> dict[str, Any]:
    """Loss and gradient by the textbook formulas, with the mistakes asked for."""
    n, c = Z.shape
    shifted = Z - Z.max(axis=1, keepdims=True)
    log_a = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    q = (1 - smoothing) * np.eye(c)[LABELS] + smoothing / c
    d = n if divide else 1
    loss = float(-(q * log_a).sum() / d)
    gradient = (np.exp(log_a) - q) / d
    return {"loss": sign * loss, "gradient": (sign * gradient).tolist()}


RIGHT = answer()
SUMMED = answer(divide=False)
UNSMOOTHED = answer(smoothing=0.0)
UNSMOOTHED_SUMMED = answer(smoothing=0.0, divide=False)
NOISE = {"loss": 3.7, "gradient": (np.full(Z.shape, 0.3) * [1, -1, 1]).tolist()}


async def test_a_pair_is_named_in_the_feedback(asgi_client: httpx.AsyncClient) -> None:
    response = await asgi_client.post(
        "/v1/grade", json={"problem": PROBLEM, "submission": UNSMOOTHED_SUMMED}
    )
    assert response.status_code == 200, response.text
    gradient = next(part for part in response.json()["parts"] if part["name"] == "gradient")
    assert gradient["diagnosis"] == "not_divided"
    assert gradient["diagnoses"] == ["not_divided", "label_smoothing_ignored"]
    sentences = gradient["message"].split("Likely two mistakes at once: ", 1)[1]
    assert "label smoothing" in sentences and "not divided" in sentences
    assert not NUMBER.search(sentences), sentences


async def test_a_new_code_is_named_in_the_feedback(asgi_client: httpx.AsyncClient) -> None:
    # fairseq's smoothing: (1 − ε) on the label, ε/(C − 1) on the others
    n, c = Z.shape
    q = np.full((n, c), EPS / (c - 1))
    q[np.arange(n), LABELS] = 1 - EPS
    a = np.exp(Z - Z.max(axis=1, keepdims=True))
    a /= a.sum(axis=1, keepdims=True)
    submission = {"gradient": ((a - q) / n).tolist()}
    response = await asgi_client.post(
        "/v1/grade", json={"problem": PROBLEM, "submission": submission, "points": {"gradient": 1}}
    )
    (part,) = response.json()["parts"]
    assert part["diagnoses"] == ["smoothing_over_other_classes"]
    sentence = part["message"].split("Likely mistake: ", 1)[1]
    assert not NUMBER.search(sentence), sentence


async def test_the_batch_answers_a_class_summary(asgi_client: httpx.AsyncClient) -> None:
    submissions = [RIGHT, SUMMED, SUMMED, UNSMOOTHED, UNSMOOTHED_SUMMED, NOISE, "not an object"]
    response = await asgi_client.post(
        "/v1/grade/batch",
        json={"problem": PROBLEM, "submissions": submissions, "partial_credit": False},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    summary = body["summary"]
    assert (summary["submissions"], summary["gradable"]) == (7, 6)
    parts = {part["name"]: part for part in summary["parts"]}
    assert parts["gradient"]["codes"] == {"not_divided": 3, "label_smoothing_ignored": 2}
    assert parts["loss"]["codes"] == {"not_divided": 2, "label_smoothing_ignored": 1}
    assert [parts[name]["passed"] for name in ("loss", "gradient")] == [1, 1]
    assert [parts[name]["unreadable"] for name in ("loss", "gradient")] == [1, 1]
    scores = summary["scores"]
    results = [result["score"] for result in body["results"]]
    assert scores["max"] == max(results) and scores["min"] == min(results)
    assert scores["mean"] == sum(results) / len(results)
    assert sum(item["count"] for item in scores["histogram"]) == 7
    assert scores["histogram"][-1]["high"] == scores["max_score"]


async def test_the_summary_holds_no_reference_number(asgi_client: httpx.AsyncClient) -> None:
    # every number of the summary is a count, a score, or a histogram edge over [0, max_score]
    response = await asgi_client.post(
        "/v1/grade/batch", json={"problem": PROBLEM, "submissions": [SUMMED, NOISE]}
    )
    summary = response.json()["summary"]
    expected = {float(f"{value:.6g}") for value in (RIGHT["loss"], SUMMED["loss"])}

    def numbers(value: object) -> list[float]:
        if isinstance(value, dict):
            return [x for item in value.values() for x in numbers(item)]
        if isinstance(value, list):
            return [x for item in value for x in numbers(item)]
        return [float(value)] if isinstance(value, int | float) else []

    assert not {float(f"{x:.6g}") for x in numbers(summary)} & expected


def test_an_empty_batch_has_an_empty_summary() -> None:
    # the route refuses an empty batch (422); the summary itself has no statistics then
    summary = class_summary([])
    assert (summary.submissions, summary.parts, summary.histogram) == (0, (), ())
    assert summary.mean is None and summary.median is None
