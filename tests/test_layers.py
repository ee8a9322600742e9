"""The layer contracts of `.importlinter` (run by `make lint`) hold, and they do fail on an import
that points up: a copy of the package with one deliberate bad import is refused."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / ".importlinter"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_keeps_its_layers() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "contract"),
    [
        ("app/numerics/softmax.py", "import app.api.encoding", "numerics imports no other"),
        ("app/core/logging.py", "import app.api.deps", "core never imports the api"),
        ("app/grading/grade.py", "import fastapi", "grading imports no web framework"),
        ("app/numerics/compare.py", "import app.grading.grade", "Layers"),
    ],
)
def test_an_import_that_points_up_breaks_a_contract(
    tmp_path: Path, module: str, bad_import: str, contract: str
) -> None:
    shutil.copytree(ROOT / "app", tmp_path / "app", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{bad_import}  # deliberately against the layers\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout
