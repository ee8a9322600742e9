"""A small problem with textbook reference values, shared by the grading tests."""

import numpy as np

from app.grading.grade import Reference
from app.numerics.cross_entropy import Reduction, index_targets

LOGITS = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0], [0.0, 0.0, 0.0], [-1.0, 3.0, 0.5]])
LABELS = np.array([0, 1, 2, 1])


def textbook_softmax(logits: np.ndarray) -> np.ndarray:
    """exp(z) / Σ exp(z), the plain formula (independent of app.numerics.softmax)."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probabilities


PROBABILITIES = textbook_softmax(LOGITS)
ONE_HOT = np.eye(3)[LABELS]
GRADIENT = (PROBABILITIES - ONE_HOT) / len(LABELS)  # mean reduction, one-hot targets
LOSS = float(-np.log(PROBABILITIES[np.arange(4), LABELS]).mean())


def reference(reduction: Reduction = Reduction.MEAN) -> Reference:
    targets = index_targets(
        LABELS,
        3,
        weight=None,
        ignore_index=-100,
        label_smoothing=0.0,
        reduction=reduction,
        dtype=np.float64,
    )
    return Reference(LOGITS, targets, reduction)
