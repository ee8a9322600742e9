"""A student's answer that the request's reader could not read at all (nested deeper than the
JSON parser goes): graded 0 with a student-facing reason, never refused. Answers that parse are
read leniently by `app.numerics.candidate.read_part`, shared with the candidate check."""

from dataclasses import dataclass

UNREADABLE = "your answer could not be read: {reason}"


@dataclass(frozen=True)
class Unreadable:
    """A student's answer the request's reader could not read (graded 0 with `UNREADABLE`)."""

    reason: str

    def message(self) -> str:
        """What the student is told."""
        return UNREADABLE.format(reason=self.reason)
