"""The media types of request and response bodies, and the one parser of a Content-Type header.

Both the body size limit (`app.core.middleware`, which picks the limit of the body's format) and
the body dependency (`app.api.deps`, which picks the parser) read the header with
`parse_content_type`, so they never disagree on what a body is.
"""

import email.message
from dataclasses import dataclass

JSON_MEDIA_TYPE = "application/json"
NPZ_MEDIA_TYPE = "application/x-npz"


@dataclass(frozen=True)
class ContentType:
    """A Content-Type header, read (`parse_content_type`)."""

    media_type: str
    """type/subtype in lower case, without parameters ("" when the header is empty)."""
    charset: str | None
    is_json: bool
    """application/json or application/*+json (RFC 6839's structured syntax suffix)."""
    is_npz: bool
    """A binary .npz body."""


def _content_type(media_type: str, charset: str | None = None) -> ContentType:
    is_json = media_type == JSON_MEDIA_TYPE or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
    return ContentType(media_type, charset, is_json, media_type == NPZ_MEDIA_TYPE)


_PLAIN_JSON = _content_type(JSON_MEDIA_TYPE)


def parse_content_type(header: str) -> ContentType:
    """The media type and charset of a Content-Type header (RFC 9110 §8.3, by the standard
    library's email parser; the usual `application/json` costs nothing)."""
    if header == JSON_MEDIA_TYPE:
        return _PLAIN_JSON
    if not header.strip():
        return _content_type("")
    message = email.message.Message()
    message["content-type"] = header
    charset = message.get_param("charset")
    return _content_type(message.get_content_type(), charset if isinstance(charset, str) else None)
