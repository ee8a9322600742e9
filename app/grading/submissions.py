"""A student's answer read leniently: any JSON value becomes an array or a message, never an error.

The reader itself lives in app.numerics.candidate, shared with the candidate check of
`/v1/softmax` and `/v1/cross-entropy` (one reader, one wording): a part is read as nested lists
of JSON numbers, and what the student got wrong is said in words, naming the first offending
position as it was sent: a string or null where a number belongs, rows of different lengths,
NaN or Infinity, or a shape other than the expected one. Shapes that differ only by axes of
length 1 are accepted (a flat row for a one-sample problem, `[0.5]` or `[[0.5]]` for a single
number).
"""

from dataclasses import dataclass

from app.numerics.candidate import MAX_NESTING, describe, read_part

__all__ = ["MAX_NESTING", "UNREADABLE", "Unreadable", "describe", "read_part"]

UNREADABLE = "your answer could not be read: {reason}"


@dataclass(frozen=True)
class Unreadable:
    """A student's answer the request's reader could not read at all (e.g. nested deeper than
    the JSON parser goes): graded 0 with `UNREADABLE`, never refused."""

    reason: str

    def message(self) -> str:
        """What the student is told."""
        return UNREADABLE.format(reason=self.reason)
