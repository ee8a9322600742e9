"""`max_ulp_error` is measured at the scale of each entry's row: |got − expected| /
ulp(max(|expected|, s)), s the row's largest |expected| (the whole output's for an all-zero row,
its own for a single number). On torch's own float32 and bfloat16 gradients (the reference
implementation, checked against torch float64) a right gradient is a few ulps off and a real
mistake tens or more, as docs/verify-a-kernel.md says."""

from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest

from app.numerics.candidate import compare_output, ulp
from tests.helpers import require_module

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
IGNORE = -100


def test_an_entry_far_below_its_row_is_measured_at_the_rows_scale() -> None:
    # the entry: exact -2.8e-12, computed -9.3e-13 by cancellation, beside -0.0173
    expected = np.array([[0.0173, -0.0173, -2.8e-12]])
    got = np.array([[0.0173, -0.0173, -9.3e-13]]).astype(ml_dtypes.bfloat16)
    check = compare_output(got, expected, atol=1e-5, rtol=5e-2)
    worst = np.abs(got.astype(np.float64) - expected).max()
    assert check.max_ulp_error == pytest.approx(worst / float(ulp(np.array(0.0173), BFLOAT16)))
    assert check.max_ulp_error is not None and check.max_ulp_error < 1
    assert float(ulp(np.array(2.8e-12), BFLOAT16)) < 1e-13  # its own ulp would say ~100


def test_an_all_zero_row_is_measured_at_the_whole_outputs_scale() -> None:
    expected = np.array([[0.25, -0.25, 0.0], [0.0, 0.0, 0.0]])  # row 1 ignored: all zero
    got = np.array([[0.25, -0.25, 0.0], [0.1, -0.05, -0.05]], dtype=np.float32)
    check = compare_output(got, expected, atol=1e-8, rtol=1e-5)
    spacing = float(ulp(np.array(0.25), np.dtype(np.float32)))
    assert check.max_ulp_error == pytest.approx(float(np.float32(0.1)) / spacing)
    assert check.max_ulp_error is not None and 1e5 < check.max_ulp_error < 1e8


def test_a_single_number_uses_its_own_magnitude() -> None:
    expected = np.array(3e-4)
    got = np.array(3e-4 + 2.0**-40)
    check = compare_output(got, expected, atol=0, rtol=0)
    assert check.max_ulp_error == pytest.approx(2.0**-40 / float(ulp(expected, np.dtype(float))))


def test_each_row_has_its_own_scale() -> None:
    expected = np.array([[1.0, -1.0], [1e-6, -1e-6]])
    got = expected + np.array([[0.0, 0.0], [2.0**-60, 0.0]])
    check = compare_output(got, expected, atol=0, rtol=1)
    assert check.max_ulp_error == pytest.approx(2.0**-60 / float(ulp(np.array(1e-6), got.dtype)))


# ----- torch's own gradients ------------------------------------------------------------------


def _torch() -> Any:
    return require_module("torch")


def torch_gradient(
    logits: npt.NDArray[Any], labels: npt.NDArray[np.int64], dtype: str, **options: Any
) -> npt.NDArray[Any]:
    """d F.cross_entropy(logits, labels, **options) / d logits computed by torch in `dtype`
    (the logits must be exact in it), as numpy (bfloat16 as ml_dtypes.bfloat16)."""
    torch = _torch()
    z = torch.tensor(logits, dtype=torch.float64).to(getattr(torch, dtype)).requires_grad_()
    torch.nn.functional.cross_entropy(
        z, torch.tensor(labels), ignore_index=IGNORE, **options
    ).backward()
    if dtype == "bfloat16":
        return np.asarray(z.grad.view(torch.int16).numpy()).view(ml_dtypes.bfloat16)
    return np.asarray(z.grad.numpy())


def problem(classes: int, scale: float, dtype: Any, seed: int = 0) -> tuple[Any, Any]:
    """`scale`·normal logits exactly representable in `dtype` (the reference is then the exact
    gradient of the very logits torch saw), and labels with every 7th position ignored."""
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal((16, classes))).astype(dtype).astype(np.float64)
    labels = rng.integers(0, classes, 16)
    labels[::7] = IGNORE
    return logits, labels


def largest_probability(logits: npt.NDArray[np.float64]) -> float:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return float((e / e.sum(axis=1, keepdims=True)).max())


def ulps(got: npt.NDArray[Any], reference: npt.NDArray[np.float64]) -> float:
    value = compare_output(got, reference, atol=0, rtol=1).max_ulp_error
    assert value is not None
    return value


CASES = [(10, 2.0), (1000, 3.0), (32_000, 5.0)]
"""(C, logit scale): rows whose largest probability stays below 0.99 (not saturated)."""


@pytest.mark.torch
@pytest.mark.parametrize(("classes", "scale"), CASES)
def test_torchs_own_float32_gradient_is_a_few_ulps_and_a_mistake_thousands(
    classes: int, scale: float
) -> None:
    logits, labels = problem(classes, scale, np.float32)
    assert largest_probability(logits) < 0.99
    reference = torch_gradient(logits, labels, "float64")
    right = ulps(torch_gradient(logits, labels, "float32"), reference)
    # a few ulps; over 32,000 classes, a few tens (each row's sum of exponentials rounds)
    assert right <= (64 if classes > 1000 else 4)
    smoothed = torch_gradient(logits, labels, "float32", label_smoothing=0.01)
    unzeroed = torch_gradient(logits, labels, "float32")
    unzeroed[labels == IGNORE] = unzeroed[1]  # ignored rows left with a row's values
    for mistake in (smoothed, unzeroed):
        assert ulps(mistake, reference) >= 1000


@pytest.mark.torch
@pytest.mark.parametrize(("classes", "scale"), CASES)
def test_torchs_own_bfloat16_gradient_is_within_an_ulp_and_a_mistake_tens(
    classes: int, scale: float
) -> None:
    logits, labels = problem(classes, scale, ml_dtypes.bfloat16)
    assert largest_probability(logits) < 0.99
    reference = torch_gradient(logits, labels, "float64")
    own = torch_gradient(logits, labels, "bfloat16")
    cast = torch_gradient(logits, labels, "float32").astype(ml_dtypes.bfloat16)
    assert ulps(own, reference) <= 1.0
    assert ulps(cast, reference) <= 0.5 + 1e-3  # correctly rounded
    softcap = 5.0 * scale  # the soft-cap's chain rule forgotten: y = c·tanh(z/c), dy/dz left out
    torch = _torch()
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    capped = softcap * torch.tanh(z / softcap)
    loss = torch.nn.functional.cross_entropy(capped, torch.tensor(labels), ignore_index=IGNORE)
    (dcapped,) = torch.autograd.grad(loss, capped, retain_graph=True)
    loss.backward()
    no_chain_rule = dcapped.numpy().astype(ml_dtypes.bfloat16)
    assert ulps(no_chain_rule, z.grad.numpy()) >= 10


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_saturated_row_is_the_documented_exception(dtype: str) -> None:
    """A row whose label holds all but ~1e-5 of the probability: a_y − 1 is a cancellation the
    output's precision cannot carry, and torch (a_y formed, then 1 subtracted) is tens of ulps
    off or more, as the page says."""
    kind = np.float32 if dtype == "float32" else ml_dtypes.bfloat16
    logits = np.array([[12.0, 0.0, 0.5, -1.0]]).astype(kind).astype(np.float64)
    labels = np.array([0])
    assert 1 - largest_probability(logits) < 1e-4
    reference = torch_gradient(logits, labels, "float64")
    assert ulps(torch_gradient(logits, labels, dtype), reference) >= 10
