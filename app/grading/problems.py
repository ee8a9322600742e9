"""Seeded cross-entropy problems: the same parameters give the same numbers on every machine.

The seed (an int or a string, taken as its decimal or literal text) becomes the 256-bit entropy

    SHA-256("gradcheck/problem/1" NUL seed)

of a numpy `SeedSequence`, which seeds a `PCG64` bit generator. Only the raw 64-bit words of that
generator are used (`random_raw`), which numpy keeps stable across versions; everything after is
integer arithmetic and one IEEE multiplication, so no platform's `log`/`exp` or numpy's
distribution algorithms can change a problem:

    logits   z = logit_scale·(Σ_{k=1..12} u_k − 6),  u_k = (16-bit integer + ½)/2^16
             (Irwin–Hall: mean 0, variance ≈ 1, |z| ≤ 6·logit_scale), three words per logit
    index labels          y_n = ⌊(word_n >> 32)·C / 2^32⌋                 uniform on 0..C−1
    probability labels    the C gaps between C − 1 sorted cut points drawn on 0..10⁴, over 10⁴
                          (uniform on the simplex, four decimals, each row sums to 1)
"""

import hashlib
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from app.numerics.cross_entropy import Reduction
from app.numerics.softmax import FloatArray

GENERATOR_NAME = "gradcheck-problem/1"
GENERATOR_ALGORITHM = (
    "PCG64(SeedSequence(SHA-256('gradcheck/problem/1' NUL seed))).random_raw; "
    "logits = logit_scale·(sum of 12 16-bit uniforms − 6); index labels = high 32 bits·C >> 32; "
    "probability labels = gaps of C−1 sorted cut points on 0..10000, over 10000"
)
_DOMAIN = b"gradcheck/problem/1\x00"
_UNIFORMS_PER_LOGIT = 12
_PROBABILITY_GRID = 10_000


class LabelType(StrEnum):
    """How a generated problem states its targets."""

    INDEX = "index"
    PROBABILITIES = "probabilities"


@dataclass(frozen=True)
class ProblemSpec:
    """Everything that defines a generated problem; a problem id signs exactly these fields."""

    seed: str
    batch_size: int
    num_classes: int
    label_type: LabelType
    logit_scale: float
    weight: tuple[float, ...] | None
    ignore_index: int
    reduction: Reduction
    label_smoothing: float
    dtype: str


@dataclass(frozen=True)
class GeneratedProblem:
    """The numbers of a problem: logits (N, C) float64 and labels, (N,) int64 or (N, C) float64."""

    logits: FloatArray
    labels: NDArray[np.int64] | FloatArray


def seed_entropy(seed: str) -> int:
    """SHA-256 of the domain tag and the seed's UTF-8 bytes, as a 256-bit integer."""
    return int.from_bytes(hashlib.sha256(_DOMAIN + seed.encode()).digest(), "big")


def _high_bits_below(words: NDArray[np.uint64], bound: int) -> NDArray[np.int64]:
    """⌊(word >> 32)·bound / 2^32⌋: integers uniform on 0..bound−1 (bound < 2^31)."""
    scaled = (words >> np.uint64(32)) * np.uint64(bound) >> np.uint64(32)
    return scaled.astype(np.int64)


def _irwin_hall(words: NDArray[np.uint64], count: int) -> FloatArray:
    """`count` values Σ_{k=1..12} u_k − 6 from 3·count words, each word holding four 16-bit u_k."""
    per_value = words.reshape(count, _UNIFORMS_PER_LOGIT // 4)
    sums = np.zeros(count, np.int64)
    for quarter in range(4):
        digits = (per_value >> np.uint64(16 * quarter)) & np.uint64(0xFFFF)
        sums += digits.sum(axis=1, dtype=np.int64)
    # Σ (k + ½)/2^16 − 6 = (Σ k + 6 − 6·2^16) / 2^16, an exact integer over a power of two
    centred: FloatArray = (sums + (6 - 6 * 65536)).astype(np.float64) / 65536.0
    return centred


def _probability_rows(words: NDArray[np.uint64], rows: int, classes: int) -> FloatArray:
    """Rows of C four-decimal probabilities summing to 1: gaps between sorted cut points."""
    cuts = np.sort(
        _high_bits_below(words, _PROBABILITY_GRID + 1).reshape(rows, classes - 1), axis=1
    )
    edges = np.concatenate(
        [np.zeros((rows, 1), np.int64), cuts, np.full((rows, 1), _PROBABILITY_GRID)], axis=1
    )
    gaps: FloatArray = np.diff(edges, axis=1).astype(np.float64) / _PROBABILITY_GRID
    return gaps


def generate_problem(spec: ProblemSpec) -> GeneratedProblem:
    """The logits and labels of `spec`, bit for bit the same on every run (see module doc)."""
    generator = np.random.PCG64(np.random.SeedSequence(seed_entropy(spec.seed)))
    rows, classes = spec.batch_size, spec.num_classes
    entries = rows * classes
    logit_words = generator.random_raw(entries * _UNIFORMS_PER_LOGIT // 4)
    logits = (_irwin_hall(logit_words, entries) * spec.logit_scale).reshape(rows, classes)
    labels: NDArray[np.int64] | FloatArray
    if spec.label_type is LabelType.INDEX:
        labels = _high_bits_below(generator.random_raw(rows), classes)
    else:
        labels = _probability_rows(generator.random_raw(rows * (classes - 1)), rows, classes)
    return GeneratedProblem(logits, labels)
