"""softmax, log-softmax, complement and Jacobian against mpmath, and their properties."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.numerics.softmax import softmax, softmax_jacobian
from tests.numerics import reference

NEG_INF = float("-inf")

CASES = {
    "small": [[2.0, 1.0, 0.1]],
    "ties": [[3.0, 3.0, 3.0, 3.0]],
    "near tie": [[1.0, 1.0 + 2**-52, 1.0 - 2**-52]],
    "saturated": [[0.0, 50.0, -3.0]],
    "hundreds apart": [[0.0, 800.0, -400.0]],
    "large logits": [[1e4, -1e4, 9999.5]],
    "tiny logits": [[1e-300, -1e-300, 5e-324]],
    "masked": [[NEG_INF, 0.5, -1.0, NEG_INF]],
    "batch": [[0.1, -0.2, 0.3], [5.0, 5.0, -5.0], [30.0, 0.0, -30.0]],
    "many classes": np.random.default_rng(7).normal(scale=20, size=(2, 300)).tolist(),
}


@pytest.fixture(params=sorted(CASES), ids=str)
def logits(request: pytest.FixtureRequest) -> np.ndarray:
    return np.array(CASES[request.param])


def test_probabilities_match_mpmath(logits: np.ndarray) -> None:
    a = softmax(logits).probabilities
    for row, computed in zip(logits, a, strict=True):
        assert reference.relative_row_error(computed, reference.softmax(row)) <= 1e-14


def test_log_probabilities_match_mpmath(logits: np.ndarray) -> None:
    log_a = softmax(logits).log_probabilities
    for row, computed in zip(logits, log_a, strict=True):
        exact = reference.log_softmax(row)
        finite = [k for k, v in enumerate(row) if v != NEG_INF]
        assert np.all(np.isneginf(computed[np.isneginf(row)]))
        assert reference.relative_row_error(computed[finite], [exact[k] for k in finite]) <= 1e-14


def test_complement_is_exact_even_when_saturated(logits: np.ndarray) -> None:
    sm = softmax(logits)
    for row, computed in zip(logits, sm.complement, strict=True):
        exact = [1 - p for p in reference.softmax(row)]
        for c, e in zip(computed, exact, strict=True):
            assert abs(float(c) - e) <= 1e-14 * abs(e) + 1e-300


def test_jacobian_matches_mpmath(logits: np.ndarray) -> None:
    jacobian = softmax_jacobian(softmax(logits))
    assert jacobian.shape == (logits.shape[0], logits.shape[1], logits.shape[1])
    for row, block in zip(logits, jacobian, strict=True):
        exact = reference.jacobian(row)
        flat_exact = [x for r in exact for x in r]
        assert reference.relative_row_error(block.ravel(), flat_exact) <= 1e-14


def test_saturated_row_keeps_tiny_values_that_textbook_formulas_lose() -> None:
    z = np.array([[0.0, 50.0]])
    sm = softmax(z)
    textbook_complement = 1 - sm.probabilities[0, 1]
    assert textbook_complement == 0.0
    exact = float(reference.softmax(z[0])[0])
    assert sm.complement[0, 1] == pytest.approx(exact, rel=1e-14)
    diagonal = softmax_jacobian(sm)[0, 1, 1]
    assert diagonal == pytest.approx(float(reference.jacobian(z[0])[1][1]), rel=1e-14)
    assert diagonal > 0


finite_rows = arrays(
    np.float64,
    st.tuples(st.integers(1, 4), st.integers(2, 12)),
    elements=st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False),
)


@given(finite_rows)
def test_rows_are_probability_distributions(z: np.ndarray) -> None:
    a = softmax(z).probabilities
    assert np.all((a >= 0) & (a <= 1))
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=0, atol=4 * z.shape[1] * 2.3e-16)


@given(finite_rows)
def test_jacobian_is_symmetric_with_rows_summing_to_zero(z: np.ndarray) -> None:
    sm = softmax(z)
    jacobian = softmax_jacobian(sm)
    np.testing.assert_array_equal(jacobian, np.swapaxes(jacobian, 1, 2))
    scale = np.abs(jacobian).max(axis=(1, 2), keepdims=True)[:, :, 0]
    assert np.all(
        np.abs(jacobian.sum(axis=2)) <= 8 * z.shape[1] * 2.3e-16 * np.maximum(scale, 1e-300)
    )


@given(finite_rows)
def test_jacobian_is_positive_semidefinite_with_null_vector_ones(z: np.ndarray) -> None:
    jacobian = softmax_jacobian(softmax(z))
    eigenvalues = np.linalg.eigvalsh(jacobian)
    assert np.all(eigenvalues >= -1e-15)


@given(finite_rows, st.floats(-1e3, 1e3, allow_nan=False))
def test_shift_invariance(z: np.ndarray, shift: float) -> None:
    shifted = z + shift
    # z + shift is rounded: only when the differences survive exactly is the result the same
    exact_differences_kept = np.all((shifted - shift) == z)
    a = softmax(z).probabilities
    b = softmax(shifted).probabilities
    if exact_differences_kept:
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-300)
    else:
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-9)


@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 3), st.integers(2, 6)),
        elements=st.one_of(
            st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False),
            st.just(NEG_INF),
        ),
    )
)
def test_extreme_logits_give_finite_outputs(z: np.ndarray) -> None:
    z[:, 0] = np.where(np.isfinite(z).any(axis=1), z[:, 0], 0.0)
    sm = softmax(z)
    assert np.all(np.isfinite(sm.probabilities))
    assert np.all(np.isfinite(sm.complement))
    assert np.all(np.isfinite(sm.log_probabilities) | np.isneginf(z))
    np.testing.assert_allclose(sm.probabilities.sum(axis=1), 1.0, atol=1e-14)
    assert np.all(sm.probabilities[np.isneginf(z)] == 0)
    assert np.all(np.isfinite(softmax_jacobian(sm)))


def test_float32_is_computed_in_float32() -> None:
    z = np.array([[1.0, 2.0, 3.0]], np.float32)
    sm = softmax(z)
    assert sm.probabilities.dtype == np.float32
    assert softmax_jacobian(sm).dtype == np.float32
    np.testing.assert_allclose(
        sm.probabilities, softmax(z.astype(np.float64)).probabilities, rtol=1e-6
    )
