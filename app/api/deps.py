"""Dependencies of the routes: settings, and JSON bodies parsed by pydantic's Rust parser."""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import HTTPException
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.errors import pydantic_errors
from app.core.config import Settings
from app.core.errors import RequestError


async def app_settings(request: Request) -> Settings:
    """The settings of the app serving the request (`create_app` keeps them on app.state).

    Read directly rather than through `dependency_overrides[get_settings]`, which FastAPI
    re-inspects on every request (about 0.1 ms each).
    """
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]

Model = TypeVar("Model", bound=BaseModel)

INLINE_PARSE_BYTES = 32 * 1024
"""Bodies up to this size are parsed on the event loop: about 0.1 ms, what the hop to a worker
thread would cost."""

REQUEST_BODY_MODELS: list[type[BaseModel]] = []
"""Models of JSON request bodies (`request_body_openapi`), added to the OpenAPI components by
`app.main`."""


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


async def read_json_body(request: Request, model: type[Model]) -> Model:
    """The body as `model`: 415 unless JSON, 422 naming each bad field.

    The body is validated straight from bytes (`model_validate_json`), which is several times
    faster than `json.loads` plus validation for large arrays, and accepts the `-Infinity`
    literal that Python's `json` writes for a masked logit. Bodies over INLINE_PARSE_BYTES are
    parsed in a worker thread, so that a large body never holds up the event loop.
    """
    if not _is_json(request.headers.get("content-type", "")):
        raise HTTPException(
            415, "Send the body as JSON with the header Content-Type: application/json."
        )
    body = await request.body()
    try:
        if len(body) > INLINE_PARSE_BYTES:
            return await run_in_threadpool(model.model_validate_json, body)
        return model.model_validate_json(body)
    except ValidationError as error:
        raise RequestError.from_items(pydantic_errors(error)) from None


def json_body(model: type[Model]) -> Callable[[Request], Awaitable[Model]]:
    """A dependency that reads the body as `model` (`read_json_body`)."""

    async def parse(request: Request) -> Model:
        return await read_json_body(request, model)

    return parse


def request_body_openapi(model: type[BaseModel], **content: Any) -> dict[str, Any]:
    """`openapi_extra` documenting a JSON request body of `model` (with `content` extras); adds
    `model` to REQUEST_BODY_MODELS."""
    REQUEST_BODY_MODELS.append(model)
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, **content}},
        }
    }
