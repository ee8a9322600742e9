"""The worked examples of docs/check-your-code.md ("Check your own implementation"): each
request on the page, posted to the app in-process, gets the diagnosis its section documents,
the buggy lines shown give the request's candidate, and the fix's values pass.

A request is a ```json block marked `<!-- cross-entropy: code -->` or `<!-- softmax: code -->`
(`<!-- pair: code+code -->` for two mistakes at once); the diagnosis it answers is the ```text
block marked `<!-- diagnosis: code -->` (`<!-- diagnoses: code+code -->`: one block of
`key: value` lines per diagnosis, separated by a blank line; long values wrapped onto lines
indented under the value). The ```python blocks marked `<!-- buggy: … -->` and
`<!-- fix: … -->` run after the one marked `<!-- preamble -->`, with `request` the request
body: the buggy lines set `candidate`, the fix (run after them) sets `fixed`.
"""

import json
import math
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.numerics.diagnose import PRIORITY

DOC = Path(__file__).resolve().parent.parent / "docs" / "check-your-code.md"
TEXT = DOC.read_text()
REQUEST = re.compile(r"<!-- (cross-entropy|softmax): (\w+) -->\s*```json\n(.*?)```", re.DOTALL)
PAIR = re.compile(r"<!-- pair: ([\w+]+) -->\s*```json\n(.*?)```", re.DOTALL)
DIAGNOSIS = re.compile(r"<!-- diagnosis: (\w+) -->\s*```text\n(.*?)```", re.DOTALL)
PAIR_DIAGNOSES = re.compile(r"<!-- diagnoses: ([\w+]+) -->\s*```text\n(.*?)```", re.DOTALL)
SECTION = re.compile(r"^### `(\w+)` \{#", re.MULTILINE)
PYTHON = re.compile(r"<!-- (buggy|fix): ([\w+]+) -->\s*```python\n(.*?)```", re.DOTALL)
(PREAMBLE,) = re.findall(r"<!-- preamble -->\s*```python\n(.*?)```", TEXT, re.DOTALL)

REQUESTS = {code: (route, body) for route, code, body in REQUEST.findall(TEXT)}
REQUESTS |= {codes: ("cross-entropy", body) for codes, body in PAIR.findall(TEXT)}
DIAGNOSES = dict(DIAGNOSIS.findall(TEXT))
PAIRS = dict(PAIR_DIAGNOSES.findall(TEXT))
SNIPPETS = {(kind, code): snippet for kind, code, snippet in PYTHON.findall(TEXT)}
EXAMPLES = [*PRIORITY, *PAIRS]


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
    assert [code for code in REQUESTS if "+" not in code] == list(PRIORITY)
    assert list(DIAGNOSES) == list(PRIORITY)
    assert SECTION.findall(TEXT) == list(PRIORITY)
    assert len(PAIRS) >= 2
    assert set(SNIPPETS) == {(kind, code) for kind in ("buggy", "fix") for code in EXAMPLES}


async def post(client: httpx.AsyncClient, route: str, text: str) -> dict[str, Any]:
    response = await client.post(
        f"/v1/{route}", content=text, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    check: dict[str, Any] = response.json()["candidate_check"]
    return check


@pytest.mark.parametrize("code", PRIORITY)
async def test_example_gets_its_documented_diagnosis(
    asgi_client: httpx.AsyncClient, code: str
) -> None:
    route, text = REQUESTS[code]
    json.loads(text)  # valid JSON for Python's reader (NaN and Infinity literals included)
    check = await post(asgi_client, route, text)
    assert check["passed"] is False
    assert check["diagnoses"], check
    first = check["diagnoses"][0]
    assert first["code"] == code
    doc = documented(DIAGNOSES[code])
    assert doc["code"] == code
    assert doc["output"] == first["output"]
    assert doc["message"] == first["message"]
    assert doc["evidence"] == first["evidence"]


@pytest.mark.parametrize("codes", list(PAIRS))
async def test_pair_example_gets_both_documented_diagnoses(
    asgi_client: httpx.AsyncClient, codes: str
) -> None:
    route, text = REQUESTS[codes]
    check = await post(asgi_client, route, text)
    blocks = [documented(block) for block in PAIRS[codes].strip().split("\n\n")]
    assert [d["code"] for d in check["diagnoses"]] == codes.split("+")
    for doc, found in zip(blocks, check["diagnoses"], strict=True):
        assert (doc["code"], doc["output"]) == (found["code"], found["output"])
        assert (doc["message"], doc["evidence"]) == (found["message"], found["evidence"])


def _run(code: str, request: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(candidate, fixed) of the example's buggy lines and fix."""
    namespace: dict[str, Any] = {"request": request}
    with np.errstate(all="ignore"):  # the buggy lines divide by 0 or overflow, on purpose
        exec(PREAMBLE, namespace)
        exec(SNIPPETS["buggy", code], namespace)
        candidate = np.asarray(namespace["candidate"], np.float64)
        exec(SNIPPETS["fix", code], namespace)
    return candidate, np.asarray(namespace["fixed"], np.float64)


@pytest.mark.parametrize("code", EXAMPLES)
async def test_the_buggy_lines_give_the_candidate_and_the_fix_passes(
    asgi_client: httpx.AsyncClient, code: str
) -> None:
    route, text = REQUESTS[code]
    request = json.loads(text)
    ((output, sent),) = request.pop("candidate").items()
    candidate, fixed = _run(code, request)
    sent = np.asarray(sent, np.float64)
    assert candidate.shape == sent.shape
    assert np.array_equal(np.isnan(candidate), np.isnan(sent))
    decimals = 1e-6 if sent.ndim else 1e-11 * abs(float(sent))
    assert np.allclose(candidate, sent, rtol=0, atol=decimals, equal_nan=True)
    assert math.isfinite(float(np.max(np.abs(fixed))))
    body = json.dumps({**request, "candidate": {output: fixed.tolist()}})
    check = await post(asgi_client, route, body)
    assert check["passed"] is True, check
