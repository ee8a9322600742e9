"""What a class got wrong: counts over the grades of one /v1/grade/batch call, for the instructor.

Per graded part: how many submissions were graded, how many passed, how many could not be read,
and in how many submissions each diagnosis code was found (a submission counts once per code,
and both codes of a pair count). Over the whole submissions: the score distribution — count,
mean, median, minimum, maximum and a histogram of SCORE_BINS equal bins over [0, max_score].

Every number is a count or a score; none is derived from a reference value (no expected value,
error size or factor), so the summary can be shared as freely as the scores themselves.
"""

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from app.grading.grade import Grade, Part
from app.numerics.diagnose import PRIORITY

SCORE_BINS = 10
"""Equal-width bins of the score histogram over [0, max_score]; the last one includes max_score."""


@dataclass(frozen=True)
class PartSummary:
    """One part over every submission of the batch."""

    part: Part
    submissions: int
    passed: int
    unreadable: int
    """Submissions whose value of this part was missing or could not be read."""
    codes: dict[str, int]
    """Diagnosis code → in how many submissions it was found, in PRIORITY order."""


@dataclass(frozen=True)
class ScoreBin:
    """Scores in [low, high) (the last bin includes high)."""

    low: float
    high: float
    count: int


@dataclass(frozen=True)
class ClassSummary:
    """The class's results: per part, and the score distribution."""

    submissions: int
    gradable: int
    max_score: float
    mean: float | None
    median: float | None
    minimum: float | None
    maximum: float | None
    histogram: tuple[ScoreBin, ...]
    parts: tuple[PartSummary, ...]


def _part_summary(part: Part, grades: Sequence[Grade]) -> PartSummary:
    found: Counter[str] = Counter()
    passed = unreadable = 0
    for grade in grades:
        part_grade = next(p for p in grade.parts if p.part is part)
        passed += part_grade.passed
        unreadable += part_grade.defect is not None
        found.update({diagnosis.code for diagnosis in part_grade.diagnoses})
    codes = {code: found[code] for code in PRIORITY if found[code]}
    return PartSummary(part, len(grades), passed, unreadable, codes)


def _histogram(scores: Sequence[float], max_score: float) -> tuple[ScoreBin, ...]:
    if max_score <= 0:
        return ()
    width = max_score / SCORE_BINS
    counts = [0] * SCORE_BINS
    for score in scores:
        counts[min(SCORE_BINS - 1, max(0, math.floor(score / width)))] += 1
    return tuple(
        ScoreBin(i * width, max_score if i == SCORE_BINS - 1 else (i + 1) * width, count)
        for i, count in enumerate(counts)
    )


def class_summary(grades: Sequence[Grade]) -> ClassSummary:
    """The summary of `grades` (all graded with the same options, so the same parts and
    max_score; an empty batch gives zero counts and no statistics)."""
    scores = [grade.score for grade in grades]
    max_score = grades[0].max_score if grades else 0.0
    parts = tuple(_part_summary(p.part, grades) for p in grades[0].parts) if grades else ()
    return ClassSummary(
        submissions=len(grades),
        gradable=sum(grade.gradable for grade in grades),
        max_score=max_score,
        mean=statistics.fmean(scores) if scores else None,
        median=statistics.median(scores) if scores else None,
        minimum=min(scores, default=None),
        maximum=max(scores, default=None),
        histogram=_histogram(scores, max_score),
        parts=parts,
    )
