"""The error the client raises when the service refuses a request."""

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
    """The service answered with an error status (a 4xx, or a 5xx such as a 503 still refused
    after the retries): `status`, the server's `detail` as it was sent, and `errors`, one
    `ErrorItem` per problem with its field and position (for a 422)."""

    def __init__(self, status: int, detail: Any, url: str = "") -> None:
        self.status = status
        self.detail = detail
        self.url = url
        self.errors: tuple[ErrorItem, ...] = _items(detail)
        super().__init__(self._text())

    def _text(self) -> str:
        head = f"HTTP {self.status}" + (f" from {self.url}" if self.url else "")
        if self.errors:
            return head + ": " + "; ".join(f"{e.where}: {e.msg}" for e in self.errors)
        return f"{head}: {self.detail}"


def _items(detail: Any) -> tuple[ErrorItem, ...]:
    if not isinstance(detail, list):
        return ()
    items = []
    for entry in detail:
        if isinstance(entry, dict):
            loc = tuple(p if isinstance(p, int) else str(p) for p in entry.get("loc") or ())
            items.append(ErrorItem(loc, str(entry.get("msg", "")), str(entry.get("type", ""))))
    return tuple(items)
