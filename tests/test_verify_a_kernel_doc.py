"""The examples of docs/verify-a-kernel.md ("Verify a kernel"), run as written against a live
server.

Each `<!-- example: NAME -->` block is a Python script; `<!-- example: NAME (after setup) -->`
runs after the `setup` block, as the page says. The scripts run in a fresh interpreter with the
client's source on the import path (as `pip install ./client` would provide) and the page's
URL replaced by the live server's; their standard output must equal the page's
`<!-- output: NAME -->` block, word for word, with every number equal to within 10 %
(the stand-in kernels round in float32 and bfloat16, and another machine's math library may
round an entry differently). The examples keep the page's size, 256 × 32,000: the whole
module takes about 30 s here.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.numerics.candidate import DEFAULT_TOLERANCE
from tests.helpers import require_module
from tests.live.conftest import ServerFactory, start_server  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "verify-a-kernel.md"
CLIENT_SRC = ROOT / "client" / "src"
DOC_URL = "http://127.0.0.1:8000"
BLOCK = re.compile(
    r"<!-- (example|output): ([\w-]+)( \(after setup\))? -->\s*```\w*\n(.*?)```", re.DOTALL
)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def blocks(kind: str) -> dict[str, tuple[str, bool]]:
    """{name: (text, runs after setup)} of the page's `<!-- kind: name -->` blocks."""
    return {
        name: (text, bool(after))
        for k, name, after, text in BLOCK.findall(DOC.read_text())
        if k == kind
    }


EXAMPLES = blocks("example")
OUTPUTS = {name: text for name, (text, _) in blocks("output").items()}


def script(name: str, url: str) -> str:
    """The example as the page means it to run, pointed at `url`."""
    text, after_setup = EXAMPLES[name]
    if after_setup:
        text = EXAMPLES["setup"][0] + "\n" + text
    assert DOC_URL in text or after_setup, f"{name} names no service URL"
    return text.replace(DOC_URL, url)


def assert_same_output(printed: str, expected: str, name: str) -> None:
    """Equal text outside the numbers; numbers equal to within 10 % (or 1e-12)."""
    assert NUMBER.sub("#", printed.strip()) == NUMBER.sub("#", expected.strip()), (
        f"{name} printed\n{printed}\nthe page shows\n{expected}"
    )
    for got, shown in zip(NUMBER.findall(printed), NUMBER.findall(expected), strict=True):
        assert float(got) == pytest.approx(float(shown), rel=0.1, abs=1e-12), (
            f"{name}: printed {got} where the page shows {shown}\n{printed}"
        )


def test_every_example_has_its_output() -> None:
    assert {"setup", "httpx", "client-numpy", "client-torch", "directions"} <= EXAMPLES.keys()
    assert OUTPUTS.keys() == EXAMPLES.keys() - {"setup"}


def test_the_page_keeps_the_size_it_announces() -> None:
    assert "N, C = 256, 32_000" in EXAMPLES["setup"][0]
    assert "N, C = 256, 32_000" in EXAMPLES["client-torch"][0]


def test_the_tolerance_table_is_default_tolerance() -> None:
    row = r"^\| (float64|float32|float16|bfloat16) \| (\S+) \| (\S+) \|$"
    rows = re.findall(row, DOC.read_text(), re.MULTILINE)
    assert {dtype: (float(atol), float(rtol)) for dtype, atol, rtol in rows} == DEFAULT_TOLERANCE


@pytest.mark.live
@pytest.mark.slow
@pytest.mark.torch
def test_the_examples_print_what_the_page_shows(start_server: ServerFactory) -> None:  # noqa: F811
    require_module("torch")  # the page's examples use ml_dtypes (a dependency) and torch
    server = start_server()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(CLIENT_SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    for name in sorted(OUTPUTS):
        run = subprocess.run(
            [sys.executable, "-c", script(name, server.url)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, f"{name} failed:\n{run.stderr[-3000:]}"
        assert_same_output(run.stdout, OUTPUTS[name], name)
