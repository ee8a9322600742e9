"""Suites of hard cases as the service serves them (`GET /v1/suites/{name}`) or as a course writes
them in a JSON file of the same schema, and the report of a function run on one (`SuiteReport`).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from gradcheck_client import wire
from gradcheck_client.errors import TransportError, status_error

if TYPE_CHECKING:
    from gradcheck_client.client import AsyncClient, Client

FEATURES = frozenset({"k_dim", "no_batch", "probability_targets"})
"""Input features a case may need beyond (N, C) logits with index labels."""
FLOAT_FIELDS = ("logits", "input", "linear_weight", "linear_bias", "weight")
"""The request fields that are float arrays (numpy once read), besides the labels."""


class SuiteError(ValueError):
    """A suite document (a file, or the service's answer) that does not follow the schema."""


@dataclass(frozen=True)
class Case:
    """One case: a ready request for `endpoint` and what a tested function needs for it."""

    name: str
    endpoint: str
    reason: str
    dtype: str
    tolerance: dict[str, float]
    options: tuple[str, ...]
    features: frozenset[str]
    request: dict[str, Any] | None
    """The request with its arrays as numpy arrays; None until fetched (large cases)."""
    request_url: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "case") -> Case:
        """A case of the suite schema (`request` inline, or a `request_url` to fetch)."""
        try:
            name = str(data["name"])
            request = data.get("request")
            if request is None and not data.get("request_url"):
                raise SuiteError(f"{where} {name!r}: neither a request nor a request_url")
            return cls(
                name=name,
                endpoint=str(data.get("endpoint", "/v1/cross-entropy")),
                reason=str(data.get("reason", "")),
                dtype=str(data.get("dtype", "float64")),
                tolerance={k: float(v) for k, v in (data.get("tolerance") or {}).items()},
                options=tuple(str(o) for o in data.get("options") or ()),
                features=frozenset(str(f) for f in data.get("features") or ()),
                request=None if request is None else arrays_of(request),
                request_url=data.get("request_url"),
            )
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, SuiteError):
                raise
            raise SuiteError(f"{where}: not a case of the suite schema ({error!r})") from error


@dataclass(frozen=True)
class Suite:
    """A named, versioned list of cases."""

    name: str
    version: str
    cases: tuple[Case, ...]
    description: str = ""
    service_version: str | None = None

    @classmethod
    def from_json(cls, data: Any, where: str = "suite") -> Suite:
        """A suite of the schema `GET /v1/suites/{name}` returns (a course's file too)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("cases"), list):
            raise SuiteError(f"{where}: expected an object with a `cases` list")
        cases = tuple(
            Case.from_json(case, f"{where}, case {index}")
            for index, case in enumerate(data["cases"])
        )
        names = [case.name for case in cases]
        if len(set(names)) != len(names):
            raise SuiteError(f"{where}: case names repeat")
        return cls(
            name=str(data.get("name", where)),
            version=str(data.get("version", "")),
            cases=cases,
            description=str(data.get("description", "")),
            service_version=data.get("service_version"),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> Suite:
        """A course's suite: a JSON file of the schema the service returns (requests inline)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise SuiteError(f"cannot read the suite file {path}: {error}") from error
        suite = cls.from_json(data, str(path))
        for case in suite.cases:
            if case.request is None:
                raise SuiteError(f"{path}: case {case.name!r} has no inline request")
        return suite


def arrays_of(request: Mapping[str, Any]) -> dict[str, Any]:
    """A request with its array fields as numpy arrays (float64 logits, or input, head weight
    and bias, and class weights; int64 index labels or float64 probability labels), the other
    fields as they are."""
    fields = dict(request)
    for name in FLOAT_FIELDS:
        if fields.get(name) is not None:
            fields[name] = np.asarray(fields[name], np.float64)
    labels = np.asarray(fields["labels"])
    fields["labels"] = labels.astype(np.int64 if labels.dtype.kind in "iub" else np.float64)
    return fields


def _read_case_npz(content: bytes) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for name in archive.namelist():
            data = archive.read(name)
            if name == wire.REQUEST_MEMBER:
                fields.update(json.loads(data))
            elif name.endswith(".npy"):
                fields[name.removesuffix(".npy")] = np.load(io.BytesIO(data), allow_pickle=False)
    return arrays_of(fields)


def _checked(url: str, response: httpx.Response) -> bytes:
    if response.status_code >= 400:
        raise status_error(response.status_code, wire.error_detail(response), url)
    return response.content


def _get(client: Client, path: str, accept: str) -> bytes:
    """GET `path` of the client's service (a connection error names the URL)."""
    url = client.base_url + path
    try:
        response = client._http.get(path, headers={**client._headers, "Accept": accept})
    except httpx.TransportError as error:
        raise TransportError(f"GET {url}: {error or type(error).__name__}", url) from error
    return _checked(url, response)


async def _aget(client: AsyncClient, path: str, accept: str) -> bytes:
    """`_get`, awaited."""
    url = client.base_url + path
    try:
        response = await client._http.get(path, headers={**client._headers, "Accept": accept})
    except httpx.TransportError as error:
        raise TransportError(f"GET {url}: {error or type(error).__name__}", url) from error
    return _checked(url, response)


@dataclass(frozen=True)
class SuiteSummary:
    """One suite of `GET /v1/suites`, without its cases."""

    name: str
    version: str
    description: str
    cases: int
    """How many cases it has."""
    url: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SuiteSummary:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            description=str(data.get("description", "")),
            cases=int(data["cases"]),
            url=str(data["url"]),
        )


def suite_list(content: bytes) -> list[SuiteSummary]:
    """The suites of a `GET /v1/suites` body."""
    return [SuiteSummary.from_json(entry) for entry in json.loads(content)["suites"]]


def suite_path(name: str) -> str:
    return f"/v1/suites/{name}"


def case_path(name: str, case: str) -> str:
    return f"/v1/suites/{name}/cases/{case}"


def _with_request(case: Case, content: bytes) -> Case:
    return Case(**{**case.__dict__, "request": _read_case_npz(content)})


def fetch_suite(client: Client, name: str) -> Suite:
    """`GET /v1/suites/{name}`, with the request of every large case fetched (as .npz)."""
    suite = Suite.from_json(json.loads(_get(client, suite_path(name), wire.JSON_MEDIA_TYPE)))
    cases = tuple(
        _with_request(case, _get(client, case.request_url, wire.NPZ_MEDIA_TYPE))
        if case.request is None and case.request_url
        else case
        for case in suite.cases
    )
    return Suite(suite.name, suite.version, cases, suite.description, suite.service_version)


async def afetch_suite(client: AsyncClient, name: str) -> Suite:
    """`fetch_suite`, awaited."""
    content = await _aget(client, suite_path(name), wire.JSON_MEDIA_TYPE)
    suite = Suite.from_json(json.loads(content))
    cases = []
    for case in suite.cases:
        if case.request is None and case.request_url:
            case = _with_request(case, await _aget(client, case.request_url, wire.NPZ_MEDIA_TYPE))
        cases.append(case)
    return Suite(suite.name, suite.version, tuple(cases), suite.description, suite.service_version)


def fetch_case(client: Client, name: str, case: str) -> dict[str, Any]:
    """`GET /v1/suites/{name}/cases/{case}` as .npz: the case's request, arrays as numpy."""
    return _read_case_npz(_get(client, case_path(name, case), wire.NPZ_MEDIA_TYPE))


async def afetch_case(client: AsyncClient, name: str, case: str) -> dict[str, Any]:
    """`fetch_case`, awaited."""
    return _read_case_npz(await _aget(client, case_path(name, case), wire.NPZ_MEDIA_TYPE))


@dataclass(frozen=True)
class SuiteInfo:
    """Which suite a report is of."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name} v{self.version}" if self.version else self.name


@dataclass(frozen=True)
class CaseResult:
    """One case's outcome.

    `passed` is True or False for a case that ran, None for one that is not applicable
    (`applicable` False, `message` says why). `diagnoses` maps each failing output to the
    mistakes the service named for it. A failing case carries `smallest`, the shrunk request (a
    body for the case's endpoint as a dict of lists), and `reproduction`, Python to paste."""

    name: str
    passed: bool | None
    applicable: bool
    message: str = ""
    reason: str = ""
    diagnoses: dict[str, tuple[str, ...]] = field(default_factory=dict)
    smallest: dict[str, Any] | None = None
    reproduction: str | None = None
    shrink_calls: int = 0
    """Service calls spent shrinking (at most 100)."""


@dataclass(frozen=True)
class SuiteReport:
    """A function run on every case of a suite: `passed` when every applicable case passes."""

    suite: SuiteInfo
    cases: tuple[CaseResult, ...]
    framework: str = "numpy"

    @property
    def passed(self) -> bool:
        """Every applicable case passes."""
        return all(case.passed for case in self.cases if case.applicable)

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        """The applicable cases that failed, in the suite's order."""
        return tuple(case for case in self.cases if case.applicable and not case.passed)

    def summary(self) -> str:
        """One line: the suite and the counts."""
        ran = [case for case in self.cases if case.applicable]
        passed = sum(1 for case in ran if case.passed)
        skipped = len(self.cases) - len(ran)
        return (
            f"suite {self.suite}: {passed} passed, {len(ran) - passed} failed, "
            f"{skipped} not applicable"
        )

    def table(self) -> str:
        """A table of the cases: name, result and what went wrong (or why not applicable)."""
        width = max([len("case"), *(len(case.name) for case in self.cases)])
        lines = [self.summary(), f"{'case':<{width}}  result  detail"]
        for case in self.cases:
            result = "n/a" if not case.applicable else ("pass" if case.passed else "FAIL")
            lines.append(f"{case.name:<{width}}  {result:<6}  {case.message}".rstrip())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
