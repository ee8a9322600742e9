"""What the routes depend on: one body dependency per route, which reads, parses and validates the
request's body and hands the route everything else it needs with it (`Received`: the settings,
the memory budget, the coalescer, the signing key and the request's deadline, `RequestContext`).

Bodies are read by `RequestBody`, not by FastAPI's own body parameter: FastAPI parses JSON with
the standard `json.loads` and then validates the Python objects, about 5× slower for large arrays
than pydantic's Rust parser reading the bytes (`model_validate_json`), which this uses. Its models
are documented in OpenAPI by `app.api.docs.document_request_bodies`, which finds them on the
routes. The per-request objects come with the body, not as dependencies of their own: each
dependency FastAPI solves costs a small request tens of microseconds (`make bench`, case 3).
"""

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Generic, TypeVar

import numpy as np
from fastapi import Depends, Request
from fastapi.exceptions import HTTPException
from numpy.typing import NDArray
from pydantic import BaseModel, ValidationError, create_model

from app.api.coalesce import Coalescer
from app.api.encoding import read_npz_request
from app.api.errors import pydantic_errors
from app.api.examples import (
    CROSS_ENTROPY_EXAMPLES,
    GRADE_EXAMPLES,
    LINEAR_CROSS_ENTROPY_EXAMPLES,
    PROBLEM_EXAMPLES,
    SOFTMAX_EXAMPLES,
)
from app.api.links import docs_url
from app.api.schemas.compute import (
    CrossEntropyRequest,
    LinearCrossEntropyRequest,
    SoftmaxRequest,
)
from app.api.schemas.grading import GradeRequest, ProblemRequest
from app.api.submissions import parse_with_unreadable_answers
from app.core.budget import MemoryBudget
from app.core.config import Settings
from app.core.errors import LazyRefusal, RequestError
from app.core.media import ContentType, parse_content_type
from app.core.metrics import HttpMetrics
from app.core.middleware import DEADLINE_STATE
from app.core.threads import run_in_thread
from app.numerics.candidate import default_tolerance
from app.numerics.deadline import NEVER, Deadline
from app.numerics.layout import for_each_on_every_core

Model = TypeVar("Model", bound=BaseModel)
Parsed = TypeVar("Parsed")
Body = TypeVar("Body")

INLINE_PARSE_BYTES = 32 * 1024
"""Bodies up to this size are parsed on the event loop: about 0.1 ms, what the hop to a worker
thread would cost."""
JSON_PARSE_BYTES_PER_VALUE = 80
"""Bound on the peak memory of parsing JSON (pydantic-core's parse tree and the Python objects
it makes) per value, a value counted by the comma after it: measured as peak RSS while
2,000,000 values are parsed, a number takes 69 bytes (`0,`: 35 a byte of body), `null` 34."""
JSON_PARSE_BYTES_PER_ARRAY = 192
"""The same per `[`: each level of `[[[[0]]]],` adds 174 bytes (77 a byte of body)."""
JSON_PARSE_BYTES_PER_OBJECT = 320
"""The same per `{`: `{"a":0},` takes 336 bytes, 256 more than its comma."""
JSON_PARSE_BYTES_PER_BODY_BYTE = 3
"""What a string adds per character to its item: its Python copy and the parser's (2 bytes)."""
COUNT_BLOCK_BYTES = 1 << 20
"""Bytes of a body scanned at a time by `json_parse_bytes`, a block a core (a 67 MB body:
16.5 ms in blocks of 256 KiB on one core, 10.4 ms in blocks of 1 MiB on two)."""
NPZ_PARSE_BYTES_PER_BODY_BYTE = 2
"""An .npz body's arrays, read in place or inflated, then the float64 copy of the logits."""

NOT_JSON = "Send the body as JSON with the header Content-Type: application/json."
NOT_UTF8 = "Send the body as UTF-8 JSON: charset {charset} is not read (RFC 8259 requires UTF-8)."


@dataclass(frozen=True)
class RequestContext:
    """What a route needs besides its body: the app's settings, memory budget, coalescer and
    signing key, and the request's Accept header and deadline."""

    settings: Settings
    budget: MemoryBudget
    coalescer: Coalescer
    signing_key: bytes
    """The key that signs problem ids (`app.api.security.problem_signing_key`)."""
    accept: str | None
    deadline: Deadline
    """Made by the compute-timeout middleware (`app.core.middleware`); NEVER without it."""
    docs_url: str | None
    """The base of the links in the request's messages (`app.api.links.docs_url`)."""


def request_context(request: Request) -> RequestContext:
    """The context of `request`: the objects `create_app` keeps on app.state (the one place
    they are read from), and the deadline the middleware put in the request's state."""
    state = request.app.state
    deadline = request.scope.get("state", {}).get(DEADLINE_STATE, NEVER)
    return RequestContext(
        state.settings,
        state.budget,
        state.coalescer,
        state.signing_key,
        request.headers.get("accept"),
        deadline,
        docs_url(state.settings, state.guide_served, request),
    )


async def app_settings(request: Request) -> Settings:
    """The settings of the app serving the request, for routes without a body (a body
    dependency hands them over in its `RequestContext`)."""
    settings: Settings = request.app.state.settings
    return settings


async def app_ready(request: Request) -> bool:
    """Whether the app serving the request has started and passed its self-test (`lifespan`)."""
    return bool(getattr(request.app.state, "ready", False))


async def app_metrics(request: Request) -> HttpMetrics:
    """The HTTP metrics of the app serving the request."""
    metrics: HttpMetrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(app_settings)]
ReadyDep = Annotated[bool, Depends(app_ready)]
MetricsDep = Annotated[HttpMetrics, Depends(app_metrics)]


@dataclass(frozen=True)
class Received(Generic[Body]):
    """What a body dependency hands its route: the validated body and the request's context."""

    body: Body
    context: RequestContext
    overflow: LazyRefusal | None = None
    """The refusal of the first number literal of a JSON body that overflows float64 outside
    an answer (`overflowing_literal`): decided (a scan of the body's bytes) and raised only
    where a −∞ is read where −∞ masks a class (the logits), since only the text tells
    `-1e999999` from `-Infinity`; a body without such a −∞ is never scanned."""


def _check_json(content_type: ContentType) -> None:
    """415 unless the body is declared as JSON (application/json or application/*+json) in
    UTF-8, the only encoding JSON allows."""
    if not content_type.is_json:
        raise HTTPException(415, NOT_JSON)
    charset = content_type.charset
    if charset is not None and charset.lower().replace("-", "") != "utf8":
        raise HTTPException(415, NOT_UTF8.format(charset=json.dumps(charset[:40])))


@dataclass(frozen=True)
class ArrayBody(Generic[Model]):
    """An `application/x-npz` body, typed: `request.json` validated as `fields`, and the arrays
    of its `.npy` members, as they were stored (they never become Python lists).

    `fields` is of the request model with its array fields optional
    (`ArrayRequestBody.json_part`): each
    is None unless `request.json` sent it; `app.api.inputs` reads an array field from
    `arrays` first, then from `fields`.
    """

    fields: Model
    arrays: dict[str, NDArray[Any]]
    """The members named after an array field (`logits`, `labels`, `weight`, `vector`)."""
    candidate: dict[str, NDArray[Any]]
    """The `candidate.<output>` members, by output name."""


def json_parse_bytes(body: bytes) -> int:
    """A bound on the memory that parsing the JSON `body` takes at its peak: for each comma (and
    the first value) JSON_PARSE_BYTES_PER_VALUE, for each `[` and `{` JSON_PARSE_BYTES_PER_ARRAY
    and _OBJECT, for each byte JSON_PARSE_BYTES_PER_BODY_BYTE. Counted a block of the body at a
    time on every core, about 0.15 ms a MB: a bound per byte alone would have to be 77 bytes a
    byte of body for `[[[[0]]]],`, where a body of full-precision numbers takes 3."""
    raw = np.frombuffer(body, np.uint8)
    starts = range(0, raw.size, COUNT_BLOCK_BYTES)
    counts = np.zeros((len(starts), 3), np.int64)  # commas, `[`, `{` of each block

    def count(index: int) -> None:
        block = raw[starts[index] : starts[index] + COUNT_BLOCK_BYTES]
        for column, character in enumerate(b",[{"):
            counts[index, column] = np.count_nonzero(block == character)

    for_each_on_every_core(count, range(len(starts)))
    values, arrays, objects = (int(total) for total in counts.sum(axis=0))
    return (
        (values + 1) * JSON_PARSE_BYTES_PER_VALUE
        + arrays * JSON_PARSE_BYTES_PER_ARRAY
        + objects * JSON_PARSE_BYTES_PER_OBJECT
        + len(body) * JSON_PARSE_BYTES_PER_BODY_BYTE
    )


def npz_parse_bytes(body: bytes) -> int:
    """What reading an .npz `body` takes beyond the body (NPZ_PARSE_BYTES_PER_BODY_BYTE)."""
    return len(body) * NPZ_PARSE_BYTES_PER_BODY_BYTE


class BodyReader(Generic[Model]):
    """What the body dependencies share: their model and examples, the JSON parser, and their
    OpenAPI document (`app.api.docs.document_request_bodies` finds them on the routes).

    The body is validated straight from bytes, which accepts the `-Infinity` literal that
    Python's `json` writes for a masked logit. A literal too large for float64 (`-1e999999`)
    also parses to ±∞ there; it is found from the bytes (`overflowing_literal`) and handed on
    with the body. Bodies over INLINE_PARSE_BYTES are parsed in a worker thread, so that a
    large body never holds up the event loop.
    """

    def __init__(self, model: type[Model], examples: dict[str, Any]) -> None:
        self.model = model
        self.examples = examples

    async def _parsed(
        self,
        body: bytes,
        parse_bytes: Callable[[bytes], int],
        context: RequestContext,
        parse: Callable[[], Parsed],
    ) -> Parsed:
        """parse(), in a worker thread once the budget admits what parsing a body over
        INLINE_PARSE_BYTES takes (`parse_bytes` of it, found in a worker thread too)."""
        if len(body) <= INLINE_PARSE_BYTES:
            return parse()
        async with context.budget.admit(await run_in_thread(partial(parse_bytes, body))):
            return await run_in_thread(parse)

    def received_json(self, body: bytes, context: RequestContext) -> Received[Model]:
        """The JSON `body` validated, with its first overflowing literal and `context`."""
        return Received(self.parse(body), context, LazyRefusal(partial(overflowing_literal, body)))

    def parse(self, body: bytes) -> Model:
        """`model` from the JSON bytes, or RequestError with every problem located."""
        try:
            value = self.model.model_validate_json(body)
        except ValidationError as error:
            raise RequestError.from_items(pydantic_errors(error)) from None
        return value

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI requestBody object of this body."""
        schema = {"$ref": f"#/components/schemas/{self.model.__name__}"}
        content = {"schema": schema, "examples": self.examples} if self.examples else {}
        return {"required": True, "content": {"application/json": content or {"schema": schema}}}


class RequestBody(BodyReader[Model]):
    """A dependency that reads the request's body as `model`: 415 unless JSON in UTF-8, 422
    naming each bad field."""

    async def __call__(self, request: Request) -> Received[Model]:
        context = request_context(request)
        _check_json(parse_content_type(request.headers.get("content-type", "")))
        body = await request.body()
        return await self._parsed(
            body, json_parse_bytes, context, lambda: self.received_json(body, context)
        )


class AnswerBody(RequestBody[Model]):
    """A grading body: as every body, except that a student's answer the JSON parser cannot read
    (nested too deep) is graded as unreadable, not refused (`parse_with_unreadable_answers`)."""

    def parse(self, body: bytes) -> Model:
        """`model` from the JSON bytes, or RequestError with every problem located."""
        return parse_with_unreadable_answers(self.model, body)


class ArrayRequestBody(BodyReader[Model]):
    """A dependency that reads the request's body as `model` from JSON, or as an `ArrayBody`
    of it from `application/x-npz` (whose members may send `array_fields` as arrays): 415
    unless one of them, 422 naming each bad field or member."""

    def __init__(
        self, model: type[Model], examples: dict[str, Any], array_fields: frozenset[str]
    ) -> None:
        super().__init__(model, examples)
        self.array_fields = array_fields
        optional: Any = dict.fromkeys(array_fields, (Any, None))
        self.json_part: type[Model] = create_model(
            f"{model.__name__}JsonPart", __base__=model, **optional
        )
        """`model` with its array fields optional: what `request.json` is validated as."""

    async def __call__(self, request: Request) -> Received[Model | ArrayBody[Model]]:
        context = request_context(request)
        content_type = parse_content_type(request.headers.get("content-type", ""))
        if not content_type.is_npz:
            _check_json(content_type)
            body = await request.body()

            def from_json() -> "Received[Model | ArrayBody[Model]]":  # not evaluated per call
                return Received(
                    self.parse(body), context, LazyRefusal(partial(overflowing_literal, body))
                )

            return await self._parsed(body, json_parse_bytes, context, from_json)
        # read, not kept on the request: its arrays are all that stays
        binary = b"".join([chunk async for chunk in request.stream()])

        def from_npz() -> "Received[Model | ArrayBody[Model]]":
            return Received(self.parse_npz(binary), context)

        return await self._parsed(binary, npz_parse_bytes, context, from_npz)

    def parse_npz(self, body: bytes) -> ArrayBody[Model]:
        """The `ArrayBody` of an .npz body (`app.api.encoding.read_npz_request`). A candidate
        sent as arrays is compared with the tolerance of its own precision unless `tolerance`
        is given (`app.numerics.candidate.DEFAULT_TOLERANCE`)."""
        fields, arrays = read_npz_request(body)
        candidate: dict[str, NDArray[Any]] = {}
        named: dict[str, NDArray[Any]] = {}
        for name, array in arrays.items():
            if name.startswith("candidate."):
                candidate[name.removeprefix("candidate.")] = array
            elif name in self.array_fields:
                named[name] = array
            else:
                known = ", ".join(sorted(self.array_fields))
                raise RequestError((name,), f"not an array field of this request ({known})")
            if name in fields:
                raise RequestError(
                    (name,), f"{name} is sent twice: as a member and in request.json"
                )
        if candidate and "tolerance" not in fields:
            atol, rtol = default_tolerance(array.dtype for array in candidate.values())
            fields["tolerance"] = {"atol": atol, "rtol": rtol}
        try:
            value = self.json_part.model_validate(fields)
        except ValidationError as error:
            raise RequestError.from_items(pydantic_errors(error)) from None
        missing = [
            name
            for name, field in self.model.model_fields.items()
            if name in self.array_fields
            and field.is_required()
            and name not in named
            and getattr(value, name) is None
        ]
        if missing:
            raise RequestError.from_items(
                [
                    {"loc": ["body", name], "msg": "Field required", "type": "missing"}
                    for name in missing
                ]
            )
        return ArrayBody(value, named, candidate)


class _Overflow(float):
    """A number literal that does not fit in float64, kept with its text."""

    text: str


def _overflow_or_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        overflow = _Overflow(value)
        overflow.text = text
        return overflow
    return value


ANSWER_FIELDS = frozenset({"submission", "submissions", "candidate"})
"""Fields holding a student's or caller's own answer, at the top level or in a roster item
(`items[i]`): whatever they hold is judged, not refused (an overflowed value there is an answer
to grade or diagnose)."""


def _is_roster_item(location: tuple[str | int, ...]) -> bool:
    return len(location) == 2 and location[0] == "items" and isinstance(location[1], int)


def _first_overflow(value: object, location: tuple[str | int, ...]) -> tuple[Any, ...] | None:
    if isinstance(value, _Overflow):
        return (*location, value.text)
    items: Any = ()
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    for key, item in items:
        if key in ANSWER_FIELDS and (not location or _is_roster_item(location)):
            continue
        found = _first_overflow(item, (*location, key))
        if found is not None:
            return found
    return None


_LITERAL_BYTES = frozenset(b"0123456789+-.eE")
_DIGITS = frozenset(b"0123456789")


def three_digit_exponents(body: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each `e` or `E` of `body` followed by an optional `+` and three digits:
    the exponents of the only number literals that can overflow float64. Linear: `bytes.find`
    (memchr speed, far faster than a regular expression here) visits each letter once."""
    for letter in (b"e", b"E"):
        at = body.find(letter)
        while at >= 0:
            digits = at + 2 if body[at + 1 : at + 2] == b"+" else at + 1
            if body[digits : digits + 3].isdigit() and len(body) >= digits + 3:
                yield at, digits + 3
            at = body.find(letter, at + 1)


def _may_overflow(body: bytes) -> bool:
    """Whether some number literal of `body` overflows float64, from its bytes: each literal
    with a three-digit exponent is read whole and converted. Linear: literals do not overlap,
    and each is walked once."""
    for start, end in three_digit_exponents(body):
        while start > 0 and body[start - 1] in _LITERAL_BYTES:
            start -= 1
        while end < len(body) and body[end] in _DIGITS:
            end += 1
        try:
            value = float(body[start:end])
        except ValueError:  # not a number literal (a string's text)
            continue
        if value in (float("inf"), float("-inf")):
            return True
    return False


def overflowing_literal(body: bytes) -> RequestError | None:
    """The refusal of the first number literal of the JSON `body` that overflows float64 (e.g.
    `-1e999999`) outside an answer (`ANSWER_FIELDS`), or None: only the literal `-Infinity`
    masks a class. Nothing but a linear scan of the bytes unless a literal does overflow; then
    the standard parser finds where it is."""
    if not _may_overflow(body):
        return None
    try:
        found = _first_overflow(json.loads(body, parse_float=_overflow_or_float), ())
    except RecursionError:  # nested deeper than the parser goes: the literal is still there
        found = ("a literal beyond float64",)
    except ValueError:  # not JSON to the standard parser (validated by pydantic's): no location
        return None
    if found is None:
        return None
    *location, text = found
    shown = text if len(text) <= 24 else text[:20] + "…"
    return RequestError(
        tuple(location),
        f"the number {shown} is beyond float64's range (±1.8e308); send a finite number, or "
        "the literal -Infinity to mask a class",
        "finite_number",
    )


SOFTMAX_BODY = ArrayRequestBody(SoftmaxRequest, SOFTMAX_EXAMPLES, frozenset({"logits"}))
CROSS_ENTROPY_BODY = ArrayRequestBody(
    CrossEntropyRequest,
    CROSS_ENTROPY_EXAMPLES,
    frozenset({"logits", "labels", "weight", "vector"}),
)
LINEAR_CROSS_ENTROPY_BODY = ArrayRequestBody(
    LinearCrossEntropyRequest,
    LINEAR_CROSS_ENTROPY_EXAMPLES,
    frozenset({"input", "linear_weight", "linear_bias", "labels", "weight"}),
)
PROBLEM_BODY = RequestBody(ProblemRequest, PROBLEM_EXAMPLES)
GRADE_BODY = AnswerBody(GradeRequest, GRADE_EXAMPLES)

SoftmaxBody = Annotated[Received[SoftmaxRequest | ArrayBody[SoftmaxRequest]], Depends(SOFTMAX_BODY)]
CrossEntropyBody = Annotated[
    Received[CrossEntropyRequest | ArrayBody[CrossEntropyRequest]], Depends(CROSS_ENTROPY_BODY)
]
LinearCrossEntropyBody = Annotated[
    Received[LinearCrossEntropyRequest | ArrayBody[LinearCrossEntropyRequest]],
    Depends(LINEAR_CROSS_ENTROPY_BODY),
]
ProblemBody = Annotated[Received[ProblemRequest], Depends(PROBLEM_BODY)]
GradeBody = Annotated[Received[GradeRequest], Depends(GRADE_BODY)]
