"""The errors the client raises: one root, `GradcheckError`, as httpx has `httpx.HTTPError`.

GradcheckError            anything that kept a call from returning its result
├── ServiceError          the service answered with an error status (`status`, `detail`)
│   ├── RefusedError      4xx: the request is wrong (`errors` locates each problem)
│   └── UnavailableError  5xx: a 503 still refused after the retries, a 504, a 500 …
├── TransportError        the service could not be reached or talked to (the httpx error
│                         is the `__cause__`)
└── ResponseError         a success status whose body is not the documented response
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorItem:
    """One problem the service found: where (`loc`, e.g. ("body", "logits", 3, 1)) and what."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    @property
    def where(self) -> str:
        """The location as `logits[3][1]` (without the leading "body")."""
        parts = list(self.loc[1:] if self.loc[:1] == ("body",) else self.loc)
        text = ""
        for part in parts:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
        return text or "body"


class GradcheckError(Exception):
    """The root of the client's errors: `url` is the address of the call that failed."""

    def __init__(self, message: str, url: str = "") -> None:
        self.url = url
        super().__init__(message)


class ServiceError(GradcheckError):
    """The service answered with an error status: `status`, the server's `detail` as it was
    sent, and `errors`, one `ErrorItem` per problem with its field and position (a 422)."""

    def __init__(self, status: int, detail: Any, url: str = "") -> None:
        self.status = status
        self.detail = detail
        self.errors: tuple[ErrorItem, ...] = _items(detail)
        head = f"HTTP {status}" + (f" from {url}" if url else "")
        if self.errors:
            text = head + ": " + "; ".join(f"{e.where}: {e.msg}" for e in self.errors)
        else:
            text = f"{head}: {detail}"
        super().__init__(text, url)


class RefusedError(ServiceError):
    """A 4xx: the request was refused (a field out of range, a missing API key, too large …);
    sending it again will not help."""


class UnavailableError(ServiceError):
    """A 5xx: the service could not answer now (a 503 still refused after the retries, a
    gateway's 502 or 504); the same request may succeed later."""


class TransportError(GradcheckError):
    """The service could not be reached or the exchange broke off (connection refused, a
    timeout, a dropped connection); the httpx error is the `__cause__`."""


class ResponseError(GradcheckError):
    """The service answered with a success status but not with the documented response (a
    missing field, a body that is neither JSON nor .npz): a service of another version, or a
    proxy answering in its place."""


def status_error(status: int, detail: Any, url: str) -> ServiceError:
    """The error of an error status: RefusedError for a 4xx, UnavailableError otherwise."""
    kind = RefusedError if 400 <= status < 500 else UnavailableError
    return kind(status, detail, url)


def _items(detail: Any) -> tuple[ErrorItem, ...]:
    if not isinstance(detail, list):
        return ()
    items = []
    for entry in detail:
        if isinstance(entry, dict):
            loc = tuple(p if isinstance(p, int) else str(p) for p in entry.get("loc") or ())
            items.append(ErrorItem(loc, str(entry.get("msg", "")), str(entry.get("type", ""))))
    return tuple(items)
