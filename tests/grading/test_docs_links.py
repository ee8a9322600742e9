"""The link that ends a diagnosis is one a student can open: GRADCHECK_DOCS_URL's site when it
is set; else this service's /guide/ when it serves the built docs (GRADCHECK_GUIDE_DIR), as an
absolute URL from the request's own base URL; else (nothing built, nothing configured: `make
run` from a clone) the page in the repository. Forwarded headers change the link only as uvicorn
trusts them: from the proxies of FORWARDED_ALLOW_IPS, never from any client."""

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ClientFactory
from tests.grading.example import GRADIENT, LABELS, LOGITS
from tests.helpers import free_port, start_uvicorn

NOT_DIVIDED = {
    "problem": {"logits": LOGITS.tolist(), "labels": LABELS.tolist()},
    "submission": {"gradient": (GRADIENT * len(LABELS)).tolist()},  # the sum, not the mean
    "points": {"gradient": 1},
}
CANDIDATE = {
    "logits": LOGITS.tolist(),
    "labels": LABELS.tolist(),
    "include": ["loss"],
    "candidate": {"gradient": (GRADIENT * len(LABELS)).tolist()},
}
LINK = re.compile(r"See (\S+)\.$")


@pytest.fixture
def guide(tmp_path: Path) -> Path:
    """A built site's directory (its index page is what makes it one)."""
    (tmp_path / "index.html").write_text("<!doctype html><title>gradcheck</title>")
    (tmp_path / "maths").mkdir()
    (tmp_path / "maths" / "index.html").write_text('<h2 id="reductions">Reductions</h2>')
    return tmp_path


def link_of(message: str) -> str:
    match = LINK.search(message)
    assert match, message
    return match.group(1)


async def graded_link(client: httpx.AsyncClient, **request: Any) -> str:
    response = await client.post("/v1/grade", json=NOT_DIVIDED, **request)
    assert response.status_code == 200, response.text
    return link_of(response.json()["parts"][0]["message"])


async def test_a_served_guide_is_linked_from_the_requests_base_url(
    make_client: ClientFactory, guide: Path
) -> None:
    async with make_client(guide_dir=str(guide)) as client:
        assert await graded_link(client) == "http://testserver/guide/maths/#reductions"
        page = await client.get("/guide/maths/")
        assert page.status_code == 200
        assert 'id="reductions"' in page.text
        # the Host the client asked for, with its port
        headers = {"Host": "gradcheck.example.edu:8443"}
        link = await graded_link(client, headers=headers)
        assert link == "http://gradcheck.example.edu:8443/guide/maths/#reductions"
        # forwarded headers are not the app's to trust: only uvicorn's, from known proxies
        forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
        assert await graded_link(client, headers=forged) == (
            "http://testserver/guide/maths/#reductions"
        )
        # the candidate check of /v1/cross-entropy links the same way
        checked = (await client.post("/v1/cross-entropy", json=CANDIDATE)).json()
        (diagnosis,) = checked["candidate_check"]["diagnoses"]
        assert link_of(diagnosis["message"]) == "http://testserver/guide/maths/#reductions"


async def test_the_configured_docs_url_wins(make_client: ClientFactory, guide: Path) -> None:
    async with make_client(guide_dir=str(guide), docs_url="https://docs.example.org/") as client:
        assert await graded_link(client) == "https://docs.example.org/maths/#reductions"


async def test_nothing_served_nothing_configured_names_the_repository_page(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    async with make_client(guide_dir=str(tmp_path / "not-built")) as client:
        assert await graded_link(client) == "docs/maths.md#reductions"
        assert (await client.get("/guide/")).status_code == 404


@pytest.mark.live
@pytest.mark.parametrize(("trusted", "scheme"), [("127.0.0.1", "https"), ("192.0.2.1", "http")])
def test_behind_a_proxy_the_scheme_is_taken_only_from_a_trusted_one(
    guide: Path, trusted: str, scheme: str
) -> None:
    """uvicorn (as `make run` and the image start it) takes X-Forwarded-Proto from the
    addresses of FORWARDED_ALLOW_IPS only; the test's requests come from 127.0.0.1."""
    port = free_port()
    server = start_uvicorn(
        port, {"GRADCHECK_GUIDE_DIR": str(guide), "FORWARDED_ALLOW_IPS": trusted}
    )
    try:
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
        url = f"http://127.0.0.1:{port}/v1/grade"
        response = httpx.post(url, json=NOT_DIVIDED, headers=headers, timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=10)
    link = link_of(response.json()["parts"][0]["message"])
    assert link == f"{scheme}://127.0.0.1:{port}/guide/maths/#reductions"
