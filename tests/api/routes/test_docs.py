"""Offline /docs and /redoc, the explorer's files, and the OpenAPI examples and descriptions."""

import re
from typing import Any

import httpx
import pytest

from app.api.examples import (
    BATCH_GRADE_EXAMPLES,
    CROSS_ENTROPY_EXAMPLES,
    FLOAT32_FAILS,
    GRADE_EXAMPLES,
    PROBLEM_EXAMPLES,
    SOFTMAX_EXAMPLES,
)
from tests.conftest import ClientFactory

ENDPOINT_EXAMPLES = {"/v1/softmax": SOFTMAX_EXAMPLES, "/v1/cross-entropy": CROSS_ENTROPY_EXAMPLES}
CHECK_FIELD = {"/v1/softmax": "jacobian_check", "/v1/cross-entropy": "gradient_check"}
ASSET_ATTRIBUTE = re.compile(r'\b(?:src|href|spec-url|data-openapi-url)="([^"]*)"')
INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EXTERNAL_URL = re.compile(r"""["'(]\s*(?:https?:)?//""")


async def page_assets(client: httpx.AsyncClient, path: str) -> list[str]:
    """The URLs a page loads (scripts, styles, icons, the OpenAPI document)."""
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    return ASSET_ATTRIBUTE.findall(response.text)


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/"])
async def test_page_loads_only_assets_of_this_service(
    asgi_client: httpx.AsyncClient, path: str
) -> None:
    assets = await page_assets(asgi_client, path)
    assert assets
    for url in assets:
        assert not url.startswith(("http:", "https:", "//")), url
        absolute = url if url.startswith("/") else f"/{url}"
        response = await asgi_client.get(absolute)
        assert response.status_code == 200, url
        assert response.content


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/"])
async def test_page_has_no_inline_script_or_style(
    asgi_client: httpx.AsyncClient, path: str
) -> None:
    page = (await asgi_client.get(path)).text
    assert not INLINE_SCRIPT.search(page)
    assert "<style" not in page
    assert " style=" not in page


async def test_redoc_bundle_requests_its_logo_from_this_service(
    asgi_client: httpx.AsyncClient,
) -> None:
    bundle = (await asgi_client.get("/docs-assets/redoc.standalone.js")).text
    assert "cdn.redoc.ly" not in bundle
    assert '"static/favicon.svg"' in bundle
    assert (await asgi_client.get("/static/favicon.svg")).status_code == 200


async def test_favicon_is_served(asgi_client: httpx.AsyncClient) -> None:
    response = await asgi_client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.text.lstrip().startswith("<svg")


@pytest.mark.parametrize(
    "name", ["explorer.js", "plot.js", "linalg.js", "swagger-init.js", "explorer.css"]
)
async def test_explorer_files_load_nothing_from_elsewhere(
    asgi_client: httpx.AsyncClient, name: str
) -> None:
    response = await asgi_client.get(f"/static/{name}")
    assert response.status_code == 200
    assert not EXTERNAL_URL.search(response.text)


async def openapi(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec: dict[str, Any] = response.json()
    return spec


@pytest.mark.parametrize("path", sorted(ENDPOINT_EXAMPLES))
async def test_every_endpoint_documents_its_named_examples(
    asgi_client: httpx.AsyncClient, path: str
) -> None:
    operation = (await openapi(asgi_client))["paths"][path]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert len(examples) >= 5
    assert FLOAT32_FAILS in examples
    assert "extreme_logits" in examples
    for example in examples.values():
        assert example["summary"]
        assert example["description"]
        assert example["value"]["logits"]


def test_cross_entropy_examples_cover_every_kind_of_target() -> None:
    values = [example["value"] for example in CROSS_ENTROPY_EXAMPLES.values()]
    assert any(isinstance(v["labels"][0], int) for v in values)
    assert any(isinstance(v["labels"][0], list) for v in values)
    assert any(v.get("label_smoothing") and v.get("weight") for v in values)
    assert any(-100 in v["labels"] for v in values)
    assert any(abs(x) >= 1e4 for v in values for row in v["logits"] for x in row)


EXAMPLE_CASES = [(path, name) for path, examples in ENDPOINT_EXAMPLES.items() for name in examples]


@pytest.mark.parametrize(("path", "name"), EXAMPLE_CASES)
async def test_named_example_executes(asgi_client: httpx.AsyncClient, path: str, name: str) -> None:
    """Every example answers 200; its check fails exactly when it is the float32 one."""
    response = await asgi_client.post(path, json=ENDPOINT_EXAMPLES[path][name]["value"])
    assert response.status_code == 200, response.text
    check = response.json().get(CHECK_FIELD[path])
    if name == FLOAT32_FAILS:
        assert check is not None
        assert check["passed"] is False
        assert check["mismatches"] > 0
    elif check is not None:
        assert check["passed"] is True, check["message"]


GRADING_EXAMPLES = {
    "/v1/problems": PROBLEM_EXAMPLES,
    "/v1/grade": GRADE_EXAMPLES,
    "/v1/grade/batch": BATCH_GRADE_EXAMPLES,
}
GRADING_CASES = [(path, name) for path, examples in GRADING_EXAMPLES.items() for name in examples]


@pytest.mark.parametrize("path", sorted(GRADING_EXAMPLES))
async def test_every_grading_endpoint_documents_named_examples(
    asgi_client: httpx.AsyncClient, path: str
) -> None:
    operation = (await openapi(asgi_client))["paths"][path]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert set(examples) == set(GRADING_EXAMPLES[path])
    assert len(examples) >= 2
    for example in examples.values():
        assert example["summary"]
        assert example["description"]
        # a problem id is signed per deployment: the examples state problems in full
        assert "problem_id" not in str(example["value"])


@pytest.mark.parametrize(("path", "name"), GRADING_CASES)
async def test_named_grading_example_executes(
    make_client: ClientFactory, path: str, name: str
) -> None:
    """ "Try it out" answers 200 on any deployment (another secret key, API keys unset)."""
    async with make_client(secret_key="another-deployment-" + "k" * 32) as client:
        response = await client.post(path, json=GRADING_EXAMPLES[path][name]["value"])
    assert response.status_code == 200, response.text
    body = response.json()
    if path == "/v1/grade/batch":
        assert all(result["gradable"] for result in body["results"])
    elif path == "/v1/grade":
        assert body.get("gradable", True) is True


async def test_the_right_answer_examples_get_full_marks(asgi_client: httpx.AsyncClient) -> None:
    right = await asgi_client.post("/v1/grade", json=GRADE_EXAMPLES["right_answer"]["value"])
    assert right.json()["score"] == right.json()["max_score"]
    roster = await asgi_client.post("/v1/grade/batch", json=BATCH_GRADE_EXAMPLES["roster"]["value"])
    results = roster.json()["results"]
    assert [r["student"] for r in results] == ["ada@example.edu", "bob@example.edu"]
    assert [r["score"] for r in results] == [3.0, 3.0]


async def test_float32_example_passes_in_float64(asgi_client: httpx.AsyncClient) -> None:
    """The float32 failure is the precision's, not the formula's."""
    body = {**CROSS_ENTROPY_EXAMPLES[FLOAT32_FAILS]["value"], "dtype": "float64"}
    response = await asgi_client.post("/v1/cross-entropy", json=body)
    assert response.json()["gradient_check"]["passed"] is True


def refs_in(node: object) -> list[str]:
    """Every "$ref" target anywhere inside a JSON value."""
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in refs_in(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs_in(value)]
    return []


def reachable_fields(spec: dict[str, Any], refs: list[str]) -> dict[str, dict[str, Any]]:
    """{"Model.field": schema} for every property of every component reachable from `refs`."""
    fields: dict[str, dict[str, Any]] = {}
    pending, seen = list(refs), set()
    while pending:
        name = pending.pop().rsplit("/", 1)[-1]
        if name in seen:
            continue
        seen.add(name)
        for field, schema in spec["components"]["schemas"][name].get("properties", {}).items():
            fields[f"{name}.{field}"] = schema
            pending += refs_in(schema)
    return fields


async def test_every_field_of_the_v1_api_has_a_description(
    asgi_client: httpx.AsyncClient,
) -> None:
    spec = await openapi(asgi_client)
    operations = [spec["paths"][path]["post"] for path in ENDPOINT_EXAMPLES]
    fields = reachable_fields(spec, refs_in(operations))
    assert {"CheckModel.atol", "CrossEntropyRequest.labels", "ErrorItem.msg"} <= fields.keys()
    assert [name for name, schema in fields.items() if not schema.get("description")] == []


async def test_descriptions_state_the_formulas(asgi_client: httpx.AsyncClient) -> None:
    spec = await openapi(asgi_client)
    softmax = spec["paths"]["/v1/softmax"]["post"]["description"]
    cross_entropy = spec["paths"]["/v1/cross-entropy"]["post"]["description"]
    assert "a_i(δ_ij − a_j)" in softmax
    assert "a_nj·Σ_c q_nc − q_nj" in cross_entropy
    assert "atol + rtol·|n|" in cross_entropy
    assert "a − y only when" in spec["info"]["description"]
