"""Every test that starts a live server is marked `live` (so `-m "not live"` runs without one):
`tests/conftest.py` stops collection naming an unmarked test that uses a live-server fixture,
and `start_uvicorn` refuses to start a server for an unmarked test. Checked here on probe files
run by pytest's own `pytester`."""

import pytest

from tests.conftest import LIVE_FIXTURES
from tests.helpers import ROOT, require_module, start_uvicorn

PROBE_CONFTEST = """
import pytest
from tests.conftest import pytest_collection_modifyitems, pytest_runtest_protocol
from tests.helpers import start_uvicorn

@pytest.fixture
def live_url():
    return "http://127.0.0.1:1"

@pytest.fixture
def start_server():
    return start_uvicorn
"""


@pytest.fixture
def probe(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(PROBE_CONFTEST)
    pytester.makeini(
        "[pytest]\n"
        "asyncio_default_fixture_loop_scope = function\n"
        "markers =\n    live: starts a uvicorn server on 127.0.0.1\n"
    )
    return pytester


@pytest.mark.parametrize("fixture", sorted(LIVE_FIXTURES))
def test_an_unmarked_test_using_a_live_server_stops_collection(
    probe: pytest.Pytester, fixture: str
) -> None:
    probe.makepyfile(
        test_probe=f"""
        import pytest

        @pytest.mark.live
        def test_marked({fixture}):
            pass

        def test_unmarked({fixture}):
            pass

        def test_without_a_server():
            pass
        """
    )
    result = probe.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*must carry @pytest.mark.live*test_probe.py::test_unmarked"])
    assert "test_marked" not in result.stderr.str()


def test_marked_tests_and_module_marks_are_accepted(probe: pytest.Pytester) -> None:
    probe.makepyfile(
        test_probe="""
        import pytest

        pytestmark = pytest.mark.live

        def test_one(live_url):
            assert live_url

        @pytest.mark.parametrize("n", [1, 2])
        def test_two(live_url, n):
            assert n
        """
    )
    probe.runpytest("-q").assert_outcomes(passed=3)
    probe.runpytest("-q", "-m", "not live").assert_outcomes(deselected=3)


def test_start_uvicorn_refuses_an_unmarked_test(probe: pytest.Pytester) -> None:
    """Caught at run time too, for a server started without a fixture of LIVE_FIXTURES."""
    probe.makepyfile(
        test_probe="""
        from tests.helpers import start_uvicorn

        def test_unmarked():
            start_uvicorn(1)
        """
    )
    result = probe.runpytest("-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_probe.py::test_unmarked starts a live server: mark it*"])


def test_this_test_is_unmarked_so_start_uvicorn_refuses_it() -> None:
    with pytest.raises(RuntimeError, match=r"test_markers\.py::test_this_test_is_unmarked"):
        start_uvicorn(1)


def test_only_the_live_parameter_of_client_is_marked(probe: pytest.Pytester) -> None:
    """`client` runs each test in-process and against a live server: only the latter is live."""
    probe.makeconftest(PROBE_CONFTEST + "from tests.conftest import client\n")
    probe.makepyfile(test_probe="def test_both(client):\n    pass\n")
    live = probe.runpytest("--collect-only", "-q", "-m", "live")
    live.stdout.fnmatch_lines(["test_probe.py::test_both[[]live[]]", "1/2 tests collected*"])
    in_process = probe.runpytest("--collect-only", "-q", "-m", "not live")
    in_process.stdout.fnmatch_lines(["test_probe.py::test_both[[]asgi[]]", "1/2 tests collected*"])


# ------------------------------------------- optional packages: one skip-or-fail helper


def test_this_test_is_unmarked_so_require_module_refuses_torch() -> None:
    """A test importing torch must carry `torch`, or `.ci/run`'s `-m torch` pass misses it."""
    with pytest.raises(RuntimeError, match=r"imports torch: mark it `torch`"):
        require_module("torch")
    with pytest.raises(RuntimeError, match=r"imports expecttest: mark it `torch`"):
        require_module("expecttest")


@pytest.mark.parametrize("require_all", ["0", "1"])
def test_a_missing_package_skips_or_fails_under_require_all(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, require_all: str
) -> None:
    """Without the package: a skip naming how to install it; under GRADCHECK_REQUIRE_ALL=1 (as
    in CI) a failure, which `pytest.importorskip` would never give."""
    pytester.makeconftest(
        "from tests.conftest import pytest_runtest_protocol\n"
        "import tests.helpers\n"
        "tests.helpers.OPTIONAL_PACKAGES['no_such_package'] = ('torch', 'pip install it')\n"
    )
    pytester.makeini("[pytest]\nmarkers =\n    torch: needs PyTorch\n")
    pytester.makepyfile(
        test_probe="""
        import pytest
        from tests.helpers import require_module

        @pytest.mark.torch
        def test_needs_it():
            require_module("no_such_package")
        """
    )
    monkeypatch.setenv("GRADCHECK_REQUIRE_ALL", require_all)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    result = pytester.runpytest_subprocess("-q", "-rs")
    if require_all == "1":
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*GRADCHECK_REQUIRE_ALL=1 but: pip install it*"])
    else:
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*pip install it*"])


def test_no_test_calls_importorskip() -> None:
    """Every optional import goes through `require_module`."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if "importorskip(" in path.read_text() and path.name != "test_markers.py"
    ]
    assert offenders == []
