"""Two mistakes at once, the scalar loss's stricter rule, and no false names at any dtype.

Candidates come from the independent textbook formulas of test_diagnose (`outputs`), with two
mistakes put in at once: a semantic one (an option left out or misread, a − y) and a scale or
sign one (the sum not divided, the wrong divisor, the sign).
"""

from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.numerics.candidate import DEFAULT_TOLERANCE, check_candidate
from app.numerics.diagnose import MARGIN
from tests.numerics.test_diagnose import (
    IGNORED,
    PADDING,
    PLAIN,
    SMOOTHED,
    SMOOTHED_IGNORED,
    WEIGHTED,
    Array,
    check,
    inputs_of,
    mistaken,
    problem,
    problems,
    reference_of,
    service_outputs,
    service_report,
)

SMOOTHED_WEIGHTED = problem(smoothing=0.2, weight=[0.5, 2.0, 1.0, 3.0])

# (the two codes, in priority order) → (problem, output, candidate)
PAIR_CASES: list[tuple[tuple[str, str], Mapping[str, Any], str, Array]] = [
    (
        ("not_divided", "label_smoothing_ignored"),
        SMOOTHED,
        "gradient",
        mistaken(SMOOTHED, smoothing=0.0, divide_by=1.0)["gradient"],
    ),
    (
        ("sign_flipped", "not_divided"),
        PLAIN,
        "gradient",
        -mistaken(PLAIN, divide_by=1.0)["gradient"],
    ),
    (
        ("not_divided", "weights_ignored"),
        WEIGHTED,
        "gradient",
        mistaken(WEIGHTED, weight=None, divide_by=1.0)["gradient"],
    ),
    (
        ("sign_flipped", "a_minus_y"),
        WEIGHTED,
        "gradient",
        -mistaken(WEIGHTED, a_minus_q=True)["gradient"],
    ),
    (
        ("sign_flipped", "ignore_index_not_applied"),
        PADDING,
        "gradient",
        -mistaken(PADDING, ignore_index=-100)["gradient"],
    ),
    (
        ("divided_by_batch_size", "label_smoothing_ignored"),
        SMOOTHED_WEIGHTED,
        "gradient",
        mistaken(SMOOTHED_WEIGHTED, smoothing=0.0, divide_by=5.0)["gradient"],
    ),
    (
        ("not_divided", "smoothing_over_other_classes"),
        SMOOTHED,
        "gradient",
        mistaken(SMOOTHED, smoothing=0.2 * 4 / 3, divide_by=1.0)["gradient"],
    ),
    (
        ("sign_flipped", "ignored_rows_smoothed"),
        SMOOTHED_IGNORED,
        "gradient",
        -mistaken(SMOOTHED_IGNORED, smooth_ignored=True)["gradient"],
    ),
    (
        ("sign_flipped", "label_smoothing_ignored"),
        SMOOTHED,
        "losses",
        -mistaken(SMOOTHED, smoothing=0.0)["losses"],
    ),
]
PAIRS = [
    pytest.param(codes, p, output, value, id=f"{'+'.join(codes)}-{output}")
    for codes, p, output, value in PAIR_CASES
]


@pytest.mark.parametrize(("codes", "p", "output", "value"), PAIRS)
def test_a_pair_names_both_mistakes(
    codes: tuple[str, str], p: Mapping[str, Any], output: str, value: Array
) -> None:
    result = check(p, {output: value.tolist()})
    assert not result.passed
    assert [(d.code, d.output) for d in result.diagnoses] == [(code, output) for code in codes]
    scale, semantic = result.diagnoses
    assert "two mistakes together" in " ".join(d.evidence for d in result.diagnoses)
    assert scale.message != semantic.message


@pytest.mark.parametrize(("codes", "p", "output", "value"), PAIRS)
def test_the_right_answer_of_a_pair_case_gets_no_diagnosis(
    codes: tuple[str, str], p: Mapping[str, Any], output: str, value: Array
) -> None:
    result = check(p, {output: reference_of(p)[output].tolist()})
    assert result.passed
    assert result.diagnoses == []


@pytest.mark.parametrize(("codes", "p", "output", "value"), PAIRS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_pair_with_random_errors_gets_no_diagnosis(
    codes: tuple[str, str], p: Mapping[str, Any], output: str, value: Array, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    noisy = value * (1 + 0.2 * rng.standard_normal(value.shape))
    result = check(p, {output: noisy.tolist()})
    assert result.diagnoses == []


def test_a_single_code_beats_a_pair_that_fits_equally() -> None:
    # one sample: N = D = 1 and reduction 'mean' divides by 1, so "not divided" changes
    # nothing; −1 × (label smoothing left out) is a pair, but the single sign flip of a
    # problem whose smoothing is 0 is only sign_flipped
    p = problem(z=PLAIN["z"][:2], labels=np.array([0, 3]))
    result = check(p, {"gradient": (-reference_of(p)["gradient"]).tolist()})
    assert [d.code for d in result.diagnoses] == ["sign_flipped"]


def test_pairs_need_two_failing_samples() -> None:
    # only sample 0 is wrong (its gradient without smoothing, not divided): one row is not
    # enough evidence for two mistakes
    value = reference_of(SMOOTHED)["gradient"].copy()
    value[0] = mistaken(SMOOTHED, smoothing=0.0, divide_by=1.0)["gradient"][0]
    assert check(SMOOTHED, {"gradient": value.tolist()}).diagnoses == []


def test_a_batch_mean_with_ignored_rows_says_so() -> None:
    (first,) = check(IGNORED, {"loss": float(mistaken(IGNORED, divide_by=5.0)["loss"])}).diagnoses
    assert first.code == "divided_by_batch_size"
    assert "N counts 2 ignored samples" in first.evidence


# ----- the scalar loss ------------------------------------------------------------------------


@pytest.mark.parametrize(("factor", "words"), [(-5.0, "−N"), (1 / 5, "1/N"), (4.0, "C")])
def test_wrong_scale_of_a_scalar_loss_for_known_factors(factor: float, words: str) -> None:
    loss = float(reference_of(PLAIN)["loss"])
    (first,) = check(PLAIN, {"loss": loss * factor}).diagnoses
    assert first.code == "wrong_scale"
    assert first.evidence.endswith(f"= {words}")


def test_a_scalar_loss_is_named_only_when_it_matches_closely() -> None:
    wrong = float(mistaken(WEIGHTED, weight=None)["loss"])
    (first,) = check(WEIGHTED, {"loss": wrong}).diagnoses
    assert first.code == "weights_ignored"
    # within the tolerance of the same hypothesis, but not to 1e-6: one number, no name
    result = check(WEIGHTED, {"loss": wrong * (1 + 1e-4)})
    assert not result.passed
    assert result.diagnoses == []


def test_a_scalar_loss_near_two_hypotheses_gets_no_name() -> None:
    # a loose tolerance puts both "weights left out" and "× C" within reach of one number
    loss = float(reference_of(WEIGHTED)["loss"])
    wrong = float(mistaken(WEIGHTED, weight=None)["loss"])
    tolerance = abs(wrong - 4 * loss) / abs(wrong) * 2 + 1e-3
    result = check(WEIGHTED, {"loss": wrong}, atol=0.0, rtol=tolerance)
    assert result.diagnoses == []


# ----- no false names, at every dtype --------------------------------------------------------

DTYPES = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


def service_values(p: Mapping[str, Any]) -> dict[str, Array]:
    """Every output as the service computes it (the reference of a candidate check)."""
    values = service_outputs(service_report(p))
    return {name: np.asarray(value, np.float64) for name, value in values.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.sampled_from(sorted(DTYPES)))
def test_right_answers_in_every_dtype_get_no_name(p: dict[str, Any], dtype: str) -> None:
    reference = service_values(p)
    atol, rtol = DEFAULT_TOLERANCE[dtype]
    candidate = {name: value.astype(DTYPES[dtype]) for name, value in reference.items()}
    result = check_candidate(candidate, reference, atol=atol, rtol=rtol, inputs=inputs_of(p))
    assert result.diagnoses == []


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=problems(), seed=st.integers(0, 2**32 - 1), alternate=st.booleans())
def test_random_perturbations_at_the_tolerance_get_no_name(
    dtype: str, p: dict[str, Any], seed: int, alternate: bool
) -> None:
    """Every entry moved by 1.5 to 6 times its dtype's tolerance, alternately away from zero
    and towards it or in random directions: wrong, and no mistake's numbers. A named mistake
    differs from the reference by more than MARGIN tolerances somewhere, so a candidate that
    fits it is more than MARGIN·(1 − rtol) − 1 (over 6.6 at bfloat16's rtol) tolerances
    wrong there: no move of at most 6 can land on it, whatever the mistake or the dtype."""
    reference = service_values(p)
    atol, rtol = DEFAULT_TOLERANCE[dtype]
    assert MARGIN * (1 - rtol) - 1 > 6.0
    rng = np.random.default_rng(seed)
    candidate = {}
    for name, value in reference.items():
        size = rng.uniform(1.5, 6.0, value.shape) * (atol + rtol * np.abs(value))
        if alternate:
            signs = np.where(np.arange(value.size).reshape(value.shape) % 2 == 0, 1.0, -1.0)
            signs *= np.where(value < 0, -1.0, 1.0)  # alternately away from and towards zero
        else:
            signs = rng.choice([-1.0, 1.0], value.shape)
        moved = np.where(np.isfinite(value), value + signs * size, value)
        candidate[name] = moved.astype(DTYPES[dtype])
    result = check_candidate(candidate, reference, atol=atol, rtol=rtol, inputs=inputs_of(p))
    assert result.diagnoses == [], result.diagnoses


# z and labels where leaving out label smoothing 0.5 changes the per-sample losses by 3.5 and
# 1.2 bfloat16 tolerances (labels [1, 0]), or by 5.4 and 9.5 (labels [0, 1])
NEAR_Z = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]])


def test_a_mistake_within_the_margin_of_the_right_values_is_not_named() -> None:
    # the candidate is exactly the mistake's losses, wrong beyond the tolerance, but the
    # mistake moves no value by MARGIN tolerances: at bfloat16's tolerance it cannot be told
    # from noise, so it is not named; at float32's it is
    p = problem(z=NEAR_Z, labels=np.array([1, 0]), smoothing=0.5, reduction="none")
    wrong, right = mistaken(p, smoothing=0.0)["losses"], reference_of(p)["losses"]
    atol, rtol = DEFAULT_TOLERANCE["bfloat16"]
    tolerances = np.abs(wrong - right) / (atol + rtol * np.abs(right))
    assert 1.0 < tolerances.max() < MARGIN
    loose = check(p, {"losses": wrong.tolist()}, atol=atol, rtol=rtol)
    assert not loose.passed
    assert loose.diagnoses == []
    atol, rtol = DEFAULT_TOLERANCE["float32"]
    (first,) = check(p, {"losses": wrong.tolist()}, atol=atol, rtol=rtol).diagnoses
    assert (first.code, first.output) == ("label_smoothing_ignored", "losses")


def test_a_mistake_beyond_the_margin_somewhere_is_named_at_bfloat16() -> None:
    p = problem(z=NEAR_Z, labels=np.array([0, 1]), smoothing=0.5, reduction="none")
    wrong, right = mistaken(p, smoothing=0.0)["losses"], reference_of(p)["losses"]
    atol, rtol = DEFAULT_TOLERANCE["bfloat16"]
    tolerances = np.abs(wrong - right) / (atol + rtol * np.abs(right))
    assert tolerances.min() < MARGIN < tolerances.max()
    (first,) = check(p, {"losses": wrong.tolist()}, atol=atol, rtol=rtol).diagnoses
    assert (first.code, first.output) == ("label_smoothing_ignored", "losses")
