"""Errors as 4xx responses that name the field and position, and never echo the input.

422 bodies keep FastAPI's shape, {"detail": [{"loc": [...], "msg": ..., "type": ...}]}; other
4xx carry one sentence in "detail". Pydantic's `input` and `ctx` are dropped: they may hold NaN,
which JSON cannot carry, or a secret.
"""

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.schemas.compute import UNION_TAGS
from app.core.errors import LimitExceeded, Overloaded, RequestError
from app.numerics.errors import InvalidProblem


def pydantic_errors(error: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors with union tags removed from `loc` and without `input`/`ctx`."""
    items = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        location = [part for part in item["loc"] if part not in UNION_TAGS]
        message = item["msg"]
        if item["type"] == "json_invalid":
            message = (
                f"The body is not valid JSON: {item['ctx']['error']}" if "ctx" in item else message
            )
        items.append({"loc": ["body", *location], "msg": message, "type": item["type"]})
    return _unique(items)


def _unique(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items in order, without repeats."""
    seen: set[str] = set()
    unique = []
    for item in items:
        key = repr(item)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def _unprocessable(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"detail": errors}, status_code=422)


async def _request_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    return _unprocessable(exc.errors)


async def _invalid_problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidProblem)
    return _unprocessable(
        [{"loc": ["body", *exc.location], "msg": exc.message, "type": "value_error"}]
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in exc.errors()
    ]
    return _unprocessable(errors)


async def _limit_exceeded(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LimitExceeded)
    return JSONResponse({"detail": exc.message}, status_code=413)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _overloaded(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Overloaded)
    return JSONResponse({"detail": exc.message}, status_code=503, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Route every error type of the service to its 4xx shape (503 with Retry-After when the
    memory budget cannot admit a request in time)."""
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(InvalidProblem, _invalid_problem)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(LimitExceeded, _limit_exceeded)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Overloaded, _overloaded)
