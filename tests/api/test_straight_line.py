"""Each request is a straight line: route → body dependency → inputs → numerics (one entry, once)
→ encoding. The routes and the encoding call no numerics function, and nothing travels between
layers through a context variable."""

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest

import app.api.routes
from app.api import coalesce, encoding, inputs
from app.numerics import tasks

APP = Path(__file__).resolve().parents[2] / "app"


def serialising_modules() -> list[ModuleType]:
    """The encoding and every route module."""
    routes = [
        importlib.import_module(f"app.api.routes.{info.name}")
        for info in pkgutil.iter_modules(app.api.routes.__path__)
    ]
    return [encoding, app.api.routes, *routes]


@pytest.mark.parametrize("module", serialising_modules(), ids=lambda module: module.__name__)
def test_routes_and_encoding_call_no_numerics_function(module: ModuleType) -> None:
    """They may name the numerics' types (a report, a check, a layout) but hold none of its
    functions: what they serialise is computed before they run."""
    functions = [
        name
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__.startswith("app.numerics")
    ]
    assert functions == []


def test_no_context_variable_but_the_logs_request_id() -> None:
    holders = sorted(
        str(path.relative_to(APP))
        for path in APP.rglob("*.py")
        if "ContextVar" in path.read_text(encoding="utf-8")
    )
    assert holders == ["core/logging.py"]


def test_no_pydantic_model_is_copied_with_arrays_swapped_in() -> None:
    calls = [
        str(path.relative_to(APP))
        for path in (APP / "api").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr == "model_copy"
    ]
    assert calls == []


def test_one_npz_media_type() -> None:
    definitions = [
        str(path.relative_to(APP))
        for path in APP.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "NPZ_MEDIA_TYPE" for t in node.targets)
    ]
    assert definitions == ["core/media.py"]


@pytest.mark.parametrize("inline_max_entries", [1_000_000, 0], ids=["on the loop", "offloaded"])
async def test_a_cross_entropy_request_with_a_candidate_enters_the_numerics_once(
    make_client: Any, monkeypatch: pytest.MonkeyPatch, inline_max_entries: int
) -> None:
    """Coalesced or alone, one call of the numerics' entry computes the report, the numeric
    check and the candidate's check with its diagnoses; the encoding then only serialises."""
    entries: list[str] = []
    alone, stacked = tasks.run_cross_entropy, tasks.run_cross_entropy_batch

    def run_alone(task: tasks.LossTask) -> tasks.LossResult:
        entries.append("alone")
        return alone(task)

    def run_stacked(batch: list[tasks.LossTask]) -> list[tasks.LossResult | Exception]:
        entries.append("stacked")
        return stacked(batch)

    monkeypatch.setattr(inputs, "run_cross_entropy", run_alone)
    monkeypatch.setattr(tasks, "run_cross_entropy_batch", run_stacked)
    monkeypatch.setattr(coalesce, "run_cross_entropy_batch", run_stacked)
    logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]])
    a = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    undivided = a - np.eye(3)[[0, 2]]  # the mean's gradient without its 1/N
    body = {
        "logits": logits.tolist(),
        "labels": [0, 2],
        "include": ["loss", "gradient", "numeric_gradient"],
        "candidate": {"gradient": undivided.tolist()},
    }
    client: httpx.AsyncClient
    async with make_client(inline_max_entries=inline_max_entries) as client:
        response = await client.post("/v1/cross-entropy", json=body)
    assert response.status_code == 200, response.text
    fields = response.json()
    assert fields["gradient_check"]["passed"] is True
    assert fields["candidate_check"]["passed"] is False
    codes = [diagnosis["code"] for diagnosis in fields["candidate_check"]["diagnoses"]]
    assert "not_divided" in codes, fields["candidate_check"]
    assert entries == (["stacked"] if inline_max_entries else ["alone"])


def test_routes_read_nothing_from_the_app_state() -> None:
    """What the app keeps (settings, budget, coalescer, key, metrics) reaches a route through
    its dependencies (`app.api.deps`), never read by the route itself."""
    readers = sorted(
        path.name
        for path in (APP / "api" / "routes").glob("*.py")
        if "app.state" in path.read_text(encoding="utf-8")
    )
    assert readers == []
