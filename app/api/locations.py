"""Error locations in the caller's own terms.

The numerics refuse a problem naming a row (and a class) of the rows (R, C) they work on, and
parsing names a field of the value it was given; the caller sent logits of any shape
(K-dimensional, without a batch axis), and a grading problem inside a body or a roster item.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from app.core.errors import RequestError
from app.numerics.errors import InvalidProblem
from app.numerics.layout import Layout


def at_callers_position(error: InvalidProblem, layout: Layout) -> InvalidProblem:
    """A refusal of the numerics, which names a row (and a class) of the rows, at the caller's
    own position in the logits or labels (`layout`); the refusal itself where it names none."""
    field, *where = error.location
    if layout.is_matrix or field not in ("logits", "labels") or not where:
        return error
    row = int(where[0])
    position = layout.entry(row, int(where[1])) if len(where) > 1 else layout.position(row)
    return InvalidProblem((field, *position), error.message)


@contextmanager
def under(*prefix: str | int) -> Iterator[None]:
    """Re-raise request errors and refusals with their locations moved under `prefix` (e.g.
    "problem", or "items", 3, "problem_id")."""
    try:
        yield
    except RequestError as error:
        for item in error.errors:
            item["loc"] = [item["loc"][0], *prefix, *item["loc"][1:]]
        raise
    except InvalidProblem as error:
        raise InvalidProblem((*prefix, *error.location), error.message) from None
