"""The documentation site: `mkdocs build --strict` succeeds (no broken link, anchor or snippet
include), its pages load nothing from another host, and the README stays a short front page."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 250
MARKDOWN_PAGES = [
    "maths",
    "api",
    "autograding",
    "accuracy",
    "performance",
    "operations",
    "deployment",
    "development",
]
# a <script src=...> or <link href=...> whose address is absolute (http:, https: or //host)
REMOTE_ASSET = re.compile(
    r"""<(?:script\b[^>]*?\bsrc|link\b[^>]*?\bhref)\s*=\s*["']?\s*(?:https?:)?//""",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built with --strict into a temporary directory."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site_dir


def test_the_site_builds_with_every_page(site: Path) -> None:
    pages = {page.relative_to(site).as_posix() for page in site.rglob("index.html")}
    for name in MARKDOWN_PAGES:
        assert f"{name}/index.html" in pages
    assert "index.html" in pages


def test_no_page_loads_scripts_or_styles_from_another_host(site: Path) -> None:
    remote = {
        page.relative_to(site).as_posix(): REMOTE_ASSET.findall(page.read_text())
        for page in site.rglob("*.html")
    }
    assert {page: found for page, found in remote.items() if found} == {}


def test_the_examples_are_included_not_copied(site: Path) -> None:
    page = (site / "autograding" / "index.html").read_text()
    assert "--8&lt;--" not in page
    assert "AUTOGRADER_ROOT" in page  # from examples/gradescope/run_autograder
    assert "PL_GRADE_ROOT" in page  # from examples/prairielearn/grade.py
    source = (ROOT / "docs" / "autograding.md").read_text()
    assert "def not_graded" not in source  # the script's code lives in examples/ only


def test_readme_is_a_short_front_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
