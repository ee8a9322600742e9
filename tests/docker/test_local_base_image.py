"""scripts/local-base-image.sh takes its Debian mirror from this machine's apt configuration
only: with none configured it says so and stops, with no built-in address to fall back on.
apt's own APT_CONFIG points the script at a temporary apt configuration, and a stand-in
`debootstrap` on PATH records the mirror it is given (nothing is downloaded or built)."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.docker.conftest import SCRIPTS
from tests.helpers import require

STUB_DEBOOTSTRAP = """#!/bin/sh
echo "debootstrap called with: $*"
exit 3
"""


def run_script(tmp_path: Path, sources: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The script with FORCE=1 (no Docker asked) under an apt configuration in tmp_path whose
    sources are `sources` (file name under sources.list.d, or sources.list → its text)."""
    require(shutil.which("apt-config") is not None, "apt-config is not installed (not Debian)")
    etc = tmp_path / "etc" / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "apt.conf.d").mkdir()
    for name, text in sources.items():
        path = etc / name if name == "sources.list" else etc / "sources.list.d" / name
        path.write_text(text)
    config = tmp_path / "apt.conf"
    config.write_text(f'Dir::Etc "{etc}";\n')
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "debootstrap").write_text(STUB_DEBOOTSTRAP)
    (stubs / "debootstrap").chmod(0o755)
    return subprocess.run(
        ["bash", str(SCRIPTS / "local-base-image.sh"), "gradcheck-test-base:none"],
        env={**os.environ, "APT_CONFIG": str(config), "FORCE": "1",
             "PATH": f"{stubs}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip


def test_no_mirror_configured_says_so_and_stops(tmp_path: Path) -> None:
    result = run_script(tmp_path, {"other.list": "deb http://ppa.example.org/ubuntu jammy main\n"})
    assert result.returncode == 1
    assert "no Debian mirror in this machine's apt configuration" in result.stderr
    assert "debootstrap called" not in result.stderr
    assert "deb.debian.org" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("sources", "mirror"),
    [
        (
            {"debian.sources": "Types: deb\nURIs: http://mirror.example.net/debian\n"
             "Suites: bookworm\nComponents: main\n"},
            "http://mirror.example.net/debian",
        ),
        (
            {"sources.list": "deb [arch=amd64] http://apt.example.edu/debian/ bookworm main\n"},
            "http://apt.example.edu/debian/",
        ),
    ],
)  # fmt: skip
def test_the_configured_mirror_is_the_one_used(
    tmp_path: Path, sources: dict[str, str], mirror: str
) -> None:
    result = run_script(tmp_path, sources)
    assert result.returncode == 1  # the stand-in debootstrap fails on purpose
    called = r"^debootstrap called with: --variant=minbase --include=\S+ bookworm \S+ "
    pattern = called + re.escape(mirror) + "$"
    assert re.search(pattern, result.stderr, re.MULTILINE), result.stderr
