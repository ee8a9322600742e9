"""Grading names a wrong part's mistake with the candidate check's diagnoses, in every format,
and the sentence holds no number derived from the reference."""

import re
from typing import Any

import httpx
import pytest

from app.api.examples import GRADED_PROBLEM, NOT_DIVIDED, RIGHT_ANSWER

NUMBER = re.compile(r"\d+\.\d+|\d+e-?\d+")


async def grade(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/grade", json={"problem": GRADED_PROBLEM, **fields})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_a_summed_answer_is_named_not_divided(asgi_client: httpx.AsyncClient) -> None:
    result = await grade(asgi_client, submission=NOT_DIVIDED)
    for part in result["parts"]:
        assert part["passed"] is False
        assert part["diagnosis"] == "not_divided"
        sentence = part["message"].split("Likely mistake: ", 1)[1]
        assert not NUMBER.search(sentence), sentence


async def test_a_right_answer_has_no_diagnosis(asgi_client: httpx.AsyncClient) -> None:
    result = await grade(asgi_client, submission=RIGHT_ANSWER)
    assert all("diagnosis" not in part for part in result["parts"])
    assert all("Likely mistake" not in part["message"] for part in result["parts"])


async def test_random_wrong_answers_get_no_diagnosis(asgi_client: httpx.AsyncClient) -> None:
    noise = {"loss": 3.7, "gradient": [[0.3, -0.9, 0.2], [-0.4, 0.8, 0.05]]}
    result = await grade(asgi_client, submission=noise)
    assert all(part["passed"] is False for part in result["parts"])
    assert all("diagnosis" not in part for part in result["parts"])


@pytest.mark.parametrize(
    ("fmt", "text_field"), [("gradescope", "output"), ("prairielearn", "message")]
)
async def test_platform_formats_carry_the_sentence(
    asgi_client: httpx.AsyncClient, fmt: str, text_field: str
) -> None:
    result = await grade(asgi_client, submission=NOT_DIVIDED, format=fmt)
    texts = [test[text_field] for test in result["tests"]]
    assert texts and all("Likely mistake: " in text for text in texts)


async def test_no_feedback_level_names_no_mistake(asgi_client: httpx.AsyncClient) -> None:
    result = await grade(asgi_client, submission=NOT_DIVIDED, feedback="none")
    assert all("diagnosis" not in part for part in result["parts"])
    assert all("Likely mistake" not in part["message"] for part in result["parts"])
