"""The client cannot lag the server: every request field of every /v1 route is a parameter of
its `Client` method (with the same choices where the schema lists them), every response field an
attribute of the result class, and `AsyncClient` has exactly `Client`'s signatures. The schema is
the app's own OpenAPI document, generated in-process from `app.main.create_app`; a route or a
response model added to the service fails here until the client has it."""

import dataclasses
import inspect
import typing
from collections.abc import Iterator
from functools import cache
from typing import Any, Literal

import pytest
from gradcheck_client import AsyncClient, Client, client, linear, results, suites

from app.main import create_app

ROUTES = {
    "/v1/softmax": "softmax",
    "/v1/cross-entropy": "cross_entropy",
    "/v1/linear-cross-entropy": "linear_cross_entropy",
    "/v1/problems": "problems",
    "/v1/grade": "grade",
    "/v1/grade/batch": "grade_batch",
}
"""Every /v1 POST route and its method."""

GET_ROUTES = {
    "/v1/suites": "suites",
    "/v1/suites/{name}": "suite",
    "/v1/suites/{name}/cases/{case}": "suite_case",
}
"""Every /v1 GET route and its method (its path parameters are the method's)."""

GET_RESULTS: dict[str, type[Any]] = {
    "SuiteSummary": suites.SuiteSummary,
    "SuiteResponse": suites.Suite,
    "CaseModel": suites.Case,
}
"""Each response model of the GET routes and the client class that holds it."""

RESULTS: dict[str, type[Any]] = {
    "SoftmaxResponse": results.SoftmaxResult,
    "CrossEntropyResponse": results.CrossEntropyResult,
    "LinearCrossEntropyResponse": linear.LinearCrossEntropyResult,
    "CheckModel": results.Check,
    "MismatchModel": results.Mismatch,
    "CandidateCheckModel": results.CandidateCheck,
    "CandidateOutputCheck": results.OutputCheck,
    "CandidateEntry": results.CandidateEntry,
    "DiagnosisModel": results.Diagnosis,
    "DirectionalModel": results.DirectionalDerivatives,
    "AppliedTolerance": results.Tolerance,
    "ProblemResponse": results.Problem,
    "ProblemParameters": results.ProblemParameters,
    "GeneratorInfo": results.GeneratorInfo,
    "GradeResult": results.GradeResult,
    "PartResult": results.PartResult,
    "MismatchEntry": results.MismatchEntry,
    "GradescopeResult": results.GradescopeResult,
    "GradescopeTest": results.GradescopeTest,
    "PrairieLearnResult": results.PrairieLearnResult,
    "PrairieLearnTest": results.PrairieLearnTest,
    "BatchGradeResponse": results.BatchGrades,
    "ClassSummaryModel": results.ClassSummary,
    "ScoreDistribution": results.ScoreDistribution,
    "ScoreBinModel": results.ScoreBin,
    "PartSummaryModel": results.PartSummary,
}
"""Each response model of the schema and the client class that holds it."""

CONTAINERS: set[str] = set()
"""Response models the client unwraps (none: `grade_batch` returns `BatchGrades`)."""

OPTIONS: dict[str, type[Any]] = {
    "FiniteDifferenceOptions": client.NumericOptions,
    "GradientFiniteDifferenceOptions": client.GradientNumericOptions,
    "ToleranceOptions": client.ToleranceOptions,
    "SoftmaxCandidate": client.SoftmaxCandidate,
    "LossCandidate": client.LossCandidate,
    "LinearCandidate": linear.LinearCandidate,
}
"""Each nested request model and the client's TypedDict for it."""

CLIENT_ONLY_FIELDS = {"raw", "arrays"}
"""What the result classes keep besides the response's fields: the JSON and arrays as sent."""

CLIENT_ONLY_PARAMETERS = {"row_block", "replicas"}
"""Parameters of the client's own: how a batch is sent (by blocks of rows, to replicas)."""


@cache
def openapi() -> dict[str, Any]:
    return create_app().openapi()


def component(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = openapi()["components"]["schemas"][name]
    return schema


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return component(schema["$ref"].rsplit("/", 1)[1])
    return schema


def refs(schema: Any) -> Iterator[str]:
    """The names of the components `schema` refers to, anywhere inside it."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            yield schema["$ref"].rsplit("/", 1)[1]
        for value in schema.values():
            yield from refs(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from refs(value)


def choices(schema: dict[str, Any]) -> set[str] | None:
    """The strings a field may hold when the schema lists them (an enum, inside anyOf, array
    items or a mapping's keys), else None."""
    schema = resolve(schema)
    if "enum" in schema:
        return {str(value) for value in schema["enum"]}
    for key in ("items", "propertyNames"):
        if key in schema:
            return choices(schema[key])
    found = [choices(member) for member in schema.get("anyOf", [])]
    listed = [values for values in found if values is not None]
    return set().union(*listed) if listed else None


def literals(annotation: Any) -> set[str] | None:
    """The strings of the Literals inside a type annotation, or None if it has none."""
    if typing.get_origin(annotation) is Literal:
        return {str(value) for value in typing.get_args(annotation)}
    found = [literals(arg) for arg in typing.get_args(annotation)]
    listed = [values for values in found if values is not None]
    return set().union(*listed) if listed else None


def request_model(path: str) -> str:
    body = openapi()["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    return str(body["schema"]["$ref"].rsplit("/", 1)[1])


def test_every_route_has_a_method() -> None:
    paths = {path for path in openapi()["paths"] if path.startswith("/v1/")}
    assert paths == ROUTES.keys() | GET_ROUTES.keys()
    for path, name in GET_ROUTES.items():
        parameters = set(inspect.signature(getattr(Client, name)).parameters) - {"self"}
        assert parameters == {
            p["name"]
            for p in openapi()["paths"][path]["get"].get("parameters", [])
            if p["in"] == "path"
        }


@pytest.mark.parametrize("model", sorted(GET_RESULTS))
def test_every_get_response_field_is_an_attribute(model: str) -> None:
    fields = {f.name for f in dataclasses.fields(GET_RESULTS[model])}
    assert fields == component(model)["properties"].keys()


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_every_request_field_is_a_parameter_with_the_same_choices(path: str) -> None:
    method = getattr(Client, ROUTES[path])
    hints = typing.get_type_hints(method)
    parameters = set(inspect.signature(method).parameters) - {"self"} - CLIENT_ONLY_PARAMETERS
    properties = component(request_model(path))["properties"]
    assert parameters == properties.keys()
    for name, schema in properties.items():
        expected = choices(schema)
        if expected is not None:
            assert literals(hints[name]) == expected, name


@pytest.mark.parametrize("model", sorted(OPTIONS))
def test_every_nested_request_field_is_a_key_of_its_typed_dict(model: str) -> None:
    typed = OPTIONS[model]
    hints = typing.get_type_hints(typed)
    properties = component(model)["properties"]
    assert hints.keys() == properties.keys()
    for name, schema in properties.items():
        expected = choices(schema)
        if expected is not None:
            assert literals(hints[name]) == expected, name


def test_every_nested_request_model_has_its_typed_dict() -> None:
    nested = {
        name
        for path in ROUTES
        for name in refs(component(request_model(path)))
        if "properties" in component(name)
    } - {request_model(path) for path in ROUTES}
    assert nested - {"GradingProblem", "RosterItem"} == OPTIONS.keys()


def response_models() -> set[str]:
    """Every object model reachable from the /v1 routes' JSON success responses."""
    seen: set[str] = set()
    todo = [
        name
        for path in ROUTES
        for name in refs(openapi()["paths"][path]["post"]["responses"]["200"])
    ]
    while todo:
        name = todo.pop()
        if name not in seen and "properties" in component(name):
            seen.add(name)
            todo.extend(refs(component(name)))
    return seen


def test_every_response_model_has_a_result_class() -> None:
    assert response_models() - CONTAINERS == RESULTS.keys()


@pytest.mark.parametrize("model", sorted(RESULTS))
def test_every_response_field_is_an_attribute(model: str) -> None:
    fields = {f.name for f in dataclasses.fields(RESULTS[model])} - CLIENT_ONLY_FIELDS
    assert fields == component(model)["properties"].keys()


@pytest.mark.parametrize("name", [*sorted(ROUTES.values()), *GET_ROUTES.values(), "check"])
def test_the_async_client_has_the_same_signatures(name: str) -> None:
    sync, asynchronous = getattr(Client, name), getattr(AsyncClient, name)
    assert inspect.iscoroutinefunction(asynchronous)
    assert inspect.signature(asynchronous).parameters == inspect.signature(sync).parameters
    assert typing.get_type_hints(asynchronous) == typing.get_type_hints(sync)


def test_the_computation_dtype_is_the_services() -> None:
    assert literals(client.Dtype) == choices(
        component("CrossEntropyRequest")["properties"]["dtype"]
    )
