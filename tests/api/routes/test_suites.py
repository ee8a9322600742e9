"""GET /v1/suites, /v1/suites/{name} and /v1/suites/{name}/cases/{case}: every case's request
is accepted by its endpoint (/v1/cross-entropy, /v1/linear-cross-entropy for lm_head) as it is
served (JSON inline, or .npz from its URL)."""

import io
import json
import zipfile

import httpx
import numpy as np

from app import __version__
from app.numerics.suites import BUILDERS, Case, LinearCase, suite


async def test_the_list_names_every_suite(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/suites")
    assert response.status_code == 200
    body = response.json()
    assert body["service_version"] == __version__
    assert [s["name"] for s in body["suites"]] == list(BUILDERS)
    for entry in body["suites"]:
        built = suite(entry["name"])
        assert built is not None
        assert entry["cases"] == len(built.cases)
        assert entry["version"] == built.version
        assert entry["url"] == f"/v1/suites/{entry['name']}"


async def test_every_case_is_a_ready_request(client: httpx.AsyncClient) -> None:
    for name in BUILDERS:
        response = await client.get(f"/v1/suites/{name}")
        assert response.status_code == 200
        body = response.json()
        assert (body["name"], body["service_version"]) == (name, __version__)
        for case in body["cases"]:
            assert case["request_url"] == f"/v1/suites/{name}/cases/{case['name']}"
            built = suite(name).case(case["name"])  # type: ignore[union-attr]
            assert built is not None
            assert case["endpoint"] == built.endpoint
            assert case["options"] == list(built.options)
            if case["request"] is None:
                assert built.large
                fetched = await client.get(
                    case["request_url"], headers={"Accept": "application/x-npz"}
                )
                content, media = fetched.content, "application/x-npz"
            else:
                request = case["request"]
                for field, value in built.request().items():
                    if isinstance(value, np.ndarray):
                        assert np.array_equal(np.array(request[field]), value), field
                assert request["tolerance"] == case["tolerance"]
                content, media = json.dumps(request).encode(), "application/json"
            answer = await client.post(
                case["endpoint"], content=content, headers={"Content-Type": media}
            )
            assert answer.status_code == 200, (case["name"], answer.text)
            assert "loss" in answer.json()
            if isinstance(built, LinearCase):
                assert "linear_weight_gradient" in answer.json()


async def test_a_case_is_served_alone_as_json_and_as_npz(client: httpx.AsyncClient) -> None:
    built = suite("kernel").case("vocab_32000")  # type: ignore[union-attr]
    assert isinstance(built, Case)
    url = "/v1/suites/kernel/cases/vocab_32000"
    as_json = (await client.get(url)).json()
    assert np.array_equal(np.array(as_json["logits"]), built.logits)
    npz = await client.get(url, headers={"Accept": "application/x-npz"})
    assert npz.headers["content-type"] == "application/x-npz"
    with zipfile.ZipFile(io.BytesIO(npz.content)) as archive:
        fields = json.loads(archive.read("request.json"))
        logits = np.load(io.BytesIO(archive.read("logits.npy")))
        labels = np.load(io.BytesIO(archive.read("labels.npy")))
    assert np.array_equal(logits, built.logits)
    assert np.array_equal(labels, built.labels)
    assert fields == {k: v for k, v in as_json.items() if k not in {"logits", "labels"}}


async def test_unknown_names_are_404s_naming_the_known_ones(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/suites/nope")
    assert missing.status_code == 404
    assert "basics, torch, kernel, lm_head" in missing.json()["detail"]
    no_case = await client.get("/v1/suites/basics/cases/nope")
    assert no_case.status_code == 404
    assert "spread_800" in no_case.json()["detail"]


async def test_the_32000_class_head_is_served_alone_as_npz(client: httpx.AsyncClient) -> None:
    built = suite("lm_head").case("vocab_32000")  # type: ignore[union-attr]
    assert isinstance(built, LinearCase) and built.large
    listed = (await client.get("/v1/suites/lm_head")).json()
    entry = next(case for case in listed["cases"] if case["name"] == "vocab_32000")
    assert entry["request"] is None
    assert (entry["endpoint"], entry["dtype"]) == ("/v1/linear-cross-entropy", "float32")
    npz = await client.get(entry["request_url"], headers={"Accept": "application/x-npz"})
    assert npz.headers["content-type"] == "application/x-npz"
    with zipfile.ZipFile(io.BytesIO(npz.content)) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    for name in ("input", "linear_weight", "linear_bias", "labels"):
        assert np.array_equal(np.load(io.BytesIO(members[f"{name}.npy"])), getattr(built, name))
    fields = json.loads(members["request.json"])
    assert fields["ignore_index"] == -100
    assert fields["tolerance"] == entry["tolerance"]
