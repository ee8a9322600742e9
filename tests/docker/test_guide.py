"""The image serves the docs site it built at /guide/, and the links that end a diagnosis point
there, absolute, so that a student reading them in Gradescope or PrairieLearn can open them."""

import re

import httpx
import pytest

from tests.docker.conftest import RunningContainer
from tests.grading.example import GRADIENT, LABELS, LOGITS

pytestmark = pytest.mark.docker


def test_the_guide_is_served_with_its_pages_and_assets(http: httpx.Client) -> None:
    index = http.get("/guide/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    maths = http.get("/guide/maths/")
    assert maths.status_code == 200
    assert 'id="reductions"' in maths.text
    # the page's own stylesheets and scripts are served too (no CDN)
    assets = re.findall(r'(?:href|src)="(\.\./assets/[^"]+)"', maths.text)
    assert assets
    for asset in assets[:5]:
        assert http.get("/guide/maths/" + asset).status_code == 200, asset


def test_a_diagnosis_links_to_the_served_guide(
    http: httpx.Client, container: RunningContainer
) -> None:
    body = {
        "problem": {"logits": LOGITS.tolist(), "labels": LABELS.tolist()},
        "submission": {"gradient": (GRADIENT * len(LABELS)).tolist()},  # not divided by N
        "points": {"gradient": 1},
    }
    message = http.post("/v1/grade", json=body).json()["parts"][0]["message"]
    link = f"{container.url}/guide/maths/#reductions"
    assert f"See {link}." in message
    page = httpx.get(link.split("#")[0], timeout=30)
    assert page.status_code == 200
    assert 'id="reductions"' in page.text
