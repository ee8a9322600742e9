"""A roster in one call: /v1/grade/batch with `items`, each student with their own problem."""

from typing import Any

import httpx
import numpy as np
import pytest

import app.api.routes.grading as grading_routes
from app.grading.grade import grade_group

EMAILS = ["ada@example.edu", "bob@example.edu", "cy@example.edu", "di@example.edu"]


async def problem_of(client: httpx.AsyncClient, seed: str, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/problems", json={"seed": seed, **fields})
    assert response.status_code == 200, response.text
    problem: dict[str, Any] = response.json()
    return problem


async def right_answer(client: httpx.AsyncClient, problem: dict[str, Any]) -> dict[str, Any]:
    keys = ("logits", "labels", "weight", "ignore_index", "reduction", "label_smoothing")
    body = {key: problem[key] for key in keys} | {"include": ["loss", "gradient"]}
    response = await client.post("/v1/cross-entropy", json=body)
    values = response.json()
    return {"loss": values["loss"], "gradient": values["gradient"]}


async def test_four_students_each_with_their_own_problem_in_one_call(
    asgi_client: httpx.AsyncClient,
) -> None:
    problems = [await problem_of(asgi_client, f"hw3:{email}") for email in EMAILS]
    answers = [await right_answer(asgi_client, problem) for problem in problems]
    # bob hands in ada's answer; di summed instead of averaging
    submissions = [
        answers[0],
        answers[0],
        answers[2],
        {
            "loss": answers[3]["loss"] * 4,
            "gradient": (np.array(answers[3]["gradient"]) * 4).tolist(),
        },
    ]
    items = [
        {"problem_id": problem["problem_id"], "submission": submission, "student": email}
        for problem, submission, email in zip(problems, submissions, EMAILS, strict=True)
    ]
    response = await asgi_client.post(
        "/v1/grade/batch", json={"items": items, "points": {"loss": 1, "gradient": 2}}
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["student"] for r in results] == EMAILS
    assert [r["score"] for r in results] == [3.0, 0.0, 3.0, 0.0]
    assert results[3]["parts"][1]["diagnosis"] == "not_divided"
    # each result is what /v1/grade says for that student alone
    for item, result in zip(items, results, strict=True):
        single = await asgi_client.post(
            "/v1/grade",
            json={
                "problem_id": item["problem_id"],
                "submission": item["submission"],
                "points": {"loss": 1, "gradient": 2},
            },
        )
        assert single.json() | {"student": item["student"]} == result


@pytest.mark.parametrize("result_format", ["gradescope", "prairielearn"])
async def test_roster_results_in_every_format_carry_the_label(
    asgi_client: httpx.AsyncClient, result_format: str
) -> None:
    problem = {"logits": [[0.1, 0.2]], "labels": [0]}
    items = [
        {"problem": problem, "submission": {"loss": 1}},
        {"problem": problem, "submission": {}, "student": "x"},
    ]
    response = await asgi_client.post(
        "/v1/grade/batch", json={"items": items, "format": result_format}
    )
    assert response.status_code == 200, response.text
    assert [r["student"] for r in response.json()["results"]] == [None, "x"]


async def test_items_of_one_shape_are_graded_together(
    asgi_client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def counting(references: Any, submissions: Any, options: Any) -> Any:
        calls.append(len(submissions))
        return grade_group(references, submissions, options)

    monkeypatch.setattr(grading_routes, "grade_group", counting)
    small = [await problem_of(asgi_client, f"s{i}", batch_size=2, num_classes=3) for i in range(5)]
    large = [await problem_of(asgi_client, f"l{i}", batch_size=3, num_classes=4) for i in range(3)]
    full = {"logits": [[0.1, 0.2, 0.3], [1.0, 0.0, -1.0]], "labels": [0, 2]}
    items: list[dict[str, Any]] = []
    for index in range(8):
        problem = (small + large)[index]
        items.append(
            {
                "problem_id": problem["problem_id"],
                "submission": await right_answer(asgi_client, problem),
            }
        )
    items.append({"problem": full, "submission": {"loss": 0.5}, "student": "in full"})
    items.append({"problem_id": small[0]["problem_id"], "submission": {}, "student": "again"})
    response = await asgi_client.post("/v1/grade/batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert sorted(calls) == [3, 7]  # 2×3 problems (five ids, one in full, one repeated), 3×4
    assert [r["score"] for r in results[:8]] == [2.0] * 8
    assert results[8]["student"] == "in full"
    assert results[9]["gradable"] is False


async def test_revealed_values_are_each_items_own(asgi_client: httpx.AsyncClient) -> None:
    one = {"logits": [[0.0, 0.0]], "labels": [0]}
    two = {"logits": [[0.0, 0.0, 0.0]], "labels": [2]}
    items = [{"problem": one, "submission": {}}, {"problem": two, "submission": {}}]
    response = await asgi_client.post(
        "/v1/grade/batch",
        json={"items": items, "reveal_expected": True, "points": {"probabilities": 1}},
    )
    results = response.json()["results"]
    assert results[0]["parts"][0]["expected"] == [[0.5, 0.5]]
    np.testing.assert_allclose(results[1]["parts"][0]["expected"], [[1 / 3] * 3], rtol=1e-15)


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (
            {"submissions": [{}], "items": [{"problem_id": "x", "submission": {}}]},
            ["body", "submissions"],
        ),
        ({"problem": {"logits": [[1, 2]], "labels": [0]}}, ["body", "submissions"]),
        (
            {
                "problem": {"logits": [[1, 2]], "labels": [0]},
                "items": [{"problem_id": "x", "submission": {}}],
            },
            ["body", "items"],
        ),
        ({"items": [{"submission": {}}]}, ["body", "items", 0, "problem_id"]),
        (
            {
                "items": [
                    {"problem": {"logits": [[1, 2]], "labels": [0]}, "submission": {}},
                    {"problem": {"logits": [[1, 2]], "labels": [5]}, "submission": {}},
                ]
            },
            ["body", "items", 1, "problem", "labels", 0],
        ),
        (
            {"items": [{"problem_id": "gp1.e30.AAAA", "submission": {}}]},
            ["body", "items", 0, "problem_id"],
        ),
        (
            {"items": [{"problem_id": "x", "submission": {}, "extra": 1}]},
            ["body", "items", 0, "extra"],
        ),
        ({"items": []}, ["body", "items"]),
    ],
)
async def test_a_bad_roster_is_a_422_at_its_place(
    asgi_client: httpx.AsyncClient, body: dict[str, Any], location: list[Any]
) -> None:
    response = await asgi_client.post("/v1/grade/batch", json=body)
    assert response.status_code == 422, response.text
    assert location in [error["loc"] for error in response.json()["detail"]], response.text


async def test_a_students_overflowing_number_in_an_item_is_graded(
    asgi_client: httpx.AsyncClient,
) -> None:
    body = (
        '{"items": [{"problem": {"logits": [[1, 2]], "labels": [0]}, '
        '"submission": {"loss": 1e999, "gradient": [[0, 0]]}}]}'
    )
    response = await asgi_client.post(
        "/v1/grade/batch", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert "Infinity" in result["parts"][0]["message"]
