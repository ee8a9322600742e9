"""The client's examples in README.md and docs/client.md run as written against a live server
(their address swapped for the test server's)."""

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.helpers import require_module

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def client_blocks(page: str) -> list[str]:
    """The page's Python blocks that use the client at the documented address on their own."""
    blocks = BLOCK.findall((ROOT / page).read_text())
    return [
        b
        for b in blocks
        if "gradcheck_client" in b and "http://127.0.0.1:8000" in b and "my_gradient" not in b
    ]


def run_block(code: str, url: str) -> str:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(code.replace("http://127.0.0.1:8000", url), "<doc>", "exec"), {})
    return output.getvalue()


def test_the_readme_example_uses_the_client_and_prints_the_documented_loss(live_url: str) -> None:
    (block,) = client_blocks("README.md")
    assert "import httpx" not in block
    printed = run_block(block, live_url)
    assert printed.startswith("0.7213")
    assert " True " in printed


def test_the_client_pages_examples_run(live_url: str) -> None:
    blocks = [b for b in client_blocks("docs/client.md") if "async with" not in b]
    assert len([b for b in blocks if "import torch" not in b]) >= 2
    for block in blocks:
        if "import torch" not in block:
            run_block(block, live_url)


@pytest.mark.torch
def test_the_client_pages_torch_examples_run(live_url: str) -> None:
    require_module("torch")
    blocks = [b for b in client_blocks("docs/client.md") if "import torch" in b]
    assert blocks
    for block in blocks:
        run_block(block, live_url)
