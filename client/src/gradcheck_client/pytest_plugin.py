"""The pytest plugin of gradcheck-client (entry point `pytest11`: loaded wherever the client is
installed; `-p gradcheck_client.pytest_plugin` loads it otherwise).

A test that takes the `gradcheck_case` fixture runs once per case of the suite its marker names,
each case its own test item with the case's name in its id::

    @pytest.mark.gradcheck(suite="torch", supports={"probability_targets"})
    def test_my_loss(gradcheck_case):
        gradcheck_case.check(my_cross_entropy)

`check(fn)` fails with the diagnoses and the shrunk reproduction, and skips a case that is not
applicable. The marker takes `suite` (a name the service serves, default basics) or
`suite_file` (a course's JSON file, relative to the test file), and the defaults of `check`:
`framework`, `supports`, `options`. The service is at `--gradcheck-url` or `GRADCHECK_URL`; when
it cannot be reached the tests are skipped with the reason, or are errors with
`--gradcheck-required`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gradcheck_client.client import Client
from gradcheck_client.errors import GradcheckError
from gradcheck_client.runner import Framework, Runner, load_suite
from gradcheck_client.suites import Case, CaseResult, Suite, SuiteError

MARKER = "gradcheck"
FIXTURE = "gradcheck_case"
NO_URL = "no gradcheck service: give --gradcheck-url or set GRADCHECK_URL"


@dataclass(frozen=True)
class Unavailable:
    """The suite could not be loaded: why."""

    reason: str


@dataclass
class _Session:
    """The plugin's state for one pytest run: one client, each suite loaded once."""

    url: str | None
    required: bool
    client: Client | None = None
    suites: dict[str, Suite | Unavailable] = field(default_factory=dict)

    def service(self) -> Client:
        if self.client is None:
            assert self.url is not None
            self.client = Client(self.url)
        return self.client

    def suite(self, source: str | Path) -> Suite | Unavailable:
        key = str(source)
        if key not in self.suites:
            if self.url is None:
                self.suites[key] = Unavailable(NO_URL)
            else:
                try:
                    self.suites[key] = load_suite(self.service(), source)
                except (GradcheckError, SuiteError) as error:
                    self.suites[key] = Unavailable(f"gradcheck suite {key} unavailable: {error}")
        return self.suites[key]


_STATE = pytest.StashKey[_Session]()


class GradcheckCase:
    """One case of a suite, handed to a test: `check(fn)` runs fn on it."""

    def __init__(self, client: Client, suite: Suite, case: Case, defaults: Mapping[str, Any]):
        self.client = client
        self.suite = suite
        self.case = case
        self.defaults = dict(defaults)

    @property
    def name(self) -> str:
        """The case's name."""
        return self.case.name

    def check(
        self,
        fn: Callable[..., Any],
        *,
        framework: Framework | None = None,
        supports: Collection[str] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> CaseResult:
        """Run `fn` on this case (as `Client.test` does); fail with the diagnoses and the
        shrunk reproduction, skip when the case is not applicable."""
        runner = Runner(
            self.client,
            fn,
            framework or self.defaults.get("framework", "numpy"),
            self.defaults.get("supports", ()) if supports is None else supports,
            self.defaults.get("options") if options is None else options,
        )
        result = runner.case(self.case)
        if not result.applicable:
            pytest.skip(f"{self.case.name}: not applicable: {result.message}")
        if not result.passed:
            pytest.fail(failure_text(self.suite, result), pytrace=False)
        return result

    def __repr__(self) -> str:
        return f"GradcheckCase({self.suite.name}:{self.case.name})"


def failure_text(suite: Suite, result: CaseResult) -> str:
    """What a failing case's test says: the case, why it is hard, the diagnoses, the Python."""
    lines = [
        f"gradcheck {suite.name} v{suite.version}, case {result.name}: {result.reason}",
        result.message,
    ]
    for output, codes in result.diagnoses.items():
        lines.append(f"  {output}: {', '.join(codes) if codes else 'no known mistake matches'}")
    if result.reproduction:
        lines += ["reproduce with:", result.reproduction]
    return "\n".join(lines)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gradcheck", "gradcheck suites of hard cases")
    group.addoption(
        "--gradcheck-url",
        default=None,
        help="the gradcheck service's address (default: $GRADCHECK_URL)",
    )
    group.addoption(
        "--gradcheck-required",
        action="store_true",
        help="an unreachable service makes gradcheck tests errors instead of skips",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(suite='basics', suite_file=None, framework='numpy', supports=(), "
        f"options=None): run a test taking `{FIXTURE}` once per case of a gradcheck suite",
    )
    url = config.getoption("gradcheck_url") or os.environ.get("GRADCHECK_URL") or None
    config.stash[_STATE] = _Session(url, bool(config.getoption("gradcheck_required")))


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None and state.client is not None:
        state.client.close()


def _source(metafunc: pytest.Metafunc, marker: pytest.Mark | None) -> str | Path:
    kwargs = marker.kwargs if marker else {}
    if kwargs.get("suite_file"):
        path = Path(kwargs["suite_file"])
        return path if path.is_absolute() else Path(metafunc.definition.path).parent / path
    if marker and marker.args:
        return str(marker.args[0])
    return str(kwargs.get("suite", "basics"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if FIXTURE not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker(MARKER)
    source = _source(metafunc, marker)
    loaded = metafunc.config.stash[_STATE].suite(source)
    if isinstance(loaded, Unavailable):
        name = source.stem if isinstance(source, Path) else source
        params = [pytest.param(loaded, id=f"{name}-unavailable")]
    else:
        params = [pytest.param((loaded, case), id=case.name) for case in loaded.cases]
    metafunc.parametrize(FIXTURE, params, indirect=True)


@pytest.fixture
def gradcheck_case(request: pytest.FixtureRequest) -> GradcheckCase:
    """One case of the suite named by the test's `gradcheck` marker."""
    state = request.config.stash[_STATE]
    param = getattr(request, "param", None)
    if param is None:
        raise pytest.UsageError(f"{FIXTURE} is given by the gradcheck plugin's parametrisation")
    if isinstance(param, Unavailable):
        if state.required:
            pytest.fail(f"{param.reason} (--gradcheck-required)", pytrace=False)
        pytest.skip(param.reason)
    suite, case = param
    marker = request.node.get_closest_marker(MARKER)
    return GradcheckCase(state.service(), suite, case, dict(marker.kwargs) if marker else {})
