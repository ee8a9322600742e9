"""The worked examples of docs/check-your-code.md ("Check your own implementation"): each
request on the page, posted to the app in-process, gets the diagnosis its section documents.

A request is a ```json block marked `<!-- cross-entropy: code -->` or `<!-- softmax: code -->`;
the diagnosis it answers is the ```text block marked `<!-- diagnosis: code -->` (`key: value`
lines, long values wrapped onto lines indented under the value).
"""

import json
import re
from pathlib import Path

import httpx
import pytest

from app.numerics.diagnose import PRIORITY

DOC = Path(__file__).resolve().parent.parent / "docs" / "check-your-code.md"
TEXT = DOC.read_text()
REQUEST = re.compile(r"<!-- (cross-entropy|softmax): (\w+) -->\s*```json\n(.*?)```", re.DOTALL)
DIAGNOSIS = re.compile(r"<!-- diagnosis: (\w+) -->\s*```text\n(.*?)```", re.DOTALL)
SECTION = re.compile(r"^### `(\w+)`", re.MULTILINE)

REQUESTS = {code: (route, body) for route, code, body in REQUEST.findall(TEXT)}
DIAGNOSES = dict(DIAGNOSIS.findall(TEXT))


def documented(block: str) -> dict[str, str]:
    """{"code": …, "message": …} of a diagnosis block; continuation lines joined by a space."""
    fields: dict[str, str] = {}
    key = ""
    for line in block.rstrip("\n").splitlines():
        if line.startswith(" "):
            fields[key] += " " + line.strip()
        else:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def test_every_code_has_one_example_in_priority_order() -> None:
    assert list(REQUESTS) == list(PRIORITY)
    assert list(DIAGNOSES) == list(PRIORITY)
    assert SECTION.findall(TEXT) == list(PRIORITY)


@pytest.mark.parametrize("code", PRIORITY)
async def test_example_gets_its_documented_diagnosis(
    asgi_client: httpx.AsyncClient, code: str
) -> None:
    route, text = REQUESTS[code]
    json.loads(text)  # valid JSON for Python's reader (NaN and Infinity literals included)
    response = await asgi_client.post(
        f"/v1/{route}", content=text, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    check = response.json()["candidate_check"]
    assert check["passed"] is False
    assert check["diagnoses"], check
    first = check["diagnoses"][0]
    assert first["code"] == code
    doc = documented(DIAGNOSES[code])
    assert doc["code"] == code
    assert doc["output"] == first["output"]
    assert doc["message"] == first["message"]
