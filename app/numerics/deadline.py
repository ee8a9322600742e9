"""The request's deadline: an object handed down with the work, checked between blocks of it.

A numeric derivative checks it before each group of class columns (`finite_diff`) and each
direction (`directional`), grading between parts and every few submissions (`app.grading`), and
the web layer once more before encoding; a deadline that has passed raises `DeadlinePassed`, so
work whose answer nobody will read stops at its next block. It is created once per request (by
the compute-timeout middleware, `app.core.middleware`) and passed down as a value: no global or
context variable carries it.
"""

import math
import time


class DeadlinePassed(Exception):
    """Raised by `Deadline.check` once the request's time is up."""


class Deadline:
    """A moment on the monotonic clock (`time.monotonic`) after which the work stops."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at
        """Seconds of `time.monotonic()`; infinite for work that never stops early (`NEVER`)."""

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        """The deadline `seconds` from now."""
        return cls(time.monotonic() + seconds)

    def check(self) -> None:
        """Raise DeadlinePassed if the deadline has passed; else return at once."""
        if time.monotonic() > self.at:
            raise DeadlinePassed

    def __repr__(self) -> str:
        return f"Deadline(at={self.at!r})"


NEVER = Deadline(math.inf)
"""The deadline of work outside any request (tests, benchmarks, a coalesced batch)."""
