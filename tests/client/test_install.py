"""`pip install ./client` into a fresh venv, with no project checkout on the path, then the
installed `gradcheck` console script: exit 0 for a right gradient, 1 with the not_divided
diagnosis for a summed one, 2 with no server.

The fresh venv borrows httpx and numpy from the project venv's site-packages through a `.pth`
line (a directory added that way has its own `.pth` files ignored, so the project's editable
install does not come along), and pip sees them installed: nothing but the build backend
(hatchling, through pip's configured index) is downloaded.
"""

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import free_port

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ folder of a venv with gradcheck-client installed from client/."""
    home = tmp_path_factory.mktemp("fresh")
    env_dir = home / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(ROOT / "client")],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return env_dir / "bin"


def run(bin_dir: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "GRADCHECK_URL"}}
    return subprocess.run(
        [str(bin_dir / argv[0]), *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_installed_package_has_no_project_on_its_path(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import sys, gradcheck_client, importlib.util; "
        "print(gradcheck_client.__file__); "
        "print(importlib.util.find_spec('app') is None); "
        "print(any(p.rstrip('/') == sys.argv[1] for p in sys.path))"
    )
    result = run(installed, "python", "-c", probe, str(ROOT), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    location, no_app, root_on_path = result.stdout.split()
    assert str(ROOT) not in location
    assert no_app == "True"
    assert root_on_path == "False"
    assert (Path(location).parent / "py.typed").is_file()


def test_the_version_is_written_once(installed: Path, tmp_path: Path) -> None:
    """client/pyproject.toml reads it from gradcheck_client/version.py: the installed
    distribution's version is the module's, and no other file of the client states it."""
    probe = (
        "import importlib.metadata, gradcheck_client; "
        "print(importlib.metadata.version('gradcheck-client'), gradcheck_client.__version__)"
    )
    result = run(installed, "python", "-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    distribution, module = result.stdout.split()
    assert distribution == module
    stated = [
        path.relative_to(ROOT / "client").as_posix()
        for path in (ROOT / "client").rglob("*")
        if path.is_file() and path.suffix in {".py", ".toml"} and f'"{module}"' in path.read_text()
    ]
    assert stated == ["src/gradcheck_client/version.py"]


def test_the_installed_command_gives_0_1_and_2(
    installed: Path, live_url: str, tmp_path: Path
) -> None:
    logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [0.3, 0.0, 1.2]])
    labels = np.array([0, 1, 2])
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    gradient = (probabilities - np.eye(3)[labels]) / len(labels)
    np.save(tmp_path / "z.npy", logits)
    np.save(tmp_path / "y.npy", labels)
    np.save(tmp_path / "g.npy", gradient)
    np.save(tmp_path / "g_sum.npy", gradient * len(labels))
    base = ("gradcheck", "check", "--logits", "z.npy", "--labels", "y.npy", "--gradient")

    right = run(installed, *base, "g.npy", "--url", live_url, cwd=tmp_path)
    assert right.returncode == 0, right.stdout + right.stderr
    assert "gradient: PASS" in right.stdout

    summed = run(installed, *base, "g_sum.npy", "--url", live_url, cwd=tmp_path)
    assert summed.returncode == 1, summed.stdout + summed.stderr
    assert "not_divided" in summed.stdout

    nobody = f"http://127.0.0.1:{free_port()}"
    unreachable = run(installed, *base, "g.npy", "--url", nobody, cwd=tmp_path)
    assert unreachable.returncode == 2, unreachable.stdout + unreachable.stderr
    assert nobody in unreachable.stderr


def test_python_dash_m_and_help(installed: Path, tmp_path: Path) -> None:
    result = run(installed, "python", "-m", "gradcheck_client", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "Exit codes" in result.stdout
    assert sys.version_info >= (3, 11)


PLUGIN_PROBE = """
import numpy as np
import pytest


def softmax_loss(logits, labels):
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    gradient = np.exp(log_probs)
    gradient[np.arange(n), labels] -= 1
    return -log_probs[np.arange(n), labels].mean(), gradient / n


@pytest.mark.gradcheck(suite="basics")
def test_softmax_loss(gradcheck_case):
    gradcheck_case.check(softmax_loss)
"""


def test_the_installed_pytest_plugin_loads_by_its_entry_point(
    installed: Path, live_url: str, tmp_path: Path
) -> None:
    (tmp_path / "test_probe.py").write_text(PLUGIN_PROBE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(installed / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"],
        cwd=tmp_path,
        env={**env, "GRADCHECK_URL": live_url},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 passed" in result.stdout
    plugins = subprocess.run(
        [str(installed / "python"), "-c", PLUGIN_ENTRY_POINTS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "gradcheck = gradcheck_client.pytest_plugin" in plugins.stdout


PLUGIN_ENTRY_POINTS = (
    "from importlib.metadata import entry_points; "
    "print([f'{e.name} = {e.value}' for e in entry_points(group='pytest11')])"
)
