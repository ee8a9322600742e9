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
README = (ROOT / "README.md").read_text()


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
    (block,) = [b for b in client_blocks("README.md") if "service.test(" not in b]
    assert "import httpx" not in block
    printed = run_block(block, live_url)
    assert printed.startswith("0.7213")
    assert " True " in printed


def test_the_readme_suite_example_prints_what_it_says(live_url: str) -> None:
    (block,) = [b for b in client_blocks("README.md") if "service.test(" in b]
    printed = run_block(block, live_url)
    said = re.search(r"service.test\(.*?```\n\nIt prints `(.*?)`", README, re.DOTALL)
    assert said is not None
    assert printed == said.group(1) + "\n"


def test_the_client_pages_examples_run(live_url: str) -> None:
    blocks = [b for b in client_blocks("docs/client.md") if "async with" not in b]
    assert len([b for b in blocks if "import torch" not in b]) >= 2
    printed = [run_block(block, live_url) for block in blocks if "import torch" not in block]
    assert "(2, 3, 3) True\n(2, 3)\n" in printed  # the Hessian example prints what it says


@pytest.mark.torch
def test_the_client_pages_torch_examples_run(live_url: str) -> None:
    require_module("torch")
    blocks = [b for b in client_blocks("docs/client.md") if "import torch" in b]
    assert blocks
    for block in blocks:
        run_block(block, live_url)


def test_the_cli_example_prints_the_documented_verdict(
    live_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/client.md's `gradcheck check` example, as written: the Python block writes the
    files, the command checks them, and the output is the page's (its exit code 1: a FAIL)."""
    from gradcheck_client.cli import main

    page = (ROOT / "docs" / "client.md").read_text()
    section = page[page.index("## The command line") :]
    setup = BLOCK.findall(section)[0]
    command = re.search(r"^gradcheck (check .*)$", section, re.MULTILINE)
    shown = re.search(r"<!-- output: gradcheck-check -->\n```text\n(.*?)```", section, re.DOTALL)
    assert command is not None and shown is not None
    monkeypatch.chdir(tmp_path)
    exec(compile(setup, "<docs/client.md>", "exec"), {})
    capsys.readouterr()
    code = main([*command.group(1).split(), "--url", live_url])
    printed = capsys.readouterr().out.replace(live_url, "http://127.0.0.1:8000")
    assert code == 1
    assert printed == shown.group(1)


def test_the_client_packages_readme_example_runs(live_url: str) -> None:
    (block,) = client_blocks("client/README.md")
    printed = run_block(block, live_url).split()
    assert float(printed[0]) > 0 and printed[-1] == "True"
