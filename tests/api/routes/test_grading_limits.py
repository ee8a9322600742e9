"""Bounded work and strict ids on the grading routes: the submissions cap (413 from a scan of
the body, before parsing), notes per submission, the deadline, and ids that have one spelling
and whose signed parameters are validated (422 naming the field, never a 500)."""

import base64
import hashlib
import hmac
import json
import time
import tracemalloc
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.api.submissions import too_many_elements
from app.grading.grade import GradingOptions, Part, Reference, grade_batch
from app.grading.tokens import PREFIX
from app.numerics.deadline import Deadline
from tests.conftest import ClientFactory
from tests.grading.example import GRADIENT, LOSS, reference

PROBLEM = {"logits": [[0.5, 1.5, -0.2]], "labels": [1]}
SECRET = "limits-secret-" + "s" * 32


def million_zeros() -> bytes:
    return (
        b'{"problem": {"logits": [[1, 2]], "labels": [0]}, "submissions": ['
        + b",".join([b"0"] * 1_000_000)
        + b"]}"
    )


# ----- the submissions cap -----


def test_the_scan_counts_only_the_top_level_lists() -> None:
    def body(value: object) -> bytes:
        return json.dumps(value).encode()

    many = [0] * 11
    assert too_many_elements(body({"submissions": many}), 10)
    assert not too_many_elements(body({"submissions": many[:10]}), 10)
    assert too_many_elements(body({"items": [{"submission": 0}] * 11}), 10)
    # commas inside an element, a string or another field are not elements
    big_answer = {"gradient": [[0.1] * 50] * 50, "note": 'a, b, [c], {d}, "e,"'}
    assert not too_many_elements(body({"submissions": [big_answer] * 3, "x": many * 9}), 10)
    assert not too_many_elements(body({"problem": {"logits": [many] * 3}, "submissions": [1]}), 2)
    assert not too_many_elements(b"[1, 2, 3]", 1)
    assert not too_many_elements(b'{"submissions": [1, 2, 3', 5)  # the parser refuses it


def test_a_million_submissions_are_refused_by_the_scan_at_once() -> None:
    payload = million_zeros()
    tracemalloc.start()
    started = time.perf_counter()
    assert too_many_elements(payload, 1000)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"scan of a million submissions: {elapsed * 1000:.1f} ms")  # a figure, not asserted
    assert peak < 100_000  # nothing of the body was parsed into objects


async def test_a_million_submissions_are_a_413_without_parsing(
    asgi_client: httpx.AsyncClient,
) -> None:
    payload = million_zeros()
    headers = {"content-type": "application/json"}
    tracemalloc.start()
    started = time.perf_counter()
    response = await asgi_client.post("/v1/grade/batch", content=payload, headers=headers)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert response.status_code == 413
    assert "GRADCHECK_MAX_SUBMISSIONS = 1000" in response.json()["detail"]
    print(f"413 for a million submissions: {elapsed * 1000:.1f} ms")  # a figure, not asserted
    assert peak < 4 * len(payload)  # the body's own copies; no list of a million is built


@pytest.mark.parametrize("key", ["submissions", "items"])
async def test_the_cap_is_a_setting(make_client: ClientFactory, key: str) -> None:
    entry: object = {"loss": 1} if key == "submissions" else {"problem": PROBLEM, "submission": 1}
    top = {"problem": PROBLEM} if key == "submissions" else {}
    async with make_client(max_submissions=3) as client:
        ok = await client.post("/v1/grade/batch", json={**top, key: [entry] * 3})
        over = await client.post("/v1/grade/batch", json={**top, key: [entry] * 4})
    assert ok.status_code == 200, ok.text
    assert over.status_code == 413
    assert "GRADCHECK_MAX_SUBMISSIONS = 3" in over.json()["detail"]


async def test_an_escaped_key_is_the_same_key_to_the_scan(
    make_client: ClientFactory,
) -> None:
    escaped = b'{"problem": {"logits": [[1, 2]], "labels": [0]}, "submission\\u0073": [1, 2, 3, 4]}'
    assert too_many_elements(escaped, 3)
    async with make_client(max_submissions=3) as client:
        response = await client.post(
            "/v1/grade/batch", content=escaped, headers={"content-type": "application/json"}
        )
    assert response.status_code == 413


# ----- notes and the deadline -----


def test_six_thousand_unknown_keys_make_one_note() -> None:
    submission: dict[str, object] = {f"key{i}": 0 for i in range(6000)}
    submission |= {"loss": LOSS, "gradient": GRADIENT.tolist()}
    options = GradingOptions({Part.LOSS: 1, Part.GRADIENT: 1}, 1e-5, 1e-3, False)
    (grade,) = grade_batch(reference(), [submission], options)
    assert grade.notes == (
        'ignored "key0", "key1", "key2" and 5997 more: not parts (the parts are probabilities, '
        "loss, gradient, jacobian, hessian)",
    )


class Stop(Exception):
    pass


class PassesAfter(Deadline):
    """A deadline that raises Stop once checked more than `calls` times."""

    __slots__ = ("calls", "count")

    def __init__(self, calls: int) -> None:
        super().__init__(0.0)
        self.calls = calls
        self.count = 0

    def check(self) -> None:
        self.count += 1
        if self.count > self.calls:
            raise Stop


@pytest.mark.parametrize("calls", [0, 1, 5])
def test_grading_stops_at_the_deadline(calls: int) -> None:
    """The deadline's checkpoint is reached between parts and every few submissions, and
    grading does not go on after it raises."""
    options = GradingOptions(
        {Part.LOSS: 1, Part.GRADIENT: 1}, 1e-5, 1e-3, False, deadline=PassesAfter(calls)
    )
    submissions = [{"loss": LOSS, "gradient": GRADIENT.tolist()}] * 1000
    with pytest.raises(Stop):
        grade_batch(reference(), submissions, options)


async def test_a_batch_past_its_deadline_is_a_504(make_client: ClientFactory) -> None:
    submissions = [{"loss": 0.5, "gradient": [[0.1, 0.2, 0.3]] * 64}] * 1000
    problem = {"logits": [[0.5, 1.5, -0.2]] * 64, "labels": [1] * 64}
    async with make_client(request_timeout_seconds=0.001) as client:
        response = await client.post(
            "/v1/grade/batch", json={"problem": problem, "submissions": submissions}
        )
    assert response.status_code == 504


# ----- strict ids -----


async def issued(client: httpx.AsyncClient) -> str:
    response = await client.post("/v1/problems", json={"seed": "ada", "batch_size": 2})
    assert response.status_code == 200
    problem_id: str = response.json()["problem_id"]
    return problem_id


def respelled(problem_id: str) -> list[str]:
    """Other spellings of the same bytes, which a lenient base64 decoder accepts."""
    prefix, payload, signature = problem_id.split(".")
    spellings = [
        problem_id + "=",
        problem_id + "==",
        problem_id + "!!!",
        f"{prefix}.{payload}=.{signature}",
        f"{prefix}.{payload}.{signature.replace('-', '+').replace('_', '/')}",
        f"{prefix}.{payload.replace('-', '+').replace('_', '/')}.{signature}",
        f"{prefix}.{payload}.{signature[:20]}\n{signature[20:]}",
    ]
    # the same bytes with the unused low bits of the last character set
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    spellings.append(f"{prefix}.{payload}.{signature[:-1]}{alphabet[last | 1]}")
    return [s for s in spellings if s != problem_id]


async def test_an_id_has_one_spelling(make_client: ClientFactory) -> None:
    async with make_client(secret_key=SECRET) as client:
        problem_id = await issued(client)
        good = await client.post("/v1/grade", json={"problem_id": problem_id, "submission": {}})
        assert good.status_code == 200
        for other in respelled(problem_id):
            response = await client.post("/v1/grade", json={"problem_id": other, "submission": {}})
            assert response.status_code == 422, other
            assert response.json()["detail"][0]["loc"] == ["body", "problem_id"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(payload: bytes, secret: str = SECRET) -> str:
    """An id signed with the service's key around any payload bytes (what a leaked key, or an
    id of another version, would give)."""
    signed_part = f"{PREFIX}.{_b64(payload)}"
    signature = hmac.new(secret.encode(), signed_part.encode(), hashlib.sha256).digest()
    return f"{signed_part}.{_b64(signature)}"


VALID = {
    "seed": "ada",
    "batch_size": 2,
    "num_classes": 3,
    "label_type": "index",
    "logit_scale": 1.0,
    "weight": None,
    "ignore_index": -100,
    "reduction": "mean",
    "label_smoothing": 0.0,
    "dtype": "float64",
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"batch_size": -1}, "batch_size"),
        ({"dtype": "float16"}, "dtype"),
        ({"weight": "missing"}, "weight"),
        ({"logit_scale": 1e308}, "logit_scale"),
        ({"num_classes": 10**9}, "num_classes"),
        ({"label_type": "soft"}, "label_type"),
        ({"weight": [1.0, 2.0]}, "weight"),
        ({"seed": ""}, "seed"),
        ({"extra": 1}, "extra"),
    ],
)
async def test_a_signed_id_with_bad_parameters_is_a_422_naming_the_field(
    make_client: ClientFactory, change: dict[str, Any], field: str
) -> None:
    fields = {**VALID, **change}
    if change.get("weight") == "missing":
        del fields["weight"]
    problem_id = signed(json.dumps(fields).encode())
    async with make_client(secret_key=SECRET) as client:
        good = await client.post(
            "/v1/grade", json={"problem_id": signed(json.dumps(VALID).encode()), "submission": {}}
        )
        assert good.status_code == 200, good.text
        for path, body in (
            ("/v1/grade", {"problem_id": problem_id, "submission": {}}),
            ("/v1/grade/batch", {"problem_id": problem_id, "submissions": [{}]}),
            ("/v1/grade/batch", {"items": [{"problem_id": problem_id, "submission": {}}]}),
        ):
            response = await client.post(path, json=body)
            assert response.status_code == 422, (path, response.text)
            locations = [error["loc"] for error in response.json()["detail"]]
            assert any(loc[-1] == field and "problem_id" in loc for loc in locations), locations


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b"\xff\xfe", b"null", b"{}"])
async def test_a_signed_payload_that_is_not_parameters_is_a_422(
    make_client: ClientFactory, payload: bytes
) -> None:
    async with make_client(secret_key=SECRET) as client:
        response = await client.post(
            "/v1/grade", json={"problem_id": signed(payload), "submission": {}}
        )
    assert response.status_code == 422, response.text
    assert all("problem_id" in error["loc"] for error in response.json()["detail"])


ISSUED = signed(json.dumps(VALID, sort_keys=True, separators=(",", ":")).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.lists(
        st.tuples(st.integers(0, len(ISSUED) - 1), st.integers(0, 255)), min_size=1, max_size=4
    ),
    suffix=st.binary(max_size=3),
)
def test_random_byte_changes_never_grade(changes: list[tuple[int, int]], suffix: bytes) -> None:
    from app.api.inputs import signed_spec
    from app.core.errors import RequestError

    data = bytearray(ISSUED.encode())
    for position, value in changes:
        data[position] = value
    altered = bytes(data) + suffix
    if altered == ISSUED.encode():
        return
    text = altered.decode("latin-1")
    with pytest.raises(RequestError):
        signed_spec(text, SECRET.encode(), ("problem_id",))


def test_the_issued_id_is_accepted() -> None:
    from app.api.inputs import signed_spec

    assert signed_spec(ISSUED, SECRET.encode(), ("problem_id",)).batch_size == 2


def test_a_reference_value_is_still_checked() -> None:
    assert isinstance(reference(), Reference)
