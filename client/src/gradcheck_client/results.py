"""Typed results: numpy arrays for the arrays, frozen dataclasses for the checks.

Every object keeps the server's own JSON fields in `raw`, so a field added by a newer server is
never lost (read it there until this package names it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating[Any]]
"""An array of floating-point numbers (float64 unless the request asked for another dtype)."""

_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _number(value: Any) -> float:
    """A JSON number, or the quoted "NaN" / "Infinity" / "-Infinity" the service writes."""
    if isinstance(value, str):
        return _NON_FINITE[value]
    if value is None:
        return math.nan
    return float(value)


def _optional_number(value: Any) -> float | None:
    return None if value is None else _number(value)


def _index(value: Any) -> tuple[int, ...]:
    return tuple(int(i) for i in value) if isinstance(value, list) else (int(value),)


@dataclass(frozen=True)
class Mismatch:
    """One element of a check outside the tolerance."""

    index: tuple[int, ...]
    analytic: float
    numeric: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mismatch:
        return cls(_index(data["index"]), _number(data["analytic"]), _number(data["numeric"]))


@dataclass(frozen=True)
class Check:
    """The service's analytic derivative against its numeric one (`gradient_check`,
    `jacobian_check`): `passed`, the counts, the error sizes and a sentence (`message`)."""

    passed: bool
    mismatches: int
    checked: int
    max_abs_error: float
    max_rel_error: float
    atol: float
    rtol: float
    method: str
    message: str
    step: float | None = None
    step_rule: str | None = None
    worst_mismatches: tuple[Mismatch, ...] = ()
    directions: int | None = None
    """How many random directions were checked (`numeric.directions`), if so."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Check:
        directions = data.get("directions")
        return cls(
            passed=bool(data["passed"]),
            mismatches=int(data.get("mismatches", 0)),
            checked=int(data.get("checked", 0)),
            max_abs_error=_number(data.get("max_abs_error")),
            max_rel_error=_number(data.get("max_rel_error")),
            atol=_number(data.get("atol")),
            rtol=_number(data.get("rtol")),
            method=str(data.get("method", "")),
            message=str(data.get("message", "")),
            step=_optional_number(data.get("step")),
            step_rule=data.get("step_rule"),
            worst_mismatches=tuple(
                Mismatch.from_json(m) for m in data.get("worst_mismatches") or ()
            ),
            directions=int(directions) if isinstance(directions, int) else None,
            raw=data,
        )


@dataclass(frozen=True)
class CandidateEntry:
    """One entry of your output outside the tolerance (non-finite values as float nan/inf)."""

    index: tuple[int, ...]
    expected: float
    got: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CandidateEntry:
        return cls(_index(data["index"]), _number(data["expected"]), _number(data["got"]))


@dataclass(frozen=True)
class OutputCheck:
    """How one of your outputs compares with the exact reference."""

    passed: bool
    checked: int
    mismatches: int
    nonfinite: int
    max_abs_error: float | None
    """None when taken over a non-finite entry of yours."""
    max_rel_error: float | None
    max_ulp_error: float | None
    worst: tuple[CandidateEntry, ...] = ()
    defect: str | None = None
    """Why your value could not be read (wrong shape, strings, …), if so."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutputCheck:
        return cls(
            passed=bool(data["passed"]),
            checked=int(data.get("checked", 0)),
            mismatches=int(data.get("mismatches", 0)),
            nonfinite=int(data.get("nonfinite", 0)),
            max_abs_error=_optional_number(data.get("max_abs_error")),
            max_rel_error=_optional_number(data.get("max_rel_error")),
            max_ulp_error=_optional_number(data.get("max_ulp_error")),
            worst=tuple(CandidateEntry.from_json(e) for e in data.get("worst") or ()),
            defect=data.get("defect"),
            raw=data,
        )


@dataclass(frozen=True)
class Diagnosis:
    """A named mistake that produces your numbers (`code`, e.g. `not_divided`)."""

    code: str
    output: str
    message: str
    evidence: str
    indistinguishable_from: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diagnosis:
        return cls(
            code=str(data["code"]),
            output=str(data.get("output", "")),
            message=str(data.get("message", "")),
            evidence=str(data.get("evidence", "")),
            indistinguishable_from=tuple(str(c) for c in data.get("indistinguishable_from") or ()),
        )


@dataclass(frozen=True)
class CandidateCheck:
    """Your outputs against the exact reference, and the mistakes that explain them (the most
    likely first; empty when they pass or when no known mistake explains them)."""

    passed: bool
    outputs: dict[str, OutputCheck]
    diagnoses: tuple[Diagnosis, ...]
    notes: tuple[str, ...]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CandidateCheck:
        return cls(
            passed=bool(data["passed"]),
            outputs={
                str(name): OutputCheck.from_json(value)
                for name, value in (data.get("outputs") or {}).items()
            },
            diagnoses=tuple(Diagnosis.from_json(d) for d in data.get("diagnoses") or ()),
            notes=tuple(str(n) for n in data.get("notes") or ()),
            raw=data,
        )


@dataclass(frozen=True)
class DirectionalDerivatives:
    """`numeric.directions`: the numeric and analytic derivative along each random direction."""

    numeric: FloatArray
    analytic: FloatArray


@dataclass(frozen=True)
class SoftmaxResult:
    """What `/v1/softmax` returned; arrays not asked for in `include` are None.

    `log_probabilities` holds -inf where a logit was -inf (the JSON API writes null there)."""

    dtype: str
    batch_size: int | None = None
    num_classes: int | None = None
    spatial_shape: tuple[int, ...] = ()
    """(d1, …, dk) of K-dimensional inputs (N, C, d1, …, dk); () otherwise."""
    probabilities: FloatArray | None = None
    log_probabilities: FloatArray | None = None
    jacobian: FloatArray | None = None
    numeric_jacobian: FloatArray | None = None
    jacobian_check: Check | None = None
    candidate_check: CandidateCheck | None = None
    arrays: dict[str, FloatArray] = field(default_factory=dict, repr=False, compare=False)
    """Every array of the response by name, those this class does not name included."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Every non-array field of the response, as the service wrote it."""


@dataclass(frozen=True)
class CrossEntropyResult(SoftmaxResult):
    """What `/v1/cross-entropy` returned; arrays not asked for in `include` are None.

    `loss` is a float for `mean` and `sum`, the array of per-sample losses for `none`."""

    reduction: str | None = None
    loss: float | FloatArray | None = None
    losses: FloatArray | None = None
    gradient: FloatArray | None = None
    numeric_gradient: FloatArray | None = None
    gradient_check: Check | None = None
    directional_derivatives: DirectionalDerivatives | None = None


@dataclass(frozen=True)
class Problem:
    """A seeded problem from `/v1/problems`: give `problem_id` to `grade`, and the rest (as
    `request_fields()`) to `cross_entropy` or to a student."""

    problem_id: str
    logits: FloatArray
    labels: npt.NDArray[Any]
    weight: FloatArray | None
    ignore_index: int
    reduction: str
    label_smoothing: float
    dtype: str
    parameters: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Problem:
        weight = data.get("weight")
        return cls(
            problem_id=str(data["problem_id"]),
            logits=np.asarray(data["logits"], dtype=np.float64),
            labels=np.asarray(data["labels"]),
            weight=None if weight is None else np.asarray(weight, dtype=np.float64),
            ignore_index=int(data.get("ignore_index", -100)),
            reduction=str(data.get("reduction", "mean")),
            label_smoothing=float(data.get("label_smoothing", 0.0)),
            dtype=str(data.get("dtype", "float64")),
            parameters=dict(data.get("parameters") or {}),
            raw=data,
        )

    def request_fields(self) -> dict[str, Any]:
        """The problem as the JSON fields of a `/v1/cross-entropy` body (or `problem` of
        `/v1/grade`)."""
        return {
            k: v for k, v in self.raw.items() if k not in {"problem_id", "parameters", "generator"}
        }
