"""Error types shared by every layer above the numerics: a bad request (422) and a limit (413).

The numerics raise their own `app.numerics.errors.InvalidProblem`; `app.api.errors` turns all of
them into responses.
"""

from typing import Any

Location = tuple[str | int, ...]


class RequestError(Exception):
    """A request that is valid JSON but not a valid problem: answered with 422."""

    def __init__(self, location: Location, message: str, kind: str = "value_error") -> None:
        super().__init__(message)
        self.errors: list[dict[str, Any]] = [
            {"loc": ["body", *location], "msg": message, "type": kind}
        ]

    @classmethod
    def from_items(cls, items: list[dict[str, Any]]) -> "RequestError":
        """A RequestError carrying several already-shaped error items."""
        error = cls((), str(items[0]["msg"]) if items else "invalid request")
        error.errors = items
        return error


class LimitExceeded(Exception):
    """A request over a configured size limit: answered with 413."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
