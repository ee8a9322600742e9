"""The worked example of docs/linear-cross-entropy.md ("Verify a fused linear cross-entropy
kernel"), run as written against a live server: a chunked pure-torch linear cross-entropy,
checked right, then with each classic bug injected. Its standard output must equal the page's
`<!-- output: chunked -->` block word for word, every number within 10 %."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import require_module
from tests.live.conftest import ServerFactory, start_server  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "linear-cross-entropy.md"
CLIENT_SRC = ROOT / "client" / "src"
DOC_URL = "http://127.0.0.1:8000"
BLOCK = re.compile(r"<!-- (example|output): ([\w-]+) -->\s*```\w*\n(.*?)```", re.DOTALL)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def blocks(kind: str) -> dict[str, str]:
    return {name: text for k, name, text in BLOCK.findall(DOC.read_text()) if k == kind}


def test_the_page_names_every_bug_it_injects() -> None:
    (example,) = blocks("example").values()
    output = blocks("output")["chunked"]
    for code in (
        "weight_gradient_not_accumulated",
        "normalized_per_chunk",
        "bias_gradient_missing",
    ):
        assert code in output, code
    assert "right: passed True" in output and "bfloat16" in output
    assert DOC_URL in example


@pytest.mark.live
@pytest.mark.torch
def test_the_example_prints_what_the_page_shows(start_server: ServerFactory) -> None:  # noqa: F811
    require_module("torch")
    server = start_server()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(CLIENT_SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    script = blocks("example")["chunked"].replace(DOC_URL, server.url)
    run = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected = blocks("output")["chunked"]
    printed = run.stdout
    assert NUMBER.sub("#", printed.strip()) == NUMBER.sub("#", expected.strip()), printed
    for got, shown in zip(NUMBER.findall(printed), NUMBER.findall(expected), strict=True):
        assert float(got) == pytest.approx(float(shown), rel=0.1, abs=1e-12), printed
