"""One router per concern; shared OpenAPI response documentation."""

from typing import Any

from app.api.schemas.errors import MessageResponse, ValidationErrorResponse
from app.core.media import NPZ_MEDIA_TYPE

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    413: {
        "model": MessageResponse,
        "description": "Over a size limit; says which and how to stay under it.",
    },
    415: {"model": MessageResponse, "description": "The body is not sent as UTF-8 JSON."},
    422: {
        "model": ValidationErrorResponse,
        "description": "Invalid input, naming field and position.",
    },
    503: {
        "model": MessageResponse,
        "description": "The memory budget could not admit the request in time; retry after "
        "the Retry-After header's seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}},
    },
    504: {
        "model": MessageResponse,
        "description": "Stopped at GRADCHECK_REQUEST_TIMEOUT_SECONDS; says how to ask for less.",
    },
}


ACCEPT_PARAMETER: dict[str, Any] = {
    "name": "accept",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "application/x-npz for .npz; JSON otherwise",
}
"""The Accept header in OpenAPI. The compute routes read it (and the settings) from the request
themselves: as FastAPI parameters and dependencies they cost a small request about 40 µs
(`make bench`, case 3)."""


def success_response() -> dict[int | str, dict[str, Any]]:
    """The 200 response's extra media type: .npz with one .npy member per array."""
    return {
        200: {
            "content": {
                NPZ_MEDIA_TYPE: {
                    "schema": {"type": "string", "format": "binary"},
                }
            },
            "description": "JSON by default; a .npz archive with `Accept: application/x-npz`.",
        }
    }
