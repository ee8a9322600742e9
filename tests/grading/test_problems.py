"""Seeded problems: pinned golden values, determinism, and the distributions they promise."""

import dataclasses

import numpy as np
import pytest

from app.grading.problems import LabelType, ProblemSpec, generate_problem, seed_entropy
from app.numerics.cross_entropy import Reduction

SPEC = ProblemSpec(
    seed="golden",
    batch_size=2,
    num_classes=3,
    label_type=LabelType.INDEX,
    logit_scale=1.0,
    weight=None,
    ignore_index=-100,
    reduction=Reduction.MEAN,
    label_smoothing=0.0,
    dtype="float64",
)


def test_golden_index_problem() -> None:
    """Pinned: these numbers must never change, or every issued problem id would grade wrongly."""
    problem = generate_problem(SPEC)
    assert problem.logits.tolist() == [
        [-0.1090545654296875, -0.73089599609375, 1.269927978515625],
        [0.002716064453125, 1.144439697265625, 0.4490203857421875],
    ]
    assert problem.labels.tolist() == [2, 1]


def test_golden_probability_problem() -> None:
    spec = dataclasses.replace(
        SPEC, num_classes=4, label_type=LabelType.PROBABILITIES, logit_scale=2.5
    )
    problem = generate_problem(spec)
    assert problem.logits.tolist() == [
        [-0.27263641357421875, -1.827239990234375, 3.1748199462890625, 0.0067901611328125],
        [2.8610992431640625, 1.1225509643554688, 2.3411941528320312, -4.776153564453125],
    ]
    assert problem.labels.tolist() == [
        [0.706, 0.1065, 0.1125, 0.075],
        [0.1936, 0.2025, 0.393, 0.2109],
    ]


def test_golden_seed_entropy() -> None:
    assert seed_entropy("golden") == int(
        "2786e435777841cadabe2f0ac6296af7c02dc86b5fa0a942207414afacc9887b", 16
    )


def test_same_spec_same_numbers_and_other_seeds_differ() -> None:
    first, again = generate_problem(SPEC), generate_problem(SPEC)
    np.testing.assert_array_equal(first.logits, again.logits)
    np.testing.assert_array_equal(first.labels, again.labels)
    other = generate_problem(dataclasses.replace(SPEC, seed="golden2"))
    assert not np.array_equal(first.logits, other.logits)


def test_logit_scale_only_scales() -> None:
    base = generate_problem(SPEC).logits
    scaled = generate_problem(dataclasses.replace(SPEC, logit_scale=8.0)).logits
    np.testing.assert_array_equal(scaled, 8.0 * base)


def test_logits_are_nearly_standard_normal_and_bounded() -> None:
    spec = dataclasses.replace(SPEC, seed="moments", batch_size=1024, num_classes=100)
    logits = generate_problem(spec).logits
    assert abs(logits.mean()) < 0.01  # standard error 0.001
    assert logits.std() == pytest.approx(1.0, abs=0.01)
    assert np.abs(logits).max() <= 6.0
    # Irwin–Hall(12) kurtosis is 3 − 1.2/12 = 2.9
    kurtosis = ((logits - logits.mean()) ** 4).mean() / logits.var() ** 2
    assert kurtosis == pytest.approx(2.9, abs=0.05)
    # every logit is a multiple of 2^-16: exact in float32 too
    np.testing.assert_array_equal(logits * 65536, np.round(logits * 65536))


def test_index_labels_cover_every_class_uniformly() -> None:
    spec = dataclasses.replace(SPEC, seed="labels", batch_size=70_000, num_classes=7)
    labels = generate_problem(spec).labels
    assert labels.dtype == np.int64
    counts = np.bincount(labels, minlength=7)
    assert counts.size == 7
    assert np.all(np.abs(counts - 10_000) < 5 * 100)  # ±5 standard deviations


def test_probability_labels_are_four_decimal_rows_summing_to_one() -> None:
    spec = dataclasses.replace(
        SPEC, seed="rows", batch_size=500, num_classes=5, label_type=LabelType.PROBABILITIES
    )
    labels = generate_problem(spec).labels
    assert labels.shape == (500, 5)
    assert np.all(labels >= 0)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(labels * 1e4, np.round(labels * 1e4), atol=1e-9)
    # uniform on the simplex: each entry has mean 1/C
    np.testing.assert_allclose(labels.mean(axis=0), 0.2, atol=0.03)
