"""What the routes depend on: the settings, the signing key and the request body, as `Annotated`
aliases (one per body model), so every /v1 route takes its inputs the same way.

Bodies are read by `RequestBody`, not by FastAPI's own body parameter: FastAPI parses JSON with
the standard `json.loads` and then validates the Python objects, about 5× slower for large arrays
than pydantic's Rust parser reading the bytes (`model_validate_json`), which this uses. Its models
are documented in OpenAPI by `app.api.docs.document_request_bodies`, which finds them on the
routes.
"""

import email.message
import json
import re
from contextvars import ContextVar
from typing import Annotated, Any, Generic, TypeVar

import numpy as np
from fastapi import Depends, Request
from fastapi.exceptions import HTTPException
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.encoding import NPZ_MEDIA_TYPE, read_npz_request
from app.api.errors import pydantic_errors
from app.api.examples import (
    CROSS_ENTROPY_EXAMPLES,
    PROBLEM_EXAMPLES,
    SOFTMAX_EXAMPLES,
)
from app.api.schemas.compute import CrossEntropyRequest, SoftmaxRequest
from app.api.schemas.grading import ProblemRequest
from app.core.budget import MemoryBudget
from app.core.config import Settings
from app.core.errors import RequestError
from app.numerics.candidate import default_tolerance

Model = TypeVar("Model", bound=BaseModel)

INLINE_PARSE_BYTES = 32 * 1024
"""Bodies up to this size are parsed on the event loop: about 0.1 ms, what the hop to a worker
thread would cost."""
PARSED_BYTES_PER_BODY_BYTE = 16
"""Bound on the Python objects parsing makes per byte of JSON: a number takes at least two
characters ("0,") and becomes a float in a list (24 + 8 bytes). Parsing a large body is admitted
by the memory budget for this much, before the route admits the request's own cost."""
OVERFLOWING_NUMBER = re.compile(rb"[eE]\+?\d{3,}")
"""Number literals whose exponent has three or more digits: the only ones that can overflow."""
JSON_BODY: ContextVar[bytes | None] = ContextVar("json_body", default=None)
"""The JSON body of the request being served, for `refuse_overflowing_literals`: a literal that
overflows float64 parses to ±∞, and where −∞ is a mask (logits) the text tells them apart. Set
where the body is read (on the event loop: the route's worker thread sees it)."""
NOT_JSON = "Send the body as JSON with the header Content-Type: application/json."
NOT_UTF8 = "Send the body as UTF-8 JSON: charset {charset} is not read (RFC 8259 requires UTF-8)."


async def app_settings(request: Request) -> Settings:
    """The settings of the app serving the request (`create_app` keeps them on app.state).

    Read directly rather than through `dependency_overrides[get_settings]`, which FastAPI
    re-inspects on every request (about 0.1 ms each).
    """
    settings: Settings = request.app.state.settings
    return settings


async def signing_key(request: Request) -> bytes:
    """The key that signs problem ids (`app.api.security.signing_key`, kept on app.state)."""
    key: bytes = request.app.state.signing_key
    return key


SettingsDep = Annotated[Settings, Depends(app_settings)]
SigningKeyDep = Annotated[bytes, Depends(signing_key)]


def _is_npz(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == NPZ_MEDIA_TYPE


def _check_media_type(content_type: str) -> None:
    """415 unless the body is declared as JSON (application/json or application/*+json) in
    UTF-8, the only encoding JSON allows."""
    if content_type == "application/json":  # the usual header: nothing to parse
        return
    message = email.message.Message()
    message["content-type"] = content_type
    media_type = message.get_content_type()
    if (
        not (
            media_type == "application/json"
            or (media_type.startswith("application/") and media_type.endswith("+json"))
        )
        or not content_type.strip()
    ):
        raise HTTPException(415, NOT_JSON)
    charset = message.get_param("charset")
    if isinstance(charset, str) and charset.lower().replace("-", "") != "utf8":
        raise HTTPException(415, NOT_UTF8.format(charset=json.dumps(charset[:40])))


class RequestBody(Generic[Model]):
    """A dependency that reads the request's body as `model`: 415 unless JSON in UTF-8, 422
    naming each bad field.

    The body is validated straight from bytes, which accepts the `-Infinity` literal that Python's
    `json` writes for a masked logit. A literal too large for float64 (`-1e999999`) also parses
    to ±∞ there; it is refused by `refuse_overflowing_literals`. Bodies over INLINE_PARSE_BYTES
    are parsed in a worker thread, so that a large body never holds up the event loop.
    """

    def __init__(
        self,
        model: type[Model],
        examples: dict[str, Any],
        array_fields: dict[str, object] | None = None,
    ) -> None:
        """`array_fields`: the fields an `application/x-npz` body may send as arrays, each with
        a JSON value that validates in its place (None: this body is JSON only)."""
        self.model = model
        self.examples = examples
        self.array_fields = array_fields

    async def __call__(self, request: Request) -> Model:
        content_type = request.headers.get("content-type", "")
        binary = self.array_fields is not None and _is_npz(content_type)
        if not binary:
            _check_media_type(content_type)
        if binary:  # read, not kept on the request: its arrays are all that stays
            body = b"".join([chunk async for chunk in request.stream()])
        else:
            body = await request.body()
        JSON_BODY.set(None if binary else body)
        parse = self.parse_npz if binary else self.parse
        if len(body) <= INLINE_PARSE_BYTES:
            return parse(body)
        budget: MemoryBudget = request.app.state.budget
        per_byte = 2 if binary else PARSED_BYTES_PER_BODY_BYTE  # stored arrays, then float64
        async with budget.admit(len(body) * per_byte):
            return await run_in_threadpool(parse, body)

    def parse_npz(self, body: bytes) -> Model:
        """`model` from an .npz body: `request.json` validated as JSON is, the arrays put in
        their fields as they are (they never become Python lists). A candidate sent as arrays
        is compared with the tolerance of its own precision unless `tolerance` is given
        (`app.numerics.candidate.DEFAULT_TOLERANCE`)."""
        assert self.array_fields is not None
        fields, arrays = read_npz_request(body)
        placeholders: dict[str, object] = {}
        candidate: dict[str, np.ndarray] = {}
        for name, array in arrays.items():
            if name.startswith("candidate."):
                candidate[name.removeprefix("candidate.")] = array
            elif name in self.array_fields:
                placeholders[name] = self.array_fields[name]
            else:
                known = ", ".join(sorted(self.array_fields))
                raise RequestError((name,), f"not an array field of this request ({known})")
            if name in fields:
                raise RequestError(
                    (name,), f"{name} is sent twice: as a member and in request.json"
                )
        if candidate:
            given = fields.get("candidate")
            fields["candidate"] = {
                **(given if isinstance(given, dict) else {}),
                **dict.fromkeys(candidate),
            }
            if "tolerance" not in fields:
                atol, rtol = default_tolerance(array.dtype for array in candidate.values())
                fields["tolerance"] = {"atol": atol, "rtol": rtol}
        try:
            value = self.model.model_validate({**fields, **placeholders})
        except ValidationError as error:
            raise RequestError.from_items(pydantic_errors(error)) from None
        update: dict[str, object] = {name: arrays[name] for name in placeholders}
        if candidate:
            sent: BaseModel = getattr(value, "candidate")  # noqa: B009 (Model is generic)
            update["candidate"] = sent.model_copy(update=candidate)
        return value.model_copy(update=update)

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


def refuse_overflowing_literals_of_request() -> None:
    """`refuse_overflowing_literals` of the JSON body of the request being served (none for a
    binary body). Called only where a −∞ was parsed (`app.api.inputs.parse_logits`)."""
    body = JSON_BODY.get()
    if body is not None:
        refuse_overflowing_literals(body)


def refuse_overflowing_literals(body: bytes) -> None:
    """422 at the first number literal that overflows float64 (e.g. `-1e999999`): only the
    literal `-Infinity` masks a class. The slow standard parser runs only on a body with a
    three-digit exponent."""
    if not OVERFLOWING_NUMBER.search(body):
        return
    found = _first_overflow(json.loads(body, parse_float=_overflow_or_float), ())
    if found is not None:
        *location, text = found
        shown = text if len(text) <= 24 else text[:20] + "…"
        raise RequestError(
            tuple(location),
            f"the number {shown} is beyond float64's range (±1.8e308); send a finite number, or "
            "the literal -Infinity to mask a class",
            "finite_number",
        )


SOFTMAX_BODY = RequestBody(SoftmaxRequest, SOFTMAX_EXAMPLES, {"logits": [0.0, 0.0]})
CROSS_ENTROPY_BODY = RequestBody(
    CrossEntropyRequest,
    CROSS_ENTROPY_EXAMPLES,
    {"logits": [0.0, 0.0], "labels": 0, "weight": [0.0, 0.0], "vector": [0.0, 0.0]},
)
PROBLEM_BODY = RequestBody(ProblemRequest, PROBLEM_EXAMPLES)

SoftmaxBody = Annotated[SoftmaxRequest, Depends(SOFTMAX_BODY)]
CrossEntropyBody = Annotated[CrossEntropyRequest, Depends(CROSS_ENTROPY_BODY)]
ProblemBody = Annotated[ProblemRequest, Depends(PROBLEM_BODY)]
