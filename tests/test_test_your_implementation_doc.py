"""docs/test-your-implementation.md runs as written against a live server (its address swapped
for the test server's): the page's functions saved as the files it names, each example's output
equal to the page's, each `gradcheck test` command exiting 0, and its pytest files passing under
the plugin (loaded with `-p`: the client is not installed in the project's venv)."""

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.client.conftest import CLIENT_SRC
from tests.helpers import require_module

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "test-your-implementation.md").read_text()
DOC_URL = "http://127.0.0.1:8000"
FILE = re.compile(r"<!-- (\w+\.py) -->\s*```python\n(.*?)```", re.DOTALL)
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\s*```python\n(.*?)```", re.DOTALL)
OUTPUT = re.compile(r"<!-- output: (\w+) -->\s*```text\n(.*?)```", re.DOTALL)
COMMANDS = re.compile(r"<!-- command -->\s*```sh\n(.*?)```", re.DOTALL)
TORCH_EXAMPLES = {"torch"}


def page_files() -> dict[str, str]:
    """Each file the page names, its blocks joined."""
    files: dict[str, list[str]] = {}
    for name, code in FILE.findall(PAGE):
        files.setdefault(name, []).append(code)
    return {name: "\n\n".join(blocks) for name, blocks in files.items()}


EXAMPLES = dict(EXAMPLE.findall(PAGE))
OUTPUTS = dict(OUTPUT.findall(PAGE))
COMMAND_LINES = [line for block in COMMANDS.findall(PAGE) for line in block.splitlines() if line]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live_url: str) -> Iterator[Path]:
    """A folder holding the page's files (and a course's practice.json), as the cwd and first
    on the import path."""
    for name, code in page_files().items():
        (tmp_path / name).write_text(code)
    served = httpx.get(f"{live_url}/v1/suites/basics", timeout=30).json()
    practice = {"name": "practice", "version": "1", "cases": served["cases"][:3]}
    (tmp_path / "practice.json").write_text(json.dumps(practice))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for module in ("losses", "torch_losses", "heads"):
        sys.modules.pop(module, None)


def run_example(name: str, url: str) -> str:
    printed = io.StringIO()
    code = EXAMPLES[name].replace(DOC_URL, url)
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"<example {name}>", "exec"), {"__name__": "__main__"})
    return printed.getvalue().replace(url, DOC_URL)


def test_the_page_names_its_files_examples_and_outputs() -> None:
    assert set(page_files()) == {
        "losses.py",
        "torch_losses.py",
        "test_losses.py",
        "test_torch_losses.py",
        "heads.py",
    }
    assert set(EXAMPLES) == set(OUTPUTS) == {"numpy", "naive", "torch", "kernel", "lm_head"}
    assert len(COMMAND_LINES) == 6


@pytest.mark.parametrize("name", sorted(set(EXAMPLES) - TORCH_EXAMPLES))
def test_each_numpy_example_prints_what_the_page_shows(
    workdir: Path, live_url: str, name: str
) -> None:
    assert run_example(name, live_url) == OUTPUTS[name]


@pytest.mark.torch
def test_the_torch_example_prints_what_the_page_shows(workdir: Path, live_url: str) -> None:
    require_module("torch")
    assert run_example("torch", live_url) == OUTPUTS["torch"]


def _gradcheck(line: str, url: str) -> int:
    from gradcheck_client.cli import main

    argv = shlex.split(line.replace(DOC_URL, url))
    assert argv[:2] == ["gradcheck", "test"]
    with contextlib.redirect_stdout(io.StringIO()):
        return main(argv[1:])


def _pytest(line: str, url: str) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(line.replace(DOC_URL, url))
    assert argv[0] == "pytest"
    paths = [str(CLIENT_SRC), os.environ.get("PYTHONPATH", "")]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            *argv,
            "-p",
            "gradcheck_client.pytest_plugin",
            "-p",
            "no:cacheprovider",
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_numpy_commands_exit_0(workdir: Path, live_url: str) -> None:
    ran = 0
    for line in COMMAND_LINES:
        if line.startswith("gradcheck") and "torch" not in line:
            assert _gradcheck(line, live_url) == 0, line
            ran += 1
    assert ran == 4
    assert (workdir / "report.xml").is_file()
    (pytest_line,) = [line for line in COMMAND_LINES if line.startswith("pytest")]
    numpy_only = pytest_line.replace(" test_torch_losses.py", "")
    result = _pytest(numpy_only, live_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b21 passed\b", result.stdout), result.stdout  # 10 basics + 11 kernel


@pytest.mark.torch
def test_the_torch_commands_exit_0(workdir: Path, live_url: str) -> None:
    require_module("torch")
    (torch_line,) = [line for line in COMMAND_LINES if "--framework torch" in line]
    assert _gradcheck(torch_line, live_url) == 0
    (pytest_line,) = [line for line in COMMAND_LINES if line.startswith("pytest")]
    result = _pytest(pytest_line, live_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b32 passed, 6 skipped\b", result.stdout), (
        result.stdout
    )  # 21 + 11 of 17 torch cases
