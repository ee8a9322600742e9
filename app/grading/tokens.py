"""Problem ids: a problem's parameters in the clear, signed so that nobody can forge or alter one.

    problem_id = signed "." base64url(HMAC-SHA256(key, signed)),  signed = "gp1." base64url(payload)

The payload is the canonical JSON of a `ProblemSpec` (sorted keys, no spaces). Grading regenerates
the problem from it, so no database is needed; the signature is checked with
`hmac.compare_digest` before the payload is even decoded. Anyone can read the parameters (the seed
among them); that is harmless, since the problem's numbers are given to the student anyway.
"""

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from app.grading.problems import LabelType, ProblemSpec
from app.numerics.cross_entropy import Reduction

PREFIX = "gp1"


class InvalidProblemId(ValueError):
    """A problem id that is malformed, altered, or signed with another key; says which."""


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: bytes, signed_part: str) -> bytes:
    return hmac.new(key, signed_part.encode("ascii"), hashlib.sha256).digest()


def _payload(spec: ProblemSpec) -> dict[str, Any]:
    return {
        "seed": spec.seed,
        "batch_size": spec.batch_size,
        "num_classes": spec.num_classes,
        "label_type": str(spec.label_type),
        "logit_scale": spec.logit_scale,
        "weight": None if spec.weight is None else list(spec.weight),
        "ignore_index": spec.ignore_index,
        "reduction": str(spec.reduction),
        "label_smoothing": spec.label_smoothing,
        "dtype": spec.dtype,
    }


def encode_problem_id(spec: ProblemSpec, key: bytes) -> str:
    """The signed id of `spec` (floats are written in their shortest round-tripping form)."""
    payload = json.dumps(_payload(spec), sort_keys=True, separators=(",", ":"), allow_nan=False)
    signed_part = f"{PREFIX}.{_encode(payload.encode())}"
    return f"{signed_part}.{_encode(_signature(key, signed_part))}"


def decode_problem_id(problem_id: str, key: bytes) -> ProblemSpec:
    """The spec signed in `problem_id`; InvalidProblemId unless this key signed exactly it."""
    parts = problem_id.split(".")
    if not problem_id.isascii() or len(parts) != 3 or parts[0] != PREFIX:
        raise InvalidProblemId(
            f"not a problem id: expected '{PREFIX}.<payload>.<signature>' as returned by "
            "POST /v1/problems"
        )
    signed_part = f"{parts[0]}.{parts[1]}"
    try:
        signature = _decode(parts[2])
    except (binascii.Error, ValueError):
        signature = b""
    if not hmac.compare_digest(signature, _signature(key, signed_part)):
        raise InvalidProblemId(
            "this problem id was altered, or was not issued by this service (or was issued "
            "under another GRADCHECK_SECRET_KEY): request the problem again from POST /v1/problems"
        )
    fields = json.loads(_decode(parts[1]))
    weight = fields["weight"]
    return ProblemSpec(
        seed=fields["seed"],
        batch_size=fields["batch_size"],
        num_classes=fields["num_classes"],
        label_type=LabelType(fields["label_type"]),
        logit_scale=fields["logit_scale"],
        weight=None if weight is None else tuple(weight),
        ignore_index=fields["ignore_index"],
        reduction=Reduction(fields["reduction"]),
        label_smoothing=fields["label_smoothing"],
        dtype=fields["dtype"],
    )
