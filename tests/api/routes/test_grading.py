"""POST /v1/problems, /v1/grade and /v1/grade/batch over HTTP, in-process and live."""

import json
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ClientFactory
from tests.grading.test_formats import check_gradescope, check_prairielearn

PROBLEM = {"seed": "hw3-alice", "batch_size": 4, "num_classes": 3}


def strict_json(response: httpx.Response) -> Any:
    """The body parsed as strict JSON: a NaN or Infinity literal anywhere fails the test."""

    def refuse(literal: str) -> None:
        raise AssertionError(f"response carries the non-JSON literal {literal}")

    return json.loads(response.text, parse_constant=refuse)


async def post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Response:
    """POST with Python's json, which writes NaN and Infinity as the bare literals."""
    headers = {"content-type": "application/json"}
    return await client.post(url, content=json.dumps(body), headers=headers)


async def new_problem(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await post(client, "/v1/problems", {**PROBLEM, **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = strict_json(response)
    return body


def cross_entropy_body(problem: dict[str, Any]) -> dict[str, Any]:
    """The problem's fields as a /v1/cross-entropy body."""
    keys = ("logits", "labels", "weight", "ignore_index", "reduction", "label_smoothing", "dtype")
    return {key: problem[key] for key in keys}


async def answer(client: httpx.AsyncClient, problem: dict[str, Any]) -> dict[str, Any]:
    """The correct answer, from the core endpoint /v1/cross-entropy."""
    body = {**cross_entropy_body(problem), "include": ["probabilities", "loss", "gradient"]}
    response = await post(client, "/v1/cross-entropy", body)
    assert response.status_code == 200, response.text
    values = response.json()
    return {key: values[key] for key in ("probabilities", "loss", "gradient")}


async def grade(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await post(client, "/v1/grade", body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = strict_json(response)
    return result


async def refused(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await post(client, url, body)
    assert response.status_code == 422, response.text
    (error,) = strict_json(response)["detail"]
    return dict(error)


# ----- problems -----


async def test_the_same_request_gives_the_same_problem_on_another_server(
    make_client: ClientFactory,
) -> None:
    async with make_client(secret_key="a" * 32) as first, make_client() as second:
        one, two = await new_problem(first), await new_problem(second)
    for key in ("logits", "labels", "parameters"):
        assert one[key] == two[key]
    assert one["problem_id"] != two["problem_id"]  # signed with different keys
    assert one["generator"]["name"] == "gradcheck-problem/1"
    assert one["generator"]["numpy"] == np.__version__
    assert np.shape(one["logits"]) == (4, 3)
    assert all(label in range(3) for label in one["labels"])


async def test_an_integer_seed_is_its_decimal_text(asgi_client: httpx.AsyncClient) -> None:
    by_int = await new_problem(asgi_client, seed=20261125)
    by_text = await new_problem(asgi_client, seed="20261125")
    assert by_int["logits"] == by_text["logits"]
    assert by_int["parameters"]["seed"] == "20261125"


async def test_a_problem_is_a_cross_entropy_body(client: httpx.AsyncClient) -> None:
    problem = await new_problem(
        client,
        label_type="probabilities",
        weight=[1.0, 2.0, 0.5],
        label_smoothing=0.1,
        reduction="sum",
        dtype="float32",
        logit_scale=3.0,
    )
    assert np.shape(problem["labels"]) == (4, 3)
    np.testing.assert_allclose(np.sum(problem["labels"], axis=1), 1.0, atol=1e-12)
    assert problem["weight"] == [1.0, 2.0, 0.5]
    assert problem["reduction"] == "sum"
    assert problem["dtype"] == "float32"
    response = await post(client, "/v1/cross-entropy", cross_entropy_body(problem))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"seed": 4.5}, ["body", "seed"]),
        ({"seed": ""}, ["body", "seed"]),
        ({"seed": None}, ["body", "seed"]),
        ({"batch_size": 0}, ["body", "batch_size"]),
        ({"num_classes": 1}, ["body", "num_classes"]),
        ({"num_classes": 5000}, ["body", "num_classes"]),
        ({"logit_scale": -1}, ["body", "logit_scale"]),
        ({"label_type": "onehot"}, ["body", "label_type"]),
        ({"weight": [1.0, 2.0]}, ["body", "weight"]),
        ({"weight": [0.0, 0.0, 0.0]}, ["body", "reduction"]),
        ({"weight": [1e308, 1e308, 1e308], "reduction": "sum"}, ["body", "weight", 0]),
        (
            {"weight": [1e38, 1e38, 1e38], "dtype": "float32", "reduction": "sum"},
            ["body", "weight", 0],
        ),
        ({"colour": "red"}, ["body", "colour"]),
    ],
)
async def test_bad_problem_requests_name_the_field(
    asgi_client: httpx.AsyncClient, change: dict[str, Any], location: list[str]
) -> None:
    error = await refused(asgi_client, "/v1/problems", {**PROBLEM, **change})
    assert error["loc"] == location


# ----- grading by problem id -----


async def test_a_correct_answer_gets_full_marks(client: httpx.AsyncClient) -> None:
    problem = await new_problem(client)
    result = await grade(
        client,
        problem_id=problem["problem_id"],
        submission=await answer(client, problem),
        points={"probabilities": 1, "loss": 2, "gradient": 3},
    )
    assert result["score"] == result["max_score"] == 6.0
    assert result["gradable"] is True
    assert result["format_errors"] == []
    assert [part["name"] for part in result["parts"]] == ["probabilities", "loss", "gradient"]
    for part in result["parts"]:
        assert part["passed"] is True
        assert part["fraction_correct"] == 1.0
        assert part["message"].startswith(f"{part['name']}: correct")
        assert "expected" not in part


async def test_a_tolerance_beyond_float_range_admits_every_answer(
    asgi_client: httpx.AsyncClient,
) -> None:
    """atol + rtol·|expected| overflows: that is an infinite tolerance, not an error."""
    problem = await new_problem(asgi_client)
    result = await grade(
        asgi_client,
        problem_id=problem["problem_id"],
        submission={"loss": 1e308, "gradient": [[-1e308] * 3] * 4},
        tolerance={"atol": 1.5e308, "rtol": 1.1e308},
    )
    assert result["score"] == result["max_score"]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"weight": [0.5, 2.0, 1.0], "label_smoothing": 0.2},
        {"reduction": "none"},
        {"reduction": "sum", "label_type": "probabilities"},
        {"ignore_index": 1},
        {"dtype": "float32", "logit_scale": 10.0},
    ],
)
async def test_the_reference_is_what_cross_entropy_returns(
    asgi_client: httpx.AsyncClient, options: dict[str, Any]
) -> None:
    """The expected gradient is that of the reduced loss, bit for bit /v1/cross-entropy's."""
    problem = await new_problem(asgi_client, seed="reference", batch_size=5, **options)
    core = await answer(asgi_client, problem)
    result = await grade(
        asgi_client,
        problem_id=problem["problem_id"],
        submission=core,
        points={"probabilities": 1, "loss": 1, "gradient": 1},
        reveal_expected=True,
        feedback="full",
    )
    dtype = np.dtype(problem["dtype"])  # float32 values are sent in float32's shortest form
    for part in result["parts"]:
        expected, returned = np.asarray(part["expected"]), np.asarray(core[part["name"]])
        np.testing.assert_array_equal(expected.astype(dtype), returned.astype(dtype))
        assert part["passed"] is True
        assert part["max_abs_error"] <= np.finfo(dtype).eps * np.abs(expected).max()


async def test_partial_credit_arithmetic(client: httpx.AsyncClient) -> None:
    problem = await new_problem(client)
    correct = await answer(client, problem)
    gradient = np.array(correct["gradient"])
    gradient[[0, 2, 3], [1, 0, 2]] += 0.05  # 3 of 12 entries wrong
    submission = {"loss": correct["loss"], "gradient": gradient.tolist()}
    points = {"loss": 1, "gradient": 4}
    result = await grade(
        client,
        problem_id=problem["problem_id"],
        submission=submission,
        points=points,
        partial_credit=True,
    )
    part = result["parts"][1]
    assert part["fraction_correct"] == 0.75
    assert part["score"] == 3.0
    assert part["passed"] is False
    assert result["score"] == 4.0
    assert [m["index"] for m in part["mismatches"]] == [[0, 1], [2, 0], [3, 2]]
    assert part["mismatches"][0]["submitted"] == gradient[0, 1]
    assert "expected" not in part["mismatches"][0]
    all_or_nothing = await grade(
        client, problem_id=problem["problem_id"], submission=submission, points=points
    )
    assert all_or_nothing["score"] == 1.0


@pytest.mark.parametrize(
    ("submission", "message"),
    [
        (
            {"loss": 0.5, "gradient": [[0.1, 0.2]] * 4},
            "gradient: expected shape [4, 3], got [4, 2]",
        ),
        ({"loss": 0.5, "gradient": [[0.1, 0.2, 0.3]] * 3}, "expected shape [4, 3], got [3, 3]"),
        ({"loss": 0.5, "gradient": [[0.1, float("nan"), 0.3]] * 4}, "gradient[0][1] is NaN"),
        ({"loss": 0.5, "gradient": [[0.1, 0.2, float("-inf")]] * 4}, "gradient[0][2] is -Infinity"),
        ({"loss": 0.5, "gradient": [["0.1", 0.2, 0.3]] * 4}, 'gradient[0][0] is the string "0.1"'),
        ({"loss": 0.5, "gradient": [[0.1, 0.2, 0.3]] * 3 + [[0.1]]}, "gradient[3] has 1 entry"),
        ({"loss": 0.5}, "gradient: missing (expected an array of shape [4, 3])"),
        ({"loss": 0.5, "gradient": None}, "gradient is null"),
    ],
)
async def test_a_bad_part_is_a_grade_not_an_error(
    client: httpx.AsyncClient, submission: dict[str, Any], message: str
) -> None:
    problem = await new_problem(client)
    result = await grade(
        client, problem_id=problem["problem_id"], submission=submission, feedback="full"
    )
    loss, gradient = result["parts"]
    assert result["gradable"] is True  # the loss could be read
    assert loss["max_abs_error"] is not None
    assert gradient["score"] == 0.0
    assert gradient["passed"] is False
    assert gradient["max_abs_error"] is None
    assert message in gradient["message"]


@pytest.mark.parametrize(
    "submission",
    [
        {},
        {"loss": float("nan"), "gradient": "[[0.1]]"},
        {"Loss": 0.5},
        [0.5, [[0.1]]],
        "my answer is 0.5",
        None,
        42,
    ],
)
async def test_nothing_readable_is_not_gradable(
    client: httpx.AsyncClient, submission: object
) -> None:
    problem = await new_problem(client)
    for result_format in ("native", "prairielearn"):
        result = await grade(
            client, problem_id=problem["problem_id"], submission=submission, format=result_format
        )
        assert result["gradable"] is False
        assert result["score"] == 0.0
        assert result["format_errors"]
        assert result["message"].startswith("Not gradable: ")


async def test_the_nan_literal_from_a_student_file_is_named_not_echoed(
    asgi_client: httpx.AsyncClient,
) -> None:
    problem = await new_problem(asgi_client)
    body = (
        f'{{"problem_id": "{problem["problem_id"]}", '
        '"submission": {"loss": NaN, "gradient": [[Infinity, 0, 0], [0, 0, 0], [0, 0, 0], '
        "[0, 0, -Infinity]]}}"
    )
    response = await asgi_client.post(
        "/v1/grade", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    result = strict_json(response)
    assert result["parts"][0]["message"].startswith("loss is NaN")
    assert result["parts"][1]["message"].startswith("gradient[0][0] is Infinity")


async def test_forged_and_foreign_ids_are_refused(make_client: ClientFactory) -> None:
    async with (
        make_client(secret_key="A" * 32) as issuer,
        make_client(secret_key="B" * 32) as other,
    ):
        problem = await new_problem(issuer)
        problem_id = problem["problem_id"]
        prefix, payload, signature = problem_id.split(".")
        other_seed = (await new_problem(issuer, seed="hw3-bob"))["problem_id"].split(".")[1]
        forgeries = {
            "payload swapped": f"{prefix}.{other_seed}.{signature}",
            "signature cut": f"{prefix}.{payload}.{signature[:-2]}",
            "unsigned": f"{prefix}.{payload}.",
        }
        for name, forged in forgeries.items():
            error = await refused(issuer, "/v1/grade", {"problem_id": forged, "submission": {}})
            assert error["loc"] == ["body", "problem_id"], name
            assert "altered" in error["msg"], name
        foreign = await refused(other, "/v1/grade", {"problem_id": problem_id, "submission": {}})
        assert "GRADCHECK_SECRET_KEY" in foreign["msg"]
        garbage = await refused(issuer, "/v1/grade", {"problem_id": "42", "submission": {}})
        assert garbage["loc"] == ["body", "problem_id"]
        assert "not a problem id" in garbage["msg"]


async def test_ids_need_no_state_only_the_same_secret(make_client: ClientFactory) -> None:
    async with (
        make_client(secret_key="S" * 32) as first,
        make_client(secret_key="S" * 32) as second,
    ):
        problem = await new_problem(first)
        correct = await answer(first, problem)
        result = await grade(second, problem_id=problem["problem_id"], submission=correct)
    assert result["score"] == 2.0


# ----- grading a problem given in full -----


async def test_a_problem_in_full(client: httpx.AsyncClient) -> None:
    problem = {"logits": [2.0, 1.0, 0.1], "labels": 0}  # one sample, sent flat
    a = np.exp([2.0, 1.0, 0.1]) / np.exp([2.0, 1.0, 0.1]).sum()
    submission = {"loss": float(-np.log(a[0])), "gradient": (a - [1, 0, 0]).tolist()}
    result = await grade(client, problem=problem, submission=submission)
    assert result["score"] == 2.0


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (
            {"problem": {"logits": [[1.0, float("nan")]], "labels": [0]}},
            ["problem", "logits", 0, 1],
        ),
        ({"problem": {"logits": [[1.0, 2.0]], "labels": [5]}}, ["problem", "labels", 0]),
        ({"problem": {"logits": [[1.0, 2.0], [3.0]], "labels": [0, 1]}}, ["problem", "logits", 1]),
        ({"problem": {"logits": [[1.0, 2.0]], "labels": [0], "reduction": "avg"}}, None),
        (
            {"problem": {"logits": [[3e38, -3e38]], "labels": [1], "dtype": "float32"}},
            ["problem", "logits", 0, 0],
        ),
        ({}, ["problem_id"]),
        ({"problem_id": "x", "problem": {"logits": [[1.0, 2.0]], "labels": [0]}}, ["problem_id"]),
    ],
)
async def test_the_callers_mistakes_are_422_with_their_place(
    asgi_client: httpx.AsyncClient, body: dict[str, Any], location: list[str | int] | None
) -> None:
    response = await post(asgi_client, "/v1/grade", {**body, "submission": {"loss": 1.0}})
    assert response.status_code == 422, response.text
    errors = strict_json(response)["detail"]
    expected = ["body", *(location or ["problem", "reduction"])]
    assert errors[0]["loc"] == expected


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"points": {"loss": 0, "gradient": 0}}, "points"),
        ({"points": {"third_derivative": 1}}, "points"),
        ({"points": {"loss": -1}}, "points"),
        ({"tolerance": {"atol": -1}}, "tolerance"),
        ({"feedback": "verbose"}, "feedback"),
        ({"format": "moodle"}, "format"),
        ({"partial_credit": "yes"}, "partial_credit"),
        ({"visibility": "sometimes"}, "visibility"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_bad_grading_options_are_422(
    asgi_client: httpx.AsyncClient, options: dict[str, Any], field: str
) -> None:
    body = {"problem": {"logits": [[1.0, 2.0]], "labels": [0]}, "submission": {}, **options}
    response = await post(asgi_client, "/v1/grade", body)
    assert response.status_code == 422
    assert strict_json(response)["detail"][0]["loc"][:2] == ["body", field]


async def test_revealed_values_count_against_the_output_limit(make_client: ClientFactory) -> None:
    async with make_client(max_output_entries=15) as client:  # 4 × (1 + 3) per submission
        body = {
            "problem": {"logits": [[1.0, 2.0, 3.0]] * 4, "labels": [0, 1, 2, 0]},
            "submissions": [{}, {}],
            "reveal_expected": True,
        }
        assert (await post(client, "/v1/grade/batch", body)).status_code == 413
        assert (
            await post(client, "/v1/grade/batch", {**body, "submissions": [{}]})
        ).status_code == 413
        body["reveal_expected"] = False
        assert (await post(client, "/v1/grade/batch", body)).status_code == 200


# ----- formats -----


async def test_gradescope_and_prairielearn_over_http(client: httpx.AsyncClient) -> None:
    problem = await new_problem(client)
    correct = await answer(client, problem)
    submission = {"loss": correct["loss"], "gradient": [[0.0] * 3] * 4}
    common = {"problem_id": problem["problem_id"], "submission": submission}
    gs = await grade(client, **common, format="gradescope", visibility="after_published")
    check_gradescope(gs)
    assert [t["status"] for t in gs["tests"]] == ["passed", "failed"]
    assert {t["visibility"] for t in gs["tests"]} == {"after_published"}
    assert gs["score"] == 1.0
    pl = await grade(client, **common, format="prairielearn")
    check_prairielearn(pl)
    assert pl["gradable"] is True
    assert pl["score"] == 0.5


# ----- a whole class -----


async def test_a_class_of_five_hundred_in_one_call(client: httpx.AsyncClient) -> None:
    problem = await new_problem(client, seed="class", batch_size=6, num_classes=5)
    correct = await answer(client, problem)
    gradient = np.array(correct["gradient"])
    submissions: list[Any] = []
    expected_scores = []
    for student in range(500):
        wrong = student % 31  # 0..30 wrong entries of 30
        mine = gradient.copy()
        mine.flat[:wrong] += 1.0
        submission: Any = {"loss": correct["loss"], "gradient": mine.tolist()}
        score = 1.0 + 2.0 * (30 - min(wrong, 30)) / 30
        if student % 50 == 49:
            submission = {"loss": "forgot", "gradient": mine[:, :4].tolist()}
            score = 0.0
        submissions.append(submission)
        expected_scores.append(score)
    body = {
        "problem_id": problem["problem_id"],
        "submissions": submissions,
        "points": {"loss": 1, "gradient": 2},
        "partial_credit": True,
        "feedback": "verdict",
    }
    response = await post(client, "/v1/grade/batch", body)
    assert response.status_code == 200
    results = strict_json(response)["results"]
    assert len(results) == 500
    assert [r["score"] for r in results] == pytest.approx(expected_scores)
    assert [r["gradable"] for r in results].count(False) == 10
    single = await grade(
        client, **{k: v for k, v in body.items() if k != "submissions"}, submission=submissions[7]
    )
    assert single == results[7]


async def test_an_empty_class_is_the_callers_mistake(asgi_client: httpx.AsyncClient) -> None:
    body = {"problem": {"logits": [[1.0, 2.0]], "labels": [0]}, "submissions": []}
    error = await refused(asgi_client, "/v1/grade/batch", body)
    assert error["loc"] == ["body", "submissions"]
