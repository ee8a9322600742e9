"""Problem ids: a problem's parameters in the clear, signed so that nobody can forge or alter one.

    problem_id = signed "." base64url(HMAC-SHA256(key, signed)),  signed = "gp1." base64url(payload)

The payload is the canonical JSON of a `ProblemSpec` (sorted keys, no spaces). Grading regenerates
the problem from it, so no database is needed; the signature is checked with
`hmac.compare_digest` before the payload is even decoded. Anyone can read the parameters (the seed
among them); that is harmless, since the problem's numbers are given to the student anyway.

Ids are not malleable: both base64url fields must be in canonical form (the alphabet A–Z a–z 0–9
- _, no padding, no line breaks, zero bits after the last byte), so an id has exactly one
spelling. A payload that was signed but does not hold valid parameters (an id made by another
version, or by hand with the key) is refused too: `decode_problem_payload` returns the decoded
JSON object for the caller to validate with the rules of a problem request, and
`decode_problem_id` refuses any field it cannot use.
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from app.grading.problems import LabelType, ProblemSpec
from app.numerics.cross_entropy import Reduction

PREFIX = "gp1"
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class InvalidProblemId(ValueError):
    """A problem id that is malformed, altered, or signed with another key; says which."""


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes | None:
    """The bytes of canonical unpadded base64url `text`; None for any other spelling."""
    if not _BASE64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if _encode(data) == text else None


def _signature(key: bytes, signed_part: str) -> bytes:
    return hmac.new(key, signed_part.encode("ascii"), hashlib.sha256).digest()


PAYLOAD_FIELDS = (
    "seed",
    "batch_size",
    "num_classes",
    "label_type",
    "logit_scale",
    "weight",
    "ignore_index",
    "reduction",
    "label_smoothing",
    "dtype",
)
"""The keys of every payload this version signs: none may be missing (no defaults apply)."""


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


def decode_problem_payload(problem_id: str, key: bytes) -> dict[str, Any]:
    """The JSON object signed in `problem_id`, not yet validated; InvalidProblemId unless the id
    is spelled canonically and this key signed exactly it."""
    parts = problem_id.split(".")
    if not problem_id.isascii() or len(parts) != 3 or parts[0] != PREFIX:
        raise InvalidProblemId(
            f"not a problem id: expected '{PREFIX}.<payload>.<signature>' as returned by "
            "POST /v1/problems"
        )
    signed_part = f"{parts[0]}.{parts[1]}"
    signature = _decode(parts[2])
    if (
        signature is None
        or not hmac.compare_digest(signature, _signature(key, signed_part))
        or _decode(parts[1]) is None
    ):
        raise InvalidProblemId(
            "this problem id was altered, or was not issued by this service (or was issued "
            "under another GRADCHECK_SECRET_KEY): request the problem again from POST /v1/problems"
        )
    payload = _decode(parts[1])
    assert payload is not None
    try:
        fields = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        fields = None
    if not isinstance(fields, dict):
        raise InvalidProblemId(
            "this problem id is signed but its payload is not a JSON object of problem "
            "parameters: request the problem again from POST /v1/problems"
        )
    return fields


def spec_from_payload(fields: Mapping[str, Any]) -> ProblemSpec:
    """The spec of a decoded payload; InvalidProblemId naming a missing or unusable field.

    Checks types and names only: the API validates the payload with the rules of a problem
    request (ranges included) before it gets here."""
    try:
        weight = fields["weight"]
        spec = ProblemSpec(
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
    except KeyError as error:
        raise InvalidProblemId(f"this problem id's parameters lack {error.args[0]}") from None
    except (TypeError, ValueError) as error:
        raise InvalidProblemId(f"this problem id's parameters are invalid: {error}") from None
    for name in ("batch_size", "num_classes", "ignore_index"):
        if type(getattr(spec, name)) is not int:
            raise InvalidProblemId(f"this problem id's {name} is not an integer")
    if not isinstance(spec.seed, str) or not isinstance(spec.dtype, str):
        raise InvalidProblemId("this problem id's seed and dtype must be strings")
    return spec


def decode_problem_id(problem_id: str, key: bytes) -> ProblemSpec:
    """The spec signed in `problem_id`; InvalidProblemId unless this key signed exactly it."""
    return spec_from_payload(decode_problem_payload(problem_id, key))
