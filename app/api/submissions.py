"""The bodies of the grading routes read from their bytes: how many submissions a batch holds
(decided before parsing, in linear time, whatever the keys' spelling), and students' answers
that the JSON parser cannot read (nested deeper than its limit), which are graded as unreadable
rather than failing the whole request.

Both read the body with one linear tokenizer (`_Tokens`): it finds strings and brackets with
anchored, non-backtracking patterns, so a string is read once from its opening quote to its end
(an unterminated string of 32,000 `\\"` is one token, not 32,000 retries).
"""

import json
import re
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from app.api.errors import pydantic_errors
from app.core.errors import RequestError
from app.grading.submissions import Unreadable

_STRUCTURE = re.compile(rb'["\[\]{},]')
_BRACKETS = re.compile(rb'["\[\]{}]')
_STRING_REST = re.compile(rb'[^"\\]*(?:\\[\s\S][^"\\]*)*')
"""The rest of a string after its opening quote, up to (not including) its closing quote or the
end of the body: each byte is read once (no alternative to backtrack into)."""
_LEADING_SPACE = re.compile(rb"[ \t\r\n]*")
SCAN_TOKEN_BUDGET = 1_000_000
"""Most tokens a scan reads (about half a second); beyond, the parsed body is checked instead."""
COUNTED_KEYS = frozenset({"submissions", "items"})
ANSWER_KEY = "submission"
MAX_ANSWER_DEPTH = 64
"""Nesting beyond which a student's answer is unreadable (the deepest part, the Jacobian, has 3
levels; the JSON parser stops at 200 for the whole body)."""
RECURSION_LIMIT = "recursion limit exceeded"
_ANSWER_LEVELS = 3
"""Levels above the deepest answer (`items[i].submission`)."""
_OPENING = frozenset(b"[{")
_CLOSING = frozenset(b"]}")


class _Tokens:
    """Strings, brackets and (optionally) commas of a JSON body, in order, in linear time."""

    def __init__(self, body: bytes, budget: int) -> None:
        self.body = body
        self.position = 0
        self.budget = budget

    def next(self, commas: bool = True) -> tuple[int, int, int] | None:
        """(first byte, start, end) of the next token, or None at the end of the body, after an
        unterminated string, or when the budget of tokens is spent."""
        if self.budget <= 0:
            return None
        self.budget -= 1
        match = (_STRUCTURE if commas else _BRACKETS).search(self.body, self.position)
        if match is None:
            return None
        start = match.start()
        first = self.body[start]
        if first == ord('"'):
            rest = _STRING_REST.match(self.body, start + 1)
            end = rest.end() if rest else start + 1
            if end >= len(self.body):
                return None
            self.position = end + 1
        else:
            self.position = start + 1
        return first, start, self.position


def _key(body: bytes, start: int, end: int) -> str | None:
    """The text of the string token body[start:end], escapes decoded (None if malformed)."""
    raw = body[start:end]
    if b"\\" not in raw:
        return raw[1:-1].decode("utf-8", "replace")
    try:
        key = json.loads(raw)
    except ValueError:
        return None
    return key if isinstance(key, str) else None


def too_many_elements(body: bytes, limit: int, budget: int = SCAN_TOKEN_BUDGET) -> bool:
    """Whether a top-level `submissions` or `items` array of the JSON object `body` has more
    than `limit` elements, from its bytes alone: keys are compared with their escapes decoded
    (`"ite\\u006ds"` is `items`), commas are counted at that array's own level only, strings are
    skipped whole, and inside an element only brackets are read (a gradient's numbers cost
    nothing). Stops at the (limit + 1)-th element; False when the body is not an object or the
    scan runs out of `budget` tokens (then the parsed list is counted)."""
    start = _LEADING_SPACE.match(body)
    if body[start.end() if start else 0 : (start.end() if start else 0) + 1] != b"{":
        return False
    tokens = _Tokens(body, budget)
    tokens.next()  # the opening brace
    depth = 1
    key: str | None = None
    expect_key = True
    counting = False
    commas = 0
    while (token := tokens.next(commas=depth == 1 or (depth == 2 and counting))) is not None:
        first, token_start, token_end = token
        if first == ord('"'):
            if depth == 1 and expect_key:
                key = _key(body, token_start, token_end)
                expect_key = False
        elif first in _OPENING:
            depth += 1
            if depth == 2:
                counting = first == ord("[") and key in COUNTED_KEYS
                commas = 0
        elif first in _CLOSING:
            depth -= 1
            if depth == 0:
                return False
            if depth == 1:
                counting = False
        elif depth == 1:
            expect_key = True
        else:  # a comma between two elements of a counted array
            commas += 1
            if commas >= limit:
                return True
    return False


@dataclass
class _Frame:
    """An open array or object: its location, where its next element or value goes, and how
    many levels its closed children nest (an empty array: 0)."""

    kind: int
    location: tuple[str | int, ...]
    start: int
    key: str | None = None
    index: int = 0
    expect_key: bool = True
    below: int = 0


def _is_answer(location: tuple[str | int, ...]) -> bool:
    """Whether a value at `location` is a student's answer: `submission`, `submissions[i]` or
    `items[i].submission`."""
    match location:
        case (str(key),):
            return key == ANSWER_KEY
        case (str(key), int()):
            return key == "submissions"
        case (str(key), int(), str(inner)):
            return key == "items" and inner == ANSWER_KEY
    return False


def deep_answers(
    body: bytes, max_depth: int = MAX_ANSWER_DEPTH, budget: int = 4 * SCAN_TOKEN_BUDGET
) -> list[tuple[tuple[str | int, ...], int, int]]:
    """(location, start, end) of each student's answer (an array or object) in the JSON object
    `body` that nests more than `max_depth` levels, in body order; empty if the scan runs out of
    `budget` tokens or the body is not well nested. Linear: a closing bracket hands its depth to
    its parent, and nothing deeper than an answer's limit is kept."""
    tokens = _Tokens(body, budget)
    stack: list[_Frame] = []
    untracked = 0  # open brackets below the deepest frame kept: their depth is enough to know
    found: list[tuple[tuple[str | int, ...], int, int]] = []
    while (token := tokens.next()) is not None:
        first, start, end = token
        if untracked:
            untracked += 1 if first in _OPENING else -1 if first in _CLOSING else 0
            continue
        top = stack[-1] if stack else None
        if first == ord('"'):
            if top is not None and top.kind == ord("{") and top.expect_key:
                top.key = _key(body, start, end)
                top.expect_key = False
        elif first == ord(","):
            if top is not None:
                top.index += 1
                top.expect_key = True
        elif first in _OPENING:
            if top is None:
                location: tuple[str | int, ...] = ()
            elif len(stack) > _ANSWER_LEVELS + max_depth:
                top.below = max_depth + 1
                untracked = 1
                continue
            elif top.kind == ord("{"):
                location = (*top.location, top.key if top.key is not None else "")
            else:
                location = (*top.location, top.index)
            stack.append(_Frame(first, location, start))
        elif first in _CLOSING:
            if not stack:
                return []
            frame = stack.pop()
            if stack:
                stack[-1].below = max(stack[-1].below, frame.below + 1)
            if frame.below + 1 > max_depth and _is_answer(frame.location):
                found.append((frame.location, frame.start, end))
    return found if not stack and not untracked else []


Model = TypeVar("Model", bound=BaseModel)


def parse_with_unreadable_answers(model: type[Model], body: bytes) -> Model:
    """`model` from `body`, where a student's answer nested too deep for the JSON parser is
    replaced by `Unreadable` (graded 0: "your answer could not be read: …"); 422 as usual for
    anything else, the caller's own fields included."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        if not any(
            item["type"] == "json_invalid" and RECURSION_LIMIT in item["msg"]
            for item in error.errors(include_url=False, include_input=False)
        ):
            raise RequestError.from_items(pydantic_errors(error)) from None
        first_error = error
    answers = deep_answers(body)
    if not answers:
        raise RequestError.from_items(pydantic_errors(first_error)) from None
    edited = bytearray()
    position = 0
    for _, start, end in answers:
        edited += body[position:start] + b"null"
        position = end
    edited += body[position:]
    try:
        value = model.model_validate_json(bytes(edited))
    except ValidationError as error:
        raise RequestError.from_items(pydantic_errors(error)) from None
    reason = Unreadable(f"it is nested more than {MAX_ANSWER_DEPTH} lists or objects deep")
    for location, _, _ in answers:
        _replace(value, location, reason)
    return value


def _replace(value: BaseModel, location: tuple[str | int, ...], unreadable: Unreadable) -> None:
    """Put `unreadable` at `location` (an answer's) in the parsed body."""
    match location:
        case (str(key),):
            setattr(value, key, unreadable)
        case (str(key), int(index)):
            getattr(value, key)[index] = unreadable
        case (str(key), int(index), str(inner)):
            setattr(getattr(value, key)[index], inner, unreadable)
