"""Error types shared by every layer above the numerics: a bad request (422), a limit (413) and
an overloaded server (503 with Retry-After).

The numerics raise their own `app.numerics.errors.InvalidProblem`; `app.api.errors` turns all of
them into responses.
"""

from collections.abc import Callable
from typing import Any

Location = tuple[str | int, ...]


class ErrorItems(list[dict[str, Any]]):
    """Shaped error items, the first ones found, and how many more were found but not shaped
    (`omitted`): a body with a million problems is answered with a few of them."""

    omitted: int = 0


class RequestError(Exception):
    """A request that is valid JSON but not a valid problem: answered with 422."""

    def __init__(self, location: Location, message: str, kind: str = "value_error") -> None:
        super().__init__(message)
        self.errors: list[dict[str, Any]] = [
            {"loc": ["body", *location], "msg": message, "type": kind}
        ]

    @classmethod
    def from_items(cls, items: list[dict[str, Any]]) -> "RequestError":
        """A RequestError carrying several already-shaped error items (an `ErrorItems` keeps
        its count of omitted ones)."""
        error = cls((), str(items[0]["msg"]) if items else "invalid request")
        error.errors = items
        return error

    @property
    def omitted(self) -> int:
        """Problems found beyond those in `errors`."""
        return self.errors.omitted if isinstance(self.errors, ErrorItems) else 0


class LazyRefusal:
    """A refusal decided only when it is needed, and then once: whether a JSON body's −∞ was
    written `-1e999999` (refused) or `-Infinity` (a mask) only its text tells, and scanning
    tens of MB of text for that costs more than parsing it, so the scan runs only once a parsed
    −∞ asks. Handed down explicitly from the body dependency (`app.api.deps.Received`)."""

    def __init__(self, decide: Callable[[], RequestError | None]) -> None:
        self._decide: Callable[[], RequestError | None] | None = decide
        self._refusal: RequestError | None = None

    def raise_if_refused(self) -> None:
        """Raise the refusal, deciding it on the first call."""
        if self._decide is not None:
            self._refusal, self._decide = self._decide(), None
        if self._refusal is not None:
            raise self._refusal


class LimitExceeded(Exception):
    """A request over a configured size limit: answered with 413."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OverBudget(LimitExceeded):
    """A request whose estimated memory exceeds what any one request may hold (the whole memory
    budget, or GRADCHECK_MAX_REQUEST_MEMORY_BYTES): it can never be admitted, so it is answered
    with 413 (like every `LimitExceeded`), naming the limit."""

    def __init__(self, cost_bytes: int, limit_bytes: int, setting: str) -> None:
        super().__init__(
            f"this request needs about {cost_bytes / 2**20:.0f} MiB of memory, more than the "
            f"{limit_bytes / 2**20:.0f} MiB a request may use ({setting}): send fewer samples or "
            "classes per request, or leave the Jacobians and numeric outputs out of include."
        )
        self.cost_bytes = cost_bytes
        self.limit_bytes = limit_bytes
        self.setting = setting


class Overloaded(Exception):
    """The server is busy: answered with 503 and a `Retry-After: <retry_after_seconds>` header.

    Raised by admission control when its queue is full or a request waited too long for memory.
    """

    def __init__(self, retry_after_seconds: int, message: str) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, int(retry_after_seconds))
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """The response headers: Retry-After in whole seconds."""
        return {"Retry-After": str(self.retry_after_seconds)}
