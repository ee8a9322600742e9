"""Errors as 4xx responses that name the field and position, and never echo the input.

422 bodies keep FastAPI's shape, {"detail": [{"loc": [...], "msg": ..., "type": ...}]}, with at
most MAX_ERRORS items: the first ones found, and `errors_omitted` counting the rest when there
are more (a body with 300,000 bad labels is answered in a few hundred bytes). Other 4xx carry one
sentence in "detail". Pydantic's `input` and `ctx` are dropped: they may hold NaN, which JSON
cannot carry, or a secret.
"""

import json
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.schemas.compute import UNION_TAGS
from app.core.errors import ErrorItems, LimitExceeded, Overloaded, RequestError
from app.numerics.errors import InvalidProblem

MAX_ERRORS = 20
"""Most problems a 422 lists; `errors_omitted` counts the others."""


def _raw_errors(error: ValidationError) -> Iterator[dict[str, Any]]:
    """Pydantic's errors without url, input or context, in order. Few are turned into Python
    objects one by one; many are read from pydantic's own JSON of them, of which only the first
    ones are decoded (about 50× faster and smaller for 10⁵ errors)."""
    if error.error_count() <= MAX_ERRORS:
        for item in error.errors(include_url=False, include_input=False, include_context=False):
            yield dict(item)
        return
    text = error.json(include_url=False, include_input=False, include_context=False)
    decoder = json.JSONDecoder()
    position = 1  # after "["
    for _ in range(error.error_count()):
        item, position = decoder.raw_decode(text, position)
        yield item
        position += 1  # after the comma


def pydantic_errors(error: ValidationError) -> ErrorItems:
    """The first MAX_ERRORS distinct errors of pydantic, with union tags removed from `loc` and
    without `input`/`ctx`; `omitted` counts the others."""
    items = ErrorItems()
    seen: set[str] = set()
    read = 0
    for item in _raw_errors(error):
        read += 1
        location = [part for part in item["loc"] if part not in UNION_TAGS]
        message = item["msg"]
        if item["type"] == "json_invalid":
            message = (
                f"The body is not valid JSON: {item['ctx']['error']}" if "ctx" in item else message
            )
        shaped = {"loc": ["body", *location], "msg": message, "type": item["type"]}
        key = repr(shaped)
        if key not in seen:
            seen.add(key)
            items.append(shaped)
            if len(items) == MAX_ERRORS:
                break
    items.omitted = error.error_count() - read
    return items


def unprocessable_content(errors: Sequence[dict[str, Any]], omitted: int = 0) -> dict[str, Any]:
    """The body of a 422: the first MAX_ERRORS of `errors`, and `errors_omitted` when more
    problems were found (the rest of `errors` and `omitted` others)."""
    omitted += max(0, len(errors) - MAX_ERRORS)
    content: dict[str, Any] = {"detail": list(errors[:MAX_ERRORS])}
    if omitted:
        content["errors_omitted"] = omitted
    return content


def _unprocessable(errors: Sequence[dict[str, Any]], omitted: int = 0) -> JSONResponse:
    return JSONResponse(unprocessable_content(errors, omitted), status_code=422)


async def _request_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestError)
    return _unprocessable(exc.errors, exc.omitted)


async def _invalid_problem(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidProblem)
    return _unprocessable(
        [{"loc": ["body", *exc.location], "msg": exc.message, "type": "value_error"}]
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    found = exc.errors()
    errors = [
        {
            "loc": list(e.get("loc", ())),
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in found[:MAX_ERRORS]
    ]
    return _unprocessable(errors, len(found) - len(errors))


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
