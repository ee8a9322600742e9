"""The named hard cases of each suite: where softmax cross-entropy implementations break.

A suite is a versioned, seeded list of cases. Each case is a ready request for one endpoint
(`/v1/cross-entropy`, or `/v1/linear-cross-entropy` for `lm_head`, whose arrays are the hidden
states, the head's weight and bias), with the dtype of the arrays the tested function receives, the
tolerance its outputs are held to, a one-line reason, the loss options it needs and the input
features it needs (`k_dim`, `no_batch`, `probability_targets`).

The logits of a case are exactly representable in the case's dtype: the reference
(/v1/cross-entropy, in float64) is computed from exactly the values the function receives, so a
right float32 implementation is compared with the exact loss of its own float32 inputs and
differs from it only by its own rounding, which the case's tolerance admits.

Where implementations break, and why each case is here:

* exp overflows for logits above ~709 (float64) or ~88 (float32) unless the row's maximum m is
  subtracted first: softmax(z) = exp(z − m) / Σ exp(z − m) [1]_;
* probabilities underflow to 0 for logits ~745 (float64) or ~104 (float32) below the maximum, so
  log a = −inf and ∂L/∂a = −y/a = −inf unless the loss is taken as log-sum-exp (m + log Σ exp(z −
  m)) − z_y and the backward pass is fused into a − y [2]_;
* a large common offset (3e5) cancels exactly when subtracted first, but overflows exp without;
* the options of `F.cross_entropy` [3]_ fold into effective targets q (weights, label smoothing
  spread as ε/C over *all* C classes, ignored rows with q = 0) and into the `mean`'s denominator
  D = Σ w_{y_n} over non-ignored rows; every one of them is a known mistake when left out;
* a float32 sum over 32,000 classes loses digits unless it is pairwise or compensated [4]_.

Registering a suite (for cases of another endpoint too): add a builder to `BUILDERS`, returning a
`Suite` of cases that follow `SuiteCase` (`Case` is `/v1/cross-entropy`'s, `LinearCase`
`/v1/linear-cross-entropy`'s: each brings its own arrays, its `endpoint` and its `request()`).

References
----------
.. [1] N. J. Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., SIAM, 2002,
   §1.14 (overflow avoided by scaling).
.. [2] P. Blanchard, D. J. Higham, N. J. Higham, "Accurately computing the log-sum-exp and
   softmax functions", IMA J. Numer. Anal. 41 (2021), 2311-2330.
.. [3] PyTorch, `torch.nn.functional.cross_entropy`,
   https://pytorch.org/docs/stable/generated/torch.nn.functional.cross_entropy.html
.. [4] N. J. Higham, "The accuracy of floating point summation", SIAM J. Sci. Comput. 14
   (1993), 783-799.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any, Protocol

import ml_dtypes
import numpy as np

CROSS_ENTROPY = "/v1/cross-entropy"
"""The endpoint of the cases of `basics`, `torch` and `kernel`."""
LINEAR_CROSS_ENTROPY = "/v1/linear-cross-entropy"
"""The endpoint of the cases of `lm_head`: the LM head fused with its loss."""

INLINE_MAX_ENTRIES = 4096
"""A case whose logits hold more numbers is listed without its request: fetch it by its URL."""

FLOAT64_TOLERANCE = (1e-9, 1e-7)
"""(atol, rtol) of float64 cases: a right implementation's rounding (|error| ≈ eps·|lse|, 7e-11
at an offset of 3e5) passes; every named mistake changes some output by far more."""
FLOAT32_TOLERANCE = (1e-7, 1e-4)
"""(atol, rtol) of float32 cases: float32 rounding of log-sum-exp over 32,000 classes (≈ log2 C
· eps relative when summed pairwise, as numpy and torch do) passes; a sequential float32 sum
that stagnates (`float32_summation`: ≈ 1e-3) does not."""
SUMMATION_LEAD = 17.3
"""The dominant logit of `float32_summation`, the others within ±0.5 of 0: exp(−17.3 ± 0.5) ≤
5.1e-8 < 2^−24, half an ulp of 1 in float32."""
BFLOAT16_TOLERANCE = (1e-5, 5e-2)
"""(atol, rtol) of bfloat16 cases: outputs rounded to bfloat16 (8 bits) pass, as do torch's
bfloat16 log-softmax and its backward."""

CASTS: dict[str, Any] = {
    "float64": np.float64,
    "float32": np.float32,
    "bfloat16": ml_dtypes.bfloat16,
}
"""The dtypes a case's logits are given in."""
TOLERANCES = {
    "float64": FLOAT64_TOLERANCE,
    "float32": FLOAT32_TOLERANCE,
    "bfloat16": BFLOAT16_TOLERANCE,
}


class Feature(StrEnum):
    """An input layout beyond (N, C) logits with index labels."""

    K_DIM = "k_dim"
    """(N, C, d1, …, dk) logits with (N, d1, …, dk) labels."""
    NO_BATCH = "no_batch"
    """(C,) logits with one label."""
    PROBABILITY_TARGETS = "probability_targets"
    """Labels that are probability rows with the logits' shape."""


REQUEST_INCLUDE = ("loss", "gradient")
"""The outputs a case's request asks for: no C×C Jacobian, which 32,000 classes cannot afford."""

OPTION_DEFAULTS: dict[str, Any] = {
    "reduction": "mean",
    "weight": None,
    "ignore_index": -100,
    "label_smoothing": 0.0,
    "z_loss": 0.0,
    "softcap": None,
}
"""The loss options a tested function may take, with `F.cross_entropy`'s defaults."""
LINEAR_OPTION_DEFAULTS: dict[str, Any] = {
    **OPTION_DEFAULTS,
    "causal_shift": False,
    "denominator": None,
}
"""The options of an LM-head function: those of the loss and the two of LM training."""
LINEAR_REQUEST_INCLUDE = (
    "loss",
    "input_gradient",
    "linear_weight_gradient",
    "linear_bias_gradient",
)
"""The outputs an `lm_head` case's request asks for: the loss and the three gradients."""


class SuiteCase(Protocol):
    """What the suites' routes read of a case, whatever its endpoint."""

    @property
    def name(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def dtype(self) -> str: ...
    @property
    def options(self) -> Mapping[str, Any]: ...
    @property
    def features(self) -> frozenset["Feature"]: ...
    @property
    def tolerance(self) -> tuple[float, float]: ...
    @property
    def large(self) -> bool: ...
    def request(self) -> dict[str, Any]:
        """The ready request body for `endpoint`, arrays as numpy arrays."""
        ...


@dataclass(frozen=True)
class Case:
    """One hard case of `/v1/cross-entropy`: arrays and options of its request, and what it
    needs. Its arrays are made read-only."""

    name: str
    reason: str
    logits: np.ndarray
    labels: np.ndarray
    options: Mapping[str, Any] = field(default_factory=dict)
    """The loss options the case needs (a tested function must accept them)."""
    dtype: str = "float64"
    """The dtype of the logits the tested function receives."""
    features: frozenset[Feature] = frozenset()
    endpoint: str = CROSS_ENTROPY

    def __post_init__(self) -> None:
        self.logits.flags.writeable = False
        self.labels.flags.writeable = False

    @property
    def tolerance(self) -> tuple[float, float]:
        """(atol, rtol) for the function's outputs."""
        return TOLERANCES[self.dtype]

    @property
    def large(self) -> bool:
        """Too large to list inline: its request is fetched by its own URL."""
        return self.logits.size > INLINE_MAX_ENTRIES

    def request(self) -> dict[str, Any]:
        """The ready request: arrays (float64 logits, exact in `dtype`), options, tolerance,
        and the outputs to return (loss and gradient)."""
        labels: Any = int(self.labels) if self.labels.ndim == 0 else self.labels
        atol, rtol = self.tolerance
        fields: dict[str, Any] = {"logits": self.logits, "labels": labels}
        for name, value in self.options.items():
            fields[name] = np.asarray(value, np.float64) if name == "weight" else value
        fields["tolerance"] = {"atol": atol, "rtol": rtol}
        fields["include"] = list(REQUEST_INCLUDE)
        return fields


@dataclass(frozen=True)
class LinearCase:
    """One hard case of `/v1/linear-cross-entropy`: hidden states `input` ((N, d), or (B, T, d)
    with `causal_shift`), the head `linear_weight` (C, d) and optional `linear_bias` (C,), the
    labels and options. Its arrays are made read-only."""

    name: str
    reason: str
    input: np.ndarray
    linear_weight: np.ndarray
    labels: np.ndarray
    linear_bias: np.ndarray | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    """The options the case needs (a tested function must accept them)."""
    dtype: str = "float64"
    """The dtype of the input, weight and bias the tested function receives."""
    features: frozenset[Feature] = frozenset()
    endpoint: str = LINEAR_CROSS_ENTROPY

    def __post_init__(self) -> None:
        for array in (self.input, self.linear_weight, self.labels, self.linear_bias):
            if array is not None:
                array.flags.writeable = False

    @property
    def tolerance(self) -> tuple[float, float]:
        """(atol, rtol) for the function's outputs."""
        return TOLERANCES[self.dtype]

    @property
    def large(self) -> bool:
        """Too large to list inline: its request is fetched by its own URL."""
        return self.input.size + self.linear_weight.size > INLINE_MAX_ENTRIES

    def request(self) -> dict[str, Any]:
        """The ready request: arrays (float64, exact in `dtype`), options, tolerance, and the
        outputs to return (the loss and the three gradients)."""
        atol, rtol = self.tolerance
        fields: dict[str, Any] = {"input": self.input, "linear_weight": self.linear_weight}
        if self.linear_bias is not None:
            fields["linear_bias"] = self.linear_bias
        fields["labels"] = self.labels
        for name, value in self.options.items():
            fields[name] = np.asarray(value, np.float64) if name == "weight" else value
        fields["tolerance"] = {"atol": atol, "rtol": rtol}
        fields["include"] = list(LINEAR_REQUEST_INCLUDE)
        return fields


@dataclass(frozen=True)
class Suite:
    """A named, versioned list of cases."""

    name: str
    version: str
    description: str
    cases: tuple[SuiteCase, ...]

    def case(self, name: str) -> SuiteCase | None:
        """The case called `name`, or None."""
        return next((case for case in self.cases if case.name == name), None)


def exact_in(values: np.ndarray, dtype: str) -> np.ndarray:
    """`values` rounded to `dtype` (to nearest), as float64: numbers the function receives."""
    return np.asarray(values, np.float64).astype(CASTS[dtype]).astype(np.float64)


def _rng(suite: str, index: int) -> np.random.Generator:
    """The seeded generator of one case (the suite's name and the case's position)."""
    return np.random.default_rng([sum(suite.encode()), index])


def _normal(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return np.round(scale * rng.standard_normal(shape), 4)


def _labels(rng: np.random.Generator, rows: int, classes: int) -> np.ndarray:
    return rng.integers(0, classes, rows).astype(np.int64)


def _basics() -> Suite:
    """Index labels, reduction `mean`, float64: the inputs that break textbook code."""
    rng = [_rng("basics", i) for i in range(10)]
    spread = _normal(rng[6], (3, 4))
    spread[1] = [0.5, -799.5, 0.0, -1.0]  # the label logit 800 below the maximum
    dominant = _normal(rng[8], (3, 5))
    dominant[:, 2] += 60.0
    near_1e3 = np.round(
        1e3 * np.sign(rng[5].standard_normal((4, 5))) + rng[5].normal(0, 3, (4, 5)), 3
    )
    cases = (
        Case(
            "small_random",
            "a small random problem, as gradient checks usually use",
            _normal(rng[0], (4, 5)),
            _labels(rng[0], 4, 5),
        ),
        Case(
            "one_sample",
            "N = 1: the mean divides by one, so a missing division hides here and shows elsewhere",
            _normal(rng[1], (1, 5)),
            _labels(rng[1], 1, 5),
        ),
        Case(
            "two_classes",
            "C = 2, the binary case that code indexing classes 1..C-1 gets wrong",
            _normal(rng[2], (5, 2)),
            _labels(rng[2], 5, 2),
        ),
        Case(
            "repeated_labels",
            "every sample has the same label (scatter-adds must accumulate)",
            _normal(rng[3], (6, 4)),
            np.full(6, 2, np.int64),
        ),
        Case(
            "equal_logits",
            "every logit equal: softmax is uniform, the loss is log C",
            np.full((3, 4), 2.5),
            _labels(rng[4], 3, 4),
        ),
        Case(
            "logits_near_1e3",
            "logits near ±1e3: exp overflows in float64 unless the row's maximum is subtracted",
            near_1e3,
            _labels(rng[5], 4, 5),
        ),
        Case(
            "spread_800",
            "a row whose label logit is 800 below its maximum: its probability "
            "underflows to 0 in float64, so log a and -y/a are infinite",
            spread,
            np.array([0, 1, 2], np.int64),
        ),
        Case(
            "offset_3e5",
            "a common offset of 3e5: harmless after subtracting the maximum, exp overflows without",
            np.round(3e5 + _normal(rng[7], (3, 4)), 4),
            _labels(rng[7], 3, 4),
        ),
        Case(
            "dominant_logit",
            "one logit 60 above the rest: probabilities within 1e-26 of 1 and 0, losses near 0",
            dominant,
            np.array([2, 2, 0], np.int64),
        ),
        Case(
            "large_batch",
            "N = 1024: a mean over many rows, fetched by its own URL",
            _normal(rng[9], (1024, 10), 2.0),
            _labels(rng[9], 1024, 10),
        ),
    )
    return Suite(
        "basics",
        "1",
        "Index labels, reduction mean, float64: overflow, underflow, "
        "offsets, tiny batches and the binary case.",
        cases,
    )


def _torch() -> Suite:
    """Everything `F.cross_entropy` takes, in float64."""
    rng = [_rng("torch", i) for i in range(20)]
    probability = Feature.PROBABILITY_TARGETS

    def problem(i: int, rows: int = 5, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
        return _normal(rng[i], (rows, classes)), _labels(rng[i], rows, classes)

    def targets(i: int, rows: int, classes: int) -> np.ndarray:
        raw = rng[i].random((rows, classes))
        rounded: np.ndarray = np.round(raw / raw.sum(axis=1, keepdims=True), 4)
        return rounded

    ignored = problem(3)[0], np.array([1, -100, 3, -100, 0], np.int64)
    all_ignored = problem(6)[0], np.full(5, -100, np.int64)
    soft = targets(9, 5, 4)
    soft[:, -1] = np.round(1.0 - soft[:, :-1].sum(axis=1), 4)
    k_logits = _normal(rng[13], (2, 4, 3, 2))
    cases = (
        Case(
            "weight",
            "class weights: each target is weighted, and mean divides by Σ w_y",
            *problem(0),
            options={"weight": [0.5, 2.0, 1.0, 3.0]},
        ),
        Case(
            "negative_weight",
            "weights of both signs (torch accepts any real weights)",
            _normal(rng[1], (5, 4)),
            np.array([0, 1, 1, 2, 3], np.int64),
            options={"weight": [2.0, 1.5, -0.5, 3.0]},
        ),
        Case(
            "label_smoothing",
            "label smoothing ε = 0.2 spreads ε/C over all C classes, the label's included",
            *problem(2),
            options={"label_smoothing": 0.2},
        ),
        Case(
            "ignore_index",
            "rows labelled -100 are left out of the loss and of mean's denominator",
            *ignored,
            options={"ignore_index": -100},
        ),
        Case(
            "ignore_index_class",
            "ignore_index = 1, a class index: rows labelled 1 are ignored",
            *problem(4),
            options={"ignore_index": 1},
        ),
        Case(
            "ignore_with_smoothing",
            "ignored rows with label smoothing: ignored rows get no smoothing either",
            *ignored,
            options={"ignore_index": -100, "label_smoothing": 0.1},
        ),
        Case(
            "all_ignored_sum",
            "every row ignored under sum: the loss and gradient are 0",
            *all_ignored,
            options={"ignore_index": -100, "reduction": "sum"},
        ),
        Case(
            "weight_ignore_smoothing",
            "weights, ignored rows and smoothing together",
            *ignored,
            options={"weight": [1.0, 0.5, 2.0, 1.5], "ignore_index": -100, "label_smoothing": 0.1},
        ),
        Case("sum", "reduction sum: no division", *problem(7), options={"reduction": "sum"}),
        Case(
            "none",
            "reduction none: per-sample losses; the gradient is that of their sum",
            *problem(8),
            options={"reduction": "none"},
        ),
        Case(
            "probability_targets",
            "probability targets (rows summing to 1)",
            _normal(rng[9], (5, 4)),
            soft,
            features=frozenset({probability}),
        ),
        Case(
            "probability_targets_unnormalised",
            "target rows not summing to 1: the gradient is a·Σq − q, not a − q",
            _normal(rng[10], (4, 4)),
            np.round(rng[10].random((4, 4)), 4),
            features=frozenset({probability}),
        ),
        Case(
            "probability_targets_smoothing_weight",
            "probability targets with weights and smoothing: mean divides by N",
            _normal(rng[11], (4, 4)),
            targets(11, 4, 4),
            options={"weight": [1.0, 2.0, 0.5, 1.0], "label_smoothing": 0.1},
            features=frozenset({probability}),
        ),
        Case(
            "weight_sum",
            "weights under sum",
            *problem(12),
            options={"weight": [1.0, 2.0, 0.5, 1.0], "reduction": "sum"},
        ),
        Case(
            "k_dim",
            "K-dimensional logits (N, C, d1, d2) with labels (N, d1, d2)",
            k_logits,
            _labels(rng[13], 12, 4).reshape(2, 3, 2),
            features=frozenset({Feature.K_DIM}),
        ),
        Case(
            "k_dim_none",
            "K-dimensional logits with reduction none",
            _normal(rng[14], (2, 3, 5)),
            _labels(rng[14], 10, 3).reshape(2, 5),
            options={"reduction": "none"},
            features=frozenset({Feature.K_DIM}),
        ),
        Case(
            "no_batch",
            "one sample without a batch axis: (C,) logits, one label",
            _normal(rng[15], (5,)),
            np.array(3, np.int64),
            features=frozenset({Feature.NO_BATCH}),
        ),
    )
    return Suite(
        "torch",
        "1",
        "Every option and input layout of torch's F.cross_entropy "
        "(weights, ignore_index, smoothing, probability targets, reductions, K-dim, "
        "no batch axis), float64.",
        cases,
    )


def _kernel() -> Suite:
    """Float32 and bfloat16 logits, large vocabularies, z-loss and soft-capping."""
    rng = [_rng("kernel", i) for i in range(10)]

    def logits(i: int, shape: tuple[int, ...], dtype: str, scale: float = 3.0) -> np.ndarray:
        return exact_in(scale * rng[i].standard_normal(shape), dtype)

    padded = _labels(rng[3], 8, 128)
    padded[[1, 4, 5]] = -100
    vocab_labels = _labels(rng[4], 8, 32_000)
    vocab_labels[6] = -100
    # class 0 dominates: every other exp(z − m) ≈ 3e-8 is below half an ulp of the running sum
    # 1.0 and vanishes from a sequential float32 sum, whose 31,999 lost terms make Σ 1e-3 short
    summation = rng[7].uniform(-0.5, 0.5, (4, 32_000))
    summation[:, 0] = SUMMATION_LEAD
    summation = exact_in(summation, "float32")
    cases = (
        Case(
            "float32",
            "float32 logits, 128 classes",
            logits(0, (8, 128), "float32"),
            _labels(rng[0], 8, 128),
            dtype="float32",
        ),
        Case(
            "float32_large",
            "float32 logits near 90: exp overflows float32 (max ~88.7) unless "
            "the maximum is subtracted",
            exact_in(90.0 + logits(1, (4, 64), "float32", 1.0), "float32"),
            _labels(rng[1], 4, 64),
            dtype="float32",
        ),
        Case(
            "float32_underflow",
            "a float32 row whose label logit is 120 below its maximum: its "
            "probability underflows to 0 in float32",
            exact_in(
                np.where(np.arange(16) == 0, 0.0, -120.0) + logits(2, (2, 16), "float32", 1.0),
                "float32",
            ),
            np.array([5, 0], np.int64),
            dtype="float32",
        ),
        Case(
            "ignored_rows",
            "rows labelled ignore_index (-100, padding) in float32",
            logits(3, (8, 128), "float32"),
            padded,
            options={"ignore_index": -100},
            dtype="float32",
        ),
        Case(
            "vocab_32000",
            "32,000 classes in float32 with a padding row",
            logits(4, (8, 32_000), "float32"),
            vocab_labels,
            options={"ignore_index": -100},
            dtype="float32",
        ),
        Case(
            "bfloat16",
            "bfloat16 logits (a kernel computes in float32 from them)",
            logits(5, (8, 256), "bfloat16"),
            _labels(rng[5], 8, 256),
            dtype="bfloat16",
        ),
        Case(
            "bfloat16_vocab_32000",
            "bfloat16 logits over 32,000 classes",
            logits(6, (4, 32_000), "bfloat16"),
            _labels(rng[6], 4, 32_000),
            dtype="bfloat16",
        ),
        Case(
            "float32_summation",
            "one dominant class and 31,999 terms each below half an ulp of the running "
            "sum: a sequential float32 sum drops them all (Σ 1e-3 short), a pairwise one does not",
            summation,
            _labels(rng[7], 4, 32_000),
            dtype="float32",
        ),
        Case(
            "z_loss",
            "z-loss λ = 1e-4: each row adds λ·lse², with lse unshifted",
            logits(8, (8, 128), "float32", 5.0),
            _labels(rng[8], 8, 128),
            options={"z_loss": 1e-4},
            dtype="float32",
        ),
        Case(
            "softcap",
            "soft-capping at 30 with the chain rule's 1 − tanh²(z/30)",
            logits(9, (8, 128), "float32", 20.0),
            _labels(rng[9], 8, 128),
            options={"softcap": 30.0},
            dtype="float32",
        ),
        Case(
            "z_loss_softcap_ignore",
            "z-loss, soft-capping and padding rows together",
            logits(3, (8, 128), "float32", 10.0),
            padded,
            options={"z_loss": 1e-4, "softcap": 30.0, "ignore_index": -100},
            dtype="float32",
        ),
    )
    return Suite(
        "kernel",
        "1",
        "What fused kernels get wrong: float32 and bfloat16 logits, "
        "32,000 classes, z-loss, soft-capping, padding rows.",
        cases,
    )


def _lm_head() -> Suite:
    """The LM head fused with its loss: the inputs that break chunked kernels."""
    rng = [_rng("lm_head", i) for i in range(20)]

    def head(
        i: int, rows: int, d: int, classes: int, dtype: str = "float64", bias: bool = True
    ) -> dict[str, Any]:
        """Random input (rows, d), weight (classes, d) scaled by 1/√d and bias, exact in dtype."""
        arrays: dict[str, Any] = {
            "input": exact_in(_normal(rng[i], (rows, d)), dtype),
            "linear_weight": exact_in(_normal(rng[i], (classes, d), d**-0.5), dtype),
            "labels": _labels(rng[i], rows, classes),
        }
        if bias:
            arrays["linear_bias"] = exact_in(_normal(rng[i], (classes,)), dtype)
        return arrays

    offset = head(3, 4, 6, 8)
    offset["linear_bias"] = np.round(3e5 + offset["linear_bias"], 4)
    near_1e3 = head(4, 4, 4, 6)
    near_1e3["linear_weight"] = np.round(1e3 * near_1e3["linear_weight"], 2)  # logits ~ ±1e3
    spread = head(5, 3, 3, 5, bias=False)
    spread["input"][:, 0] = [0.0, 1.0, 0.0]
    spread["input"][1] = [1.0, 0.0, 0.0]
    spread["linear_weight"][1, 0] = -800.0  # row 1's label logit is ~800 below its maximum
    spread["labels"][1] = 1
    padded = head(6, 12, 6, 10)
    padded["labels"][[0, 1, 2, 9]] = -100  # chunks of 4 hold 1, 4 and 3 tokens
    causal = head(11, 10, 6, 10)
    causal["input"] = causal["input"].reshape(2, 5, 6)
    causal["labels"] = causal["labels"].reshape(2, 5)
    vocab = head(15, 8, 16, 32_000, "float32")
    vocab["labels"][5] = -100
    cases = (
        LinearCase(
            "small_random",
            "a small random head with a bias: six positions, d = 8, ten classes",
            **head(0, 6, 8, 10),
        ),
        LinearCase(
            "one_sample",
            "N = 1: one position, so a mean that is not taken hides here",
            **head(1, 1, 8, 10),
        ),
        LinearCase("two_classes", "C = 2: a head with two rows", **head(2, 5, 8, 2)),
        LinearCase(
            "bias_offset_3e5",
            "a common logit offset of 3e5 through the bias: exp overflows unless the row's "
            "maximum is subtracted",
            **offset,
        ),
        LinearCase(
            "logits_near_1e3",
            "logits near ±1e3 through large weights: exp overflows in float64 without the "
            "max-shift",
            **near_1e3,
        ),
        LinearCase(
            "spread_800",
            "a position whose label logit is ~800 below its maximum (no bias): its probability "
            "underflows to 0 in float64",
            **spread,
        ),
        LinearCase(
            "ignore_index",
            "padding positions labelled -100, unevenly spread over chunks of 4: the mean is "
            "over all kept tokens, not per chunk",
            **padded,
            options={"ignore_index": -100},
        ),
        LinearCase(
            "label_smoothing",
            "label smoothing ε = 0.1 spread over all C classes",
            **head(7, 6, 8, 10),
            options={"label_smoothing": 0.1},
        ),
        LinearCase(
            "weight",
            "class weights: the mean divides by Σ w_y",
            **head(8, 6, 8, 5),
            options={"weight": [0.5, 2.0, 1.0, 3.0, 1.5]},
        ),
        LinearCase(
            "sum", "reduction sum: no division", **head(9, 6, 8, 10), options={"reduction": "sum"}
        ),
        LinearCase(
            "none",
            "reduction none: per-position losses; the gradients are those of their sum",
            **head(10, 6, 8, 10),
            options={"reduction": "none"},
        ),
        LinearCase(
            "causal_shift",
            "input (B, T, d) and labels (B, T): position t predicts label t + 1 of its "
            "sequence, the last position is ignored",
            **causal,
            options={"causal_shift": True},
        ),
        LinearCase(
            "denominator",
            "a micro-batch's mean divided by the step's token count (HF's num_items_in_batch), "
            "not its own",
            **padded,
            options={"ignore_index": -100, "denominator": 20.0},
        ),
        LinearCase(
            "float32",
            "float32 input, weight and bias (a kernel computes in float32)",
            **head(13, 16, 32, 64, "float32"),
            dtype="float32",
        ),
        LinearCase(
            "bfloat16",
            "bfloat16 input, weight and bias (a kernel accumulates in float32)",
            **head(14, 16, 32, 64, "bfloat16"),
            dtype="bfloat16",
        ),
        LinearCase(
            "vocab_32000",
            "a float32 head of 32,000 classes with a padding position, fetched by its own URL",
            **vocab,
            options={"ignore_index": -100},
            dtype="float32",
        ),
    )
    return Suite(
        "lm_head",
        "1",
        "The LM head fused with its loss (/v1/linear-cross-entropy): overflow and underflow "
        "through the head, padding, smoothing, weights, reductions, causal shift, a global "
        "denominator, float32 and bfloat16, 32,000 classes.",
        cases,
    )


BUILDERS: dict[str, Callable[[], Suite]] = {
    "basics": _basics,
    "torch": _torch,
    "kernel": _kernel,
    "lm_head": _lm_head,
}
"""Every suite by name, in the order they are listed."""


@cache
def suite(name: str) -> Suite | None:
    """The suite called `name` (built once: every build gives the same arrays), or None."""
    builder = BUILDERS.get(name)
    return None if builder is None else builder()
