"""Request and response models of the compute endpoints (/v1/softmax, /v1/cross-entropy).

Requests are validated from the raw body by the body dependency (`app.api.deps`), then turned
into numpy problems in `app.api.inputs`. Responses are encoded straight from numpy
(`app.api.encoding`); the response models here document their schema.
"""

from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from app.numerics.candidate import DEFAULT_TOLERANCE
from app.numerics.cross_entropy import Reduction
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import Output

MAX_AXES = 8
"""Most axes of an array in a request: (N, C, d1, …, d6)."""
AXES_TAGS = tuple(f"axes{count}" for count in range(MAX_AXES + 1))
UNION_TAGS = frozenset(AXES_TAGS)
"""Union tags show up in pydantic's error locations; errors.py strips them."""

StrictNumber = Annotated[float, Field(strict=True)]
StrictInteger = Annotated[int, Field(strict=True)]
FiniteNumber = Annotated[float, Field(strict=True, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]


LOGITS_NOT_AN_ARRAY = "must be an array: (N, C), (N, C, d1, …, dk) or (C,), not a single number"


def _axes(value: Any) -> str:
    """The tag of a JSON array's number of axes, read from its first elements (a ragged or
    mixed array is refused later, naming the position)."""
    count = 0
    while isinstance(value, list) and count < MAX_AXES:
        count += 1
        value = value[0] if value else None
    return AXES_TAGS[count]


def _nested(element: Any, axes: int) -> Any:
    """list[…list[element]…] with `axes` levels, each stopping at its first bad element
    (`fail_fast`: 300,000 bad labels make one error, not 300,000; no slower when valid)."""
    kind = element
    for _ in range(axes):
        kind = Annotated[list[kind], Field(fail_fast=True)]  # type: ignore[valid-type]
    return kind


def _arrays(element: Any, smallest: int) -> Any:
    """A union of nested lists of `element` with `smallest` to MAX_AXES axes, told apart by
    their depth (each member a plain list type, so pydantic's fast list validation applies)."""
    members = tuple(
        Annotated[_nested(element, axes), Tag(AXES_TAGS[axes])]
        for axes in range(smallest, MAX_AXES + 1)
    )
    return Union[members]  # noqa: UP007 (a union built at run time)


if TYPE_CHECKING:  # the unions below are built at run time; to a type checker they are lists
    Logits = list[Any]
    Labels = int | list[Any]
else:
    Logits = Annotated[
        _arrays(StrictNumber, 1),
        Discriminator(
            _axes,
            custom_error_type="array_type",
            custom_error_message=LOGITS_NOT_AN_ARRAY,
        ),
        Field(
            description="Logits z with the class axis at 1, as in torch's F.cross_entropy: "
            "(N, C) for N samples of C ≥ 2 classes, (N, C, d1, …, dk) for K-dimensional inputs "
            "(segmentation, sequences), or (C,) for one sample without a batch axis. Finite "
            "numbers, or -Infinity to mask a class (each position keeps a finite logit).",
            examples=[[[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]]],
        ),
    ]

    Labels = Annotated[
        Annotated[StrictInteger, Tag(AXES_TAGS[0])] | _arrays(StrictInteger | StrictNumber, 1),
        Discriminator(_axes),
        Field(
            description="Class indices with the logits' shape without the class axis ((N,), "
            "(N, d1, …, dk), or one integer for logits without a batch axis; a label equal to "
            "ignore_index is ignored), or target probabilities with the logits' own shape (entries "
            "≥ 0, need not sum to 1). As in torch, labels are probabilities exactly when they have "
            "as many axes as the logits.",
            examples=[[0, 1]],
        ),
    ]


class FiniteDifferenceOptions(BaseModel):
    """How the numeric derivative is taken."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        Method.CENTRAL,
        description="central: (f(z+h) − f(z−h))/2h; forward: (f(z+h) − f(z))/h; five_point: "
        "(f(z−2h) − 8f(z−h) + 8f(z+h) − f(z+2h))/12h; complex_step: Im f(z+ih)/h.",
    )
    step: Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)] | None = Field(
        None,
        description="A fixed step h for every element. Default, for a stencil of order p: "
        "eps^(1/(p+1))·max(1, r)^(1/(p+1)) with r = max z − min z of the row (softmax is "
        "shift-invariant: the row's spread, not |z|, sets its scale), at least 4 ulp(z); "
        "1e-20 for the complex step.",
    )


class GradientFiniteDifferenceOptions(FiniteDifferenceOptions):
    """How the numeric gradient is taken: by element, or along random directions."""

    directions: int | None = Field(
        None,
        strict=True,
        ge=1,
        le=1000,
        description="Check the gradient along k random unit directions v instead of element by "
        "element: the numeric directional derivative of L (the method's stencil along v) "
        "against ⟨∇L, v⟩, as jax's check_grads does, at O(k·N·C) cost. The response then "
        "carries `directional_derivatives` and no `numeric_gradient`. Unset: by element, unless "
        "that would take more than GRADCHECK_NUMERIC_GRADIENT_MAX_EVALUATIONS evaluations (then "
        "8 directions; the check says which was used).",
    )


class ToleranceOptions(BaseModel):
    """The element-wise agreement test |analytic − numeric| ≤ atol + rtol·|numeric|."""

    model_config = ConfigDict(extra="forbid")

    atol: NonNegative = Field(1e-5, description="Absolute tolerance (gradcheck's default).")
    rtol: NonNegative = Field(1e-3, description="Relative tolerance (gradcheck's default).")


Dtype = Literal["float64", "float32"]
DTYPE_DESCRIPTION = (
    "Precision of every computation: float64, or float32 to see why float32 gradient checks fail."
)
NUMERIC_DESCRIPTION = "How the numeric derivative is taken: method and step h."
TOLERANCE_DESCRIPTION = "The agreement test |analytic − numeric| ≤ atol + rtol·|numeric|."

CROSS_ENTROPY_DEFAULT_INCLUDE = (
    Output.PROBABILITIES,
    Output.LOSS,
    Output.GRADIENT,
    Output.NUMERIC_GRADIENT,
    Output.JACOBIAN,
)
"""A tuple, as every include: pydantic deep-copies a mutable default on every request that
leaves it out (a tuple is documented as the same JSON array)."""


CANDIDATE_VALUE_DESCRIPTION = (
    "Your value, in the shape the response gives it. NaN, Infinity and -Infinity are allowed "
    "(an overflowed softmax is an answer to diagnose); wrong shapes, strings or missing rows are "
    "reported in `candidate_check`, not refused."
)


def _candidate_field(shape: str) -> Any:
    return Field(None, description=f"{shape}. {CANDIDATE_VALUE_DESCRIPTION}")


class SoftmaxCandidate(BaseModel):
    """Your own softmax outputs, to be checked against the exact reference."""

    model_config = ConfigDict(extra="forbid")

    probabilities: Any = _candidate_field("N×C probabilities a = softmax(z)")
    log_probabilities: Any = _candidate_field("N×C log a (null where a logit is -Infinity)")
    jacobian: Any = _candidate_field("N×C×C Jacobian ∂a_i/∂z_j")


class LossCandidate(SoftmaxCandidate):
    """Your own cross-entropy outputs, to be checked against the exact reference."""

    loss: Any = _candidate_field("The reduced loss (N numbers for reduction none)")
    losses: Any = _candidate_field("The N per-sample losses")
    gradient: Any = _candidate_field("N×C gradient of the reduced loss")
    hessian: Any = _candidate_field("N×C×C Hessian blocks of the reduced loss")


CANDIDATE_DESCRIPTION = (
    "Your own outputs (any of them), computed by your code: each is compared with the exact "
    "reference within `tolerance`, and a wrong one is explained by the mistake that produces it "
    "(`candidate_check.diagnoses`). It changes no other output."
)


class SoftmaxRequest(BaseModel):
    """Softmax of a batch of logits, with its Jacobian and optionally a numeric check of it."""

    model_config = ConfigDict(extra="forbid")

    logits: Logits
    dim: StrictInteger | None = Field(
        None,
        description="The axis softmax normalises over (negative counts from the end). Default: "
        "the class axis, 1, or 0 for logits with one axis.",
    )
    dtype: Dtype = Field("float64", description=DTYPE_DESCRIPTION)
    include: tuple[
        Literal["probabilities", "log_probabilities", "jacobian", "numeric_jacobian"], ...
    ] = Field(
        ("probabilities", "jacobian"),
        description="Outputs to return: probabilities, log_probabilities, jacobian "
        "(∂a_i/∂z_j = a_i(δ_ij − a_j)), numeric_jacobian (adds `jacobian_check`).",
    )
    numeric: FiniteDifferenceOptions = Field(
        default_factory=FiniteDifferenceOptions, description=NUMERIC_DESCRIPTION
    )
    tolerance: ToleranceOptions = Field(
        default_factory=ToleranceOptions, description=TOLERANCE_DESCRIPTION
    )
    candidate: SoftmaxCandidate | None = Field(None, description=CANDIDATE_DESCRIPTION)


class LossOptions(BaseModel):
    """The loss options of PyTorch's `F.cross_entropy`, with the same semantics."""

    model_config = ConfigDict(extra="forbid")

    weight: list[FiniteNumber] | None = Field(
        None,
        fail_fast=True,
        description="Per-class weights w (length C): any finite numbers, negative ones included, "
        "as torch accepts them.",
    )
    ignore_index: int = Field(
        -100,
        strict=True,
        ge=-(2**63),
        lt=2**63,
        description="An index label equal to this marks an ignored sample.",
    )
    reduction: Reduction = Field(
        Reduction.MEAN,
        description="mean: Σ loss_n / D with D = Σ w_{y_n} over non-ignored samples (index "
        "labels) or N (probability labels); sum: Σ loss_n; none: the N per-sample losses.",
    )
    label_smoothing: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, le=1)] = Field(
        0.0, description="ε: the target becomes (1 − ε)·y + ε/C."
    )


class CrossEntropyRequest(LossOptions):
    """Cross-entropy of a batch, with its analytic and numeric gradient and their agreement."""

    logits: Logits
    labels: Labels
    dtype: Dtype = Field("float64", description=DTYPE_DESCRIPTION)
    numeric: GradientFiniteDifferenceOptions = Field(
        default_factory=GradientFiniteDifferenceOptions, description=NUMERIC_DESCRIPTION
    )
    z_loss: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)] = Field(
        0.0,
        description="λ of the z-loss (PaLM; Liger-Kernel's lse_square_scale): each non-ignored "
        "position's loss gains λ·(log Σ_c exp z_c)²; for `mean` this term is divided by the "
        "number of non-ignored positions, unweighted, while the cross-entropy keeps torch's "
        "denominator.",
    )
    softcap: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=1e-6)] | None = Field(
        None,
        description="Logit soft-capping (Gemma 2): the logits are replaced by "
        "softcap·tanh(z / softcap) before everything else; every derivative is with respect to "
        "the raw logits. At least 1e-6 (a smaller cap makes every logit ±softcap).",
    )
    tolerance: ToleranceOptions = Field(
        default_factory=ToleranceOptions, description=TOLERANCE_DESCRIPTION
    )
    include: tuple[Output, ...] = Field(
        CROSS_ENTROPY_DEFAULT_INCLUDE,
        description="Outputs to return. Default: probabilities, loss, gradient, "
        "numeric_gradient (adds `gradient_check`), jacobian. On request also: "
        "log_probabilities, numeric_jacobian (adds `jacobian_check`), hessian, numeric_hessian "
        "(adds `hessian_check`), hessian_vector_product (with `vector`).",
    )
    denominator: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=1e-12)] | None = Field(
        None,
        description="With reduction mean only: replaces the mean's divisor D (and the z-loss's) "
        "by this number (at least 1e-12: 1/D must stay finite), HF's num_items_in_batch. With "
        "it the rows of a batch are independent: a problem too large for one request can be "
        "sent by blocks of rows, whose gradient rows are those of the whole and whose losses "
        "add up to its loss.",
    )
    vector: Logits | None = Field(
        None,
        description="v, with the logits' shape: with `hessian_vector_product` in include, the "
        "response holds H·v (one C-vector per position, H_n·v_n), computed without forming H.",
    )
    candidate: LossCandidate | None = Field(None, description=CANDIDATE_DESCRIPTION)


# ----- responses (documentation of what app.api.encoding writes) -----

Array = list[Any]
"""A nested JSON array of numbers (its shape is stated by each field)."""


class MismatchModel(BaseModel):
    """One element outside the tolerance."""

    index: list[int] = Field(description="Position in the checked array, e.g. [n, j].")
    analytic: float = Field(description="The analytic derivative at that position.")
    numeric: float = Field(description="The numeric derivative at that position.")


class CheckModel(BaseModel):
    """Agreement of the analytic and numeric derivative, element-wise."""

    passed: bool = Field(description="Every element satisfies |a − n| ≤ atol + rtol·|n|.")
    max_abs_error: float = Field(description="max |a − n|.")
    max_rel_error: float = Field(description="cs231n: max |a − n| / max(1e-8, |a| + |n|).")
    mismatches: int = Field(description="How many elements fail the tolerance test.")
    checked: int = Field(description="How many elements were compared.")
    atol: float = Field(description="The absolute tolerance used.")
    rtol: float = Field(description="The relative tolerance used.")
    method: Method = Field(description="The finite-difference method used.")
    step: float = Field(description="The base step h (see step_rule).")
    step_rule: str = Field(description="How the step of each element was chosen.")
    step_min: float = Field(description="The smallest step used for any element.")
    step_max: float = Field(description="The largest step used for any element.")
    estimated_truncation_error: float = Field(
        description="≈ c·h^p·|f^(p+1)|, largest over the elements, for the step used."
    )
    estimated_rounding_error: float = Field(
        description="≈ (Σ|w|)·eps·|f|/h (eps·|f'| for the complex step), largest over elements."
    )
    worst_mismatches: list[MismatchModel] = Field(description="Up to 5 failing elements.")
    directions: int | None = Field(
        None,
        description="k when the check compared k directional derivatives (then the indices are "
        "the directions'); absent when it compared every element.",
    )
    message: str = Field(description="The verdict in words.")


CandidateNumber = float | Literal["NaN", "Infinity", "-Infinity"] | None


class CandidateEntry(BaseModel):
    """One entry of your output outside the tolerance."""

    index: list[int] = Field(description="Position in the output, e.g. [n, j].")
    expected: float | Literal["-Infinity"] = Field(description="The exact reference value.")
    got: CandidateNumber = Field(
        description='Your value ("NaN", "Infinity" or "-Infinity" when not finite).'
    )


class CandidateOutputCheck(BaseModel):
    """How one of your outputs compares with the reference."""

    passed: bool = Field(description="Read, and every entry within atol + rtol·|expected|.")
    checked: int = Field(description="How many entries were compared (0 if it was not read).")
    mismatches: int = Field(description="How many entries are outside the tolerance.")
    nonfinite: int = Field(description="How many of your entries are NaN or ±Infinity.")
    max_abs_error: float | None = Field(
        description="max |got − expected|; null when taken over a non-finite entry."
    )
    max_rel_error: float | None = Field(
        description="max |got − expected| / max(1e-8, |got| + |expected|) (cs231n); null "
        "when taken over a non-finite entry."
    )
    max_ulp_error: float | None = Field(
        description="max |got − expected| / ulp(max(|expected|, s)), in units in the last place "
        "of your values' own precision, s being the largest |expected| of the entry's row (one "
        "position's C values, C × C block or loss; the whole output's when that row is all "
        "zero; a single number uses its own |expected|): a kernel computes a row from the same "
        "sums, so its rounding is a few ulps at the row's scale. null when taken over a "
        "non-finite entry."
    )
    worst: list[CandidateEntry] = Field(description="Up to 5 entries outside the tolerance.")
    defect: str | None = Field(None, description="Why the value could not be read, if so.")


class DiagnosisModel(BaseModel):
    """A named mistake that produces your numbers."""

    code: str = Field(description="The mistake, e.g. not_divided, a_minus_y, overflow.")
    output: str = Field(description="The output it was found in, e.g. gradient.")
    message: str = Field(description="What was done and what the right step is, with a link.")
    evidence: str = Field(description="How it was recognised.")
    indistinguishable_from: list[str] = Field(
        description="Other mistakes that give the same numbers on this input."
    )


TOLERANCE_TABLE = ", ".join(
    f"{dtype} {atol:g} / {rtol:g}" for dtype, (atol, rtol) in DEFAULT_TOLERANCE.items()
)


class AppliedTolerance(BaseModel):
    """The tolerance applied: an entry passes where |got − expected| ≤ atol + rtol·|expected|."""

    atol: float = Field(description="The absolute tolerance applied.")
    rtol: float = Field(description="The relative tolerance applied.")


class CandidateCheckModel(BaseModel):
    """Your outputs against the exact reference, and the mistakes that explain them."""

    passed: bool = Field(description="Every output you sent was read and passes.")
    outputs: dict[str, CandidateOutputCheck] = Field(description="One check per output sent.")
    diagnoses: list[DiagnosisModel] = Field(
        description="The most likely mistake first: one per wrong output, or two for an output "
        "that two mistakes at once explain (a scale or sign mistake with another); empty when "
        "the candidate passes or when no known mistake explains it (never a guess)."
    )
    notes: list[str] = Field(description="Remarks on precision and unexplained outputs.")
    tolerance: AppliedTolerance = Field(
        description="The tolerance every output was held to: the request's `tolerance`, or, "
        "for outputs sent as .npz arrays without one, the row of the least precise of them in "
        f"the per-dtype table ({TOLERANCE_TABLE}; atol / rtol)."
    )


class DirectionalModel(BaseModel):
    """The gradient along k random unit directions v_i."""

    numeric: list[float] = Field(description="(L(z + h v_i) − L(z − h v_i)) / 2h, or the method's.")
    analytic: list[float] = Field(description="⟨∇L, v_i⟩ from the analytic gradient.")
    seed: int = Field(
        description="v_i is the i-th draw of numpy's default_rng(seed).standard_normal(shape, "
        "float32), 0 on masked logits, scaled to unit norm."
    )


class SoftmaxResponse(BaseModel):
    """Softmax outputs in the logits' own shape; arrays not asked for in `include` are absent.

    Shapes, for logits (N, C, d1, …, dk) (k ≥ 0) or (C,): probabilities like the logits; a
    Jacobian (N, d1, …, dk, C, C), one C × C block per position, or (C, C)."""

    batch_size: int = Field(description="N, the number of samples (1 without a batch axis).")
    num_classes: int = Field(description="C, the number of classes.")
    spatial_shape: list[int] = Field(
        description="[d1, …, dk] of K-dimensional inputs; [] for (N, C) or (C,)."
    )
    dtype: Dtype = Field(description="The precision the results were computed in.")
    probabilities: Array | None = Field(None, description="a = softmax(z), the logits' shape.")
    log_probabilities: Array | None = Field(
        None, description="log a, the logits' shape; null where the logit is -Infinity (log 0)."
    )
    jacobian: Array | None = Field(
        None,
        description="One C × C block per position, [..., i, j] = ∂a_i/∂z_j = a_i(δ_ij − a_j).",
    )
    numeric_jacobian: Array | None = Field(
        None, description="The finite-difference Jacobian (with `numeric_jacobian` in include)."
    )
    jacobian_check: CheckModel | None = Field(
        None, description="Agreement of `jacobian` and `numeric_jacobian`."
    )
    candidate_check: CandidateCheckModel | None = Field(
        None, description="With `candidate`: your outputs against the exact reference."
    )


class CrossEntropyResponse(SoftmaxResponse):
    """Cross-entropy outputs in torch's shapes; arrays not asked for in `include` are absent."""

    reduction: Reduction = Field(description="The reduction applied to the per-position losses.")
    loss: float | Array | None = Field(
        None,
        description="The reduced loss (a number), or the per-position losses for `none` (the "
        "shape of `losses`).",
    )
    losses: float | Array = Field(
        description="loss = −Σ_c q_c log a_c at every position: the logits' shape without the "
        "class axis (a number without a batch axis)."
    )
    gradient: Array | None = Field(
        None,
        description="Analytic dL/dz = (a·Σq − q)/D, the logits' shape; for `none`, the "
        "gradient of each position's own loss.",
    )
    numeric_gradient: Array | None = Field(
        None, description="Finite-difference dL/dz of the same (reduced) loss."
    )
    hessian: Array | None = Field(
        None,
        description="∂²L/∂z_n∂z_n of the reduced loss, one C × C block per position: "
        "(Σ_c q_c / D)·(diag a − a·aᵀ); for `none`, the Hessian of each position's own loss. "
        "The Hessian over all logits is block-diagonal across positions.",
    )
    numeric_hessian: Array | None = Field(
        None, description="Finite differences of the analytic gradient, by class column."
    )
    hessian_check: CheckModel | None = Field(
        None, description="Agreement of `hessian` and `numeric_hessian` (gradgradcheck)."
    )
    hessian_vector_product: Array | None = Field(
        None, description="H_n·v_n at every position, the logits' shape (needs `vector`)."
    )
    directional_derivatives: DirectionalModel | None = Field(
        None,
        description="With a directional check: the k numeric and analytic directional "
        "derivatives (`numeric_gradient` is then absent).",
    )
    gradient_check: CheckModel | None = Field(
        None, description="Agreement of `gradient` and `numeric_gradient`."
    )


# ----- /v1/linear-cross-entropy ------------------------------------------------------------------

if TYPE_CHECKING:
    Features = list[Any]
    HeadWeight = list[Any]
else:
    Features = Annotated[
        _arrays(StrictNumber, 1),
        Discriminator(_axes),
        Field(
            description="Hidden states x: (d,) or (N, d) as in torch's linear_cross_entropy, or "
            "(B, T, d) with causal_shift. Finite numbers.",
            examples=[[[0.5, -1.0], [1.5, 0.25]]],
        ),
    ]
    HeadWeight = Annotated[
        _arrays(StrictNumber, 2),
        Discriminator(_axes),
        Field(
            description="The head W: (C, d), or (C, d1, …, dK, d) for K-dimensional loss "
            "(logits (N, C, d1, …, dK)). Finite numbers.",
            examples=[[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]],
        ),
    ]


class LinearCandidate(BaseModel):
    """Your own loss and gradients of the head, to be checked against the exact reference."""

    model_config = ConfigDict(extra="forbid")

    loss: Any = _candidate_field("The reduced loss (the positions' shape for reduction none)")
    losses: Any = _candidate_field("The per-position losses")
    input_gradient: Any = _candidate_field("dL/dinput, the input's shape")
    linear_weight_gradient: Any = _candidate_field("dL/dlinear_weight, the weight's shape")
    linear_bias_gradient: Any = _candidate_field("dL/dlinear_bias, (C,) or (C, d1, …, dK)")


LINEAR_DEFAULT_INCLUDE = ("loss", "losses", "input_gradient", "linear_bias_gradient")
LinearInclude = Literal[
    "loss",
    "losses",
    "input_gradient",
    "linear_weight_gradient",
    "linear_bias_gradient",
    "logits",
    "logits_gradient",
    "probabilities",
    "numeric_gradient",
]


class LinearCrossEntropyRequest(LossOptions):
    """The LM head fused with its loss: torch 2.13's F.linear_cross_entropy, by blocks."""

    input: Features
    linear_weight: HeadWeight
    linear_bias: Logits | None = Field(
        None, description="b: (C,) or (C, d1, …, dK), added to the logits."
    )
    labels: Labels
    dtype: Dtype = Field("float64", description=DTYPE_DESCRIPTION)
    z_loss: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)] = Field(
        0.0, description="λ of the z-loss, as on /v1/cross-entropy (an extension beyond torch)."
    )
    softcap: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=1e-6)] | None = Field(
        None, description="Logit soft-capping, as on /v1/cross-entropy (an extension)."
    )
    causal_shift: bool = Field(
        False,
        description="An extension of LM training: input (B, T, d) and labels (B, T); position t "
        "predicts label t + 1 of its sequence and the last position is ignored (HF's causal-LM "
        "loss).",
    )
    denominator: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=1e-12)] | None = Field(
        None,
        description="An extension of LM training, with reduction mean only: replaces the "
        "mean's divisor Σ w_y (and the z-loss's) by this number (at least 1e-12), HF's "
        "num_items_in_batch.",
    )
    include: tuple[LinearInclude, ...] = Field(
        LINEAR_DEFAULT_INCLUDE,  # type: ignore[arg-type]
        description="Outputs to return. Default: loss, losses, input_gradient, "
        "linear_bias_gradient. On request: linear_weight_gradient (C·d numbers), logits, "
        "logits_gradient, probabilities (N·C numbers each), numeric_gradient (the three "
        "gradients checked along k random directions of (input, weight, bias) jointly: "
        "`gradient_check` and `directional_derivatives`; each direction costs four more "
        "N·C·d matmuls).",
    )
    numeric: GradientFiniteDifferenceOptions = Field(
        default_factory=GradientFiniteDifferenceOptions, description=NUMERIC_DESCRIPTION
    )
    tolerance: ToleranceOptions = Field(
        default_factory=ToleranceOptions,
        description=TOLERANCE_DESCRIPTION + " A candidate sent as .npz members is compared at "
        "its dtype's tolerance unless this is given.",
    )
    candidate: LinearCandidate | None = Field(None, description=CANDIDATE_DESCRIPTION)


class LinearCrossEntropyResponse(BaseModel):
    """The head's loss and gradients in torch's shapes; outputs not asked for are absent."""

    batch_size: int = Field(description="N (B·T with causal_shift; 1 without a batch axis).")
    num_classes: int = Field(description="C.")
    in_features: int = Field(description="d.")
    out_features: list[int] = Field(description="[d1, …, dK] of K-dimensional loss, or [].")
    dtype: Dtype = Field(description="The precision the results were computed in.")
    reduction: Reduction = Field(description="The reduction applied to the per-position losses.")
    loss: float | Array | None = Field(None, description="The reduced loss.")
    losses: float | Array | None = Field(None, description="Per-position losses.")
    input_gradient: Array | None = Field(None, description="dL/dinput, the input's shape.")
    linear_weight_gradient: Array | None = Field(None, description="dL/dW, W's shape.")
    linear_bias_gradient: Array | None = Field(None, description="dL/db, (C, d1, …, dK).")
    logits: Array | None = Field(None, description="x·Wᵀ + b in torch's shape.")
    logits_gradient: Array | None = Field(None, description="dL/dlogits, the logits' shape.")
    probabilities: Array | None = Field(None, description="softmax of the (capped) logits.")
    gradient_check: CheckModel | None = Field(
        None, description="The directional check of the three gradients."
    )
    directional_derivatives: DirectionalModel | None = Field(None)
    candidate_check: CandidateCheckModel | None = Field(None)
