"""Problem ids: round trip, and every way of forging or altering one is refused."""

import base64
import json

import pytest

from app.grading.problems import LabelType, ProblemSpec
from app.grading.tokens import InvalidProblemId, decode_problem_id, encode_problem_id
from app.numerics.cross_entropy import Reduction

KEY = b"k" * 32
SPEC = ProblemSpec(
    seed="hw3-alice",
    batch_size=5,
    num_classes=4,
    label_type=LabelType.PROBABILITIES,
    logit_scale=0.1 + 0.2,  # a float that needs all 17 digits
    weight=(1.0, 0.5, 2.0, 0.25),
    ignore_index=3,
    reduction=Reduction.SUM,
    label_smoothing=0.1,
    dtype="float32",
)


def test_round_trip_restores_every_field_exactly() -> None:
    assert decode_problem_id(encode_problem_id(SPEC, KEY), KEY) == SPEC


def test_the_id_is_stable_for_a_key() -> None:
    assert encode_problem_id(SPEC, KEY) == encode_problem_id(SPEC, KEY)
    assert encode_problem_id(SPEC, KEY) != encode_problem_id(SPEC, b"other" * 8)


def _with_payload(problem_id: str, change: dict[str, object]) -> str:
    prefix, payload, signature = problem_id.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields.update(change)
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    return f"{prefix}.{forged}.{signature}"


@pytest.mark.parametrize(
    "change", [{"seed": "hw3-bob"}, {"batch_size": 1}, {"reduction": "mean"}, {"weight": None}]
)
def test_altered_parameters_are_refused(change: dict[str, object]) -> None:
    forged = _with_payload(encode_problem_id(SPEC, KEY), change)
    with pytest.raises(InvalidProblemId, match="altered"):
        decode_problem_id(forged, KEY)


def test_an_id_signed_with_another_key_is_refused() -> None:
    with pytest.raises(InvalidProblemId, match="GRADCHECK_SECRET_KEY"):
        decode_problem_id(encode_problem_id(SPEC, b"x" * 32), KEY)


def test_a_flipped_signature_character_is_refused() -> None:
    problem_id = encode_problem_id(SPEC, KEY)
    last = "A" if problem_id[-1] != "A" else "B"
    with pytest.raises(InvalidProblemId, match="altered"):
        decode_problem_id(problem_id[:-1] + last, KEY)


@pytest.mark.parametrize(
    "garbage", ["", "gp1", "gp1.e30", "gp2.e30.AAAA", "a.b.c.d", "gp1.e30.!!!!", "gp1.é.x"]
)
def test_malformed_ids_are_refused_with_a_message(garbage: str) -> None:
    with pytest.raises(InvalidProblemId) as error:
        decode_problem_id(garbage, KEY)
    assert "problem id" in str(error.value)
