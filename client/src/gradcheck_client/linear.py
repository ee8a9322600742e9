"""`POST /v1/linear-cross-entropy` for the clients: its request body and its typed result.

The LM head fused with its loss (torch 2.13's `F.linear_cross_entropy`): `input`, `linear_weight`,
`linear_bias` and labels in, the loss and the gradients by input, weight and bias out, with a
check of your own (`candidate`) and the mistakes of chunked kernels named."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import httpx
import numpy as np

from gradcheck_client import wire
from gradcheck_client.results import CandidateCheck, Check, DirectionalDerivatives, FloatArray

PATH = "/v1/linear-cross-entropy"
LinearOutput = Literal[
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
"""What `include` may ask for (numeric_gradient: the three gradients checked along random
directions of (input, weight, bias) jointly)."""


class LinearCandidate(TypedDict, total=False):
    """Your own loss and gradients of the head (arrays, lists or tensors, torch's shapes)."""

    loss: Any
    losses: Any
    input_gradient: Any
    linear_weight_gradient: Any
    linear_bias_gradient: Any


OUTPUTS = (
    "loss",
    "losses",
    "input_gradient",
    "linear_weight_gradient",
    "linear_bias_gradient",
    "logits",
    "logits_gradient",
    "probabilities",
)


@dataclass(frozen=True, kw_only=True)
class LinearCrossEntropyResult:
    """What `/v1/linear-cross-entropy` returned, in torch's shapes; outputs not asked for in
    `include` are None. `loss` is a float for `mean` and `sum`."""

    dtype: str
    reduction: str
    batch_size: int
    num_classes: int
    in_features: int
    out_features: tuple[int, ...] = ()
    loss: float | FloatArray | None = None
    losses: FloatArray | None = None
    input_gradient: FloatArray | None = None
    linear_weight_gradient: FloatArray | None = None
    linear_bias_gradient: FloatArray | None = None
    logits: FloatArray | None = None
    logits_gradient: FloatArray | None = None
    probabilities: FloatArray | None = None
    gradient_check: Check | None = None
    """The three gradients checked along random directions (`numeric_gradient` in include)."""
    directional_derivatives: DirectionalDerivatives | None = None
    candidate_check: CandidateCheck | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """Every non-array field of the response, as the service wrote it."""


def body(
    input: Any,
    linear_weight: Any,
    labels: Any,
    *,
    linear_bias: Any = None,
    weight: Any = None,
    options: Mapping[str, Any],
    numeric: Mapping[str, Any] | None = None,
    tolerance: Mapping[str, Any] | None = None,
    include: Sequence[str] | None = None,
    candidate: Mapping[str, Any] | None = None,
) -> wire.Body:
    """The request: the arrays as members (or nested lists), every option left None out."""
    arrays: dict[str, Any] = {"input": input, "linear_weight": linear_weight, "labels": labels}
    if linear_bias is not None:
        arrays["linear_bias"] = linear_bias
    if weight is not None:
        arrays["weight"] = weight
    fields = {name: value for name, value in options.items() if value is not None}
    if numeric is not None:
        fields["numeric"] = dict(numeric)
    if tolerance is not None:
        fields["tolerance"] = {name: float(value) for name, value in tolerance.items()}
    if include is not None:
        fields["include"] = list(include)
    for name, value in (candidate or {}).items():
        arrays[f"candidate.{name}"] = value
    return wire.Body(arrays, wire.jsonable(fields))


def result(arrays: dict[str, FloatArray], metadata: dict[str, Any]) -> LinearCrossEntropyResult:
    """The typed result, from an .npz or a JSON response (whose arrays are nested lists)."""
    values: dict[str, Any] = {}
    for name in OUTPUTS:
        value = arrays.get(name, metadata.get(name))
        if value is not None:
            values[name] = np.asarray(value, dtype=np.float64)
    loss = values.get("loss")
    if loss is not None and loss.ndim == 0:
        values["loss"] = float(loss)
    checked = metadata.get("gradient_check")
    directional = metadata.get("directional_derivatives")
    candidate = metadata.get("candidate_check")
    return LinearCrossEntropyResult(
        dtype=str(metadata["dtype"]),
        reduction=str(metadata["reduction"]),
        batch_size=int(metadata["batch_size"]),
        num_classes=int(metadata["num_classes"]),
        in_features=int(metadata["in_features"]),
        out_features=tuple(int(n) for n in metadata.get("out_features") or ()),
        gradient_check=Check.from_json(checked) if isinstance(checked, dict) else None,
        directional_derivatives=DirectionalDerivatives(
            np.asarray(directional["numeric"], dtype=np.float64),
            np.asarray(directional["analytic"], dtype=np.float64),
            int(directional["seed"]),
        )
        if isinstance(directional, dict)
        else None,
        candidate_check=CandidateCheck.from_json(candidate)
        if isinstance(candidate, dict)
        else None,
        raw={name: value for name, value in metadata.items() if name not in OUTPUTS},
        **values,
    )


def read(response: httpx.Response) -> LinearCrossEntropyResult:
    """The typed result of a response (.npz or JSON)."""
    return result(*wire.read_compute(response))
