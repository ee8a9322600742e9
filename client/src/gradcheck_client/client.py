"""`Client` and `AsyncClient`: the service's routes as methods, numpy in and numpy out."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import httpx
import numpy as np

from gradcheck_client import wire
from gradcheck_client.errors import GradcheckError
from gradcheck_client.results import CandidateCheck, CrossEntropyResult, Problem, SoftmaxResult
from gradcheck_client.runner import run_suite
from gradcheck_client.suites import SuiteReport

__version__ = "0.1.0"

Reduction = Literal["mean", "sum", "none"]
Dtype = Literal["float64", "float32", "float16", "bfloat16"]
GradeFormat = Literal["native", "gradescope", "prairielearn"]

DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 3
DEFAULT_MAX_RETRY_WAIT = 30.0


def retry_delay(response: httpx.Response, attempt: int, cap: float) -> float:
    """Seconds to wait before retrying a 503: its Retry-After (seconds or an HTTP date), else
    1, 2, 4 … seconds; never more than `cap`."""
    header = response.headers.get("retry-after", "").strip()
    delay = float(2**attempt)
    if header:
        try:
            delay = float(header)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(header)
                delay = (when - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError):
                pass
    return min(max(delay, 0.0), cap)


def _with_url(error: httpx.TransportError, method: str, url: str) -> httpx.TransportError:
    """The same httpx error, its message naming the address that could not be reached."""
    message = f"{method} {url}: {error or type(error).__name__}"
    try:
        return type(error)(message, request=error.request)
    except (RuntimeError, TypeError):  # no request attached, or another signature
        return type(error)(message)


def _refuses(response: httpx.Response, field: str) -> bool:
    """A 422 whose detail refuses `field` itself as an unknown field."""
    detail = wire.error_detail(response)
    return isinstance(detail, list) and any(
        isinstance(item, dict)
        and item.get("loc") == ["body", field]
        and item.get("type") == "extra_forbidden"
        for item in detail
    )


def _problem_field(problem: Problem | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(problem, Problem):
        return problem.request_fields()
    return {k: wire.jsonable(v) for k, v in problem.items()}


class _Core:
    """What the sync and async clients share: settings, request bodies, result decoding."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        retries: int,
        max_retry_wait: float,
        binary: bool | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = max(0, retries)
        self.max_retry_wait = max_retry_wait
        self._binary = binary
        self._server_dim: bool | None = None
        self._headers = {"User-Agent": f"gradcheck-client/{__version__}"}
        if api_key:
            self._headers["X-API-Key"] = api_key

    @property
    def binary_requests(self) -> bool | None:
        """True once the service has taken an .npz request, False once it refused one with 415
        (JSON from then on), None before the first compute request."""
        return self._binary

    def _headers_for(self, content_type: str, accept: str) -> dict[str, str]:
        return {**self._headers, "Content-Type": content_type, "Accept": accept}

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            raise GradcheckError(
                response.status_code, wire.error_detail(response), str(response.request.url)
            )

    @staticmethod
    def _cross_entropy_body(
        logits: Any,
        labels: Any,
        *,
        weight: Any,
        ignore_index: int,
        reduction: str,
        label_smoothing: float,
        dtype: str,
        numeric: Mapping[str, Any] | None,
        tolerance: Mapping[str, float] | None,
        include: Sequence[str] | None,
        candidate: Mapping[str, Any] | None,
        z_loss: float | None,
        softcap: float | None,
    ) -> wire.Body:
        arrays: dict[str, Any] = {"logits": logits, "labels": labels}
        if weight is not None:
            arrays["weight"] = weight
        fields: dict[str, Any] = {
            "ignore_index": int(ignore_index),
            "reduction": reduction,
            "label_smoothing": float(label_smoothing),
            "dtype": dtype,
        }
        _common_fields(fields, arrays, numeric, tolerance, include, candidate)
        if z_loss is not None:
            fields["z_loss"] = float(z_loss)
        if softcap is not None:
            fields["softcap"] = float(softcap)
        return wire.Body(arrays, fields)

    @staticmethod
    def _softmax_body(
        logits: Any,
        *,
        dim: int | None,
        dtype: str,
        numeric: Mapping[str, Any] | None,
        tolerance: Mapping[str, float] | None,
        include: Sequence[str] | None,
        candidate: Mapping[str, Any] | None,
    ) -> wire.Body:
        arrays: dict[str, Any] = {"logits": logits}
        fields: dict[str, Any] = {"dtype": dtype}
        if dim is not None:
            fields["dim"] = int(dim)
        _common_fields(fields, arrays, numeric, tolerance, include, candidate)
        return wire.Body(arrays, fields)

    def _softmax_request(
        self, logits: Any, dim: int | None, server_dim: bool, **options: Any
    ) -> tuple[wire.Body, tuple[int, ...] | None, int]:
        """The body, and the shape and axis to restore when the client takes `dim` itself
        (a service without `dim` gets the logits as rows)."""
        if server_dim or dim is None:
            return self._softmax_body(logits, dim=dim, **options), None, 0
        rows, shape, axis = _softmax_dim(logits, dim)
        return self._softmax_body(rows, dim=None, **options), shape, axis

    def _uses_server_dim(self, dim: int | None) -> bool:
        return dim is not None and self._server_dim is not False

    def _learn_dim(self, response: httpx.Response) -> bool:
        """True when the service refused `dim` (it predates it): rows from then on."""
        if response.status_code == 422 and _refuses(response, "dim"):
            self._server_dim = False
            return True
        if response.status_code < 400:
            self._server_dim = True
        return False

    @staticmethod
    def _problem_body(seed: str | int, options: dict[str, Any]) -> bytes:
        body = {"seed": seed, **{k: v for k, v in options.items() if v is not None}}
        return wire.dumps(wire.jsonable(body))

    @staticmethod
    def _grading_body(
        problem_id: str | None,
        problem: Problem | Mapping[str, Any] | None,
        options: dict[str, Any],
        **rest: Any,
    ) -> bytes:
        body: dict[str, Any] = {}
        if problem_id is not None:
            body["problem_id"] = problem_id
        if problem is not None:
            if isinstance(problem, Problem) and problem_id is None:
                body["problem_id"] = problem.problem_id
            else:
                body["problem"] = _problem_field(problem)
        body.update({k: wire.jsonable(v) for k, v in options.items() if v is not None})
        body.update({k: wire.jsonable(v) for k, v in rest.items() if v is not None})
        return wire.dumps(body)

    @staticmethod
    def _items(items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        converted = []
        for item in items:
            entry = dict(item)
            problem = entry.get("problem")
            if isinstance(problem, Problem):
                del entry["problem"]
                entry.setdefault("problem_id", problem.problem_id)
            elif problem is not None:
                entry["problem"] = _problem_field(problem)
            converted.append(wire.jsonable(entry))
        return converted


def _common_fields(
    fields: dict[str, Any],
    arrays: dict[str, Any],
    numeric: Mapping[str, Any] | None,
    tolerance: Mapping[str, float] | None,
    include: Sequence[str] | None,
    candidate: Mapping[str, Any] | None,
) -> None:
    if numeric is not None:
        fields["numeric"] = dict(numeric)
    if tolerance is not None:
        fields["tolerance"] = {k: float(v) for k, v in tolerance.items()}
    if include is not None:
        fields["include"] = list(include)
    if candidate is not None:
        for name, value in candidate.items():
            arrays[f"candidate.{name}"] = value


def _grading_options(
    points: Mapping[str, float] | None,
    tolerance: Mapping[str, float] | None,
    partial_credit: bool | None,
    feedback: str | None,
    format: str | None,
    reveal_expected: bool | None,
    visibility: str | None,
) -> dict[str, Any]:
    return {
        "points": None if points is None else dict(points),
        "tolerance": None if tolerance is None else dict(tolerance),
        "partial_credit": partial_credit,
        "feedback": feedback,
        "format": format,
        "reveal_expected": reveal_expected,
        "visibility": visibility,
    }


def _softmax_dim(logits: Any, dim: int | None) -> tuple[Any, tuple[int, ...] | None, int]:
    """With `dim`: the logits as rows (class axis last, leading axes flattened), the shape to
    restore and the class axis; without it, the logits as they are."""
    if dim is None:
        return logits, None, 0
    array = wire.as_array(logits)
    axis = dim % array.ndim
    moved = np.moveaxis(array, axis, -1)
    return moved.reshape(-1, moved.shape[-1]), moved.shape, axis


def _restore_dim(result: SoftmaxResult, shape: tuple[int, ...] | None, axis: int) -> SoftmaxResult:
    """Rows back to the caller's layout: probabilities with the class axis where it was, the
    Jacobians as (*batch axes, C, C)."""
    if shape is None:
        return result
    arrays = dict(result.arrays)
    for name in ("probabilities", "log_probabilities"):
        if name in arrays:
            arrays[name] = np.moveaxis(arrays[name].reshape(shape), -1, axis)
    for name in ("jacobian", "numeric_jacobian"):
        if name in arrays:
            arrays[name] = arrays[name].reshape(*shape, shape[-1])
    return wire.softmax_result(arrays, result.raw)


class Client(_Core):
    """A synchronous client of one gradcheck service.

    ```python
    with Client("http://127.0.0.1:8000") as service:
        result = service.cross_entropy(logits, labels)
    ```

    Arrays go out as `.npz` when the service takes binary requests (tried once; after a 415
    the client sends JSON, -Infinity masks included) and come back as numpy arrays. A 503 is
    retried up to `retries` times, waiting as its Retry-After says (at most `max_retry_wait`
    seconds each time); any other error status raises `GradcheckError`; a connection problem
    raises the httpx error, its message naming the URL.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        *,
        retries: int = DEFAULT_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        binary: bool | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retries, max_retry_wait, binary)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _send(self, path: str, content: bytes, content_type: str, accept: str) -> httpx.Response:
        url = self.base_url + path
        for attempt in range(self.retries + 1):
            try:
                response = self._http.post(
                    path, content=content, headers=self._headers_for(content_type, accept)
                )
            except httpx.TransportError as error:
                raise _with_url(error, "POST", url) from error
            if response.status_code != 503 or attempt == self.retries:
                return response
            time.sleep(retry_delay(response, attempt, self.max_retry_wait))
        raise AssertionError("unreachable")  # pragma: no cover

    def _compute(self, path: str, body: wire.Body) -> httpx.Response:
        if self._binary is not False:
            content = body.npz()
            if content is not None:
                response = self._send(path, content, wire.NPZ_MEDIA_TYPE, wire.NPZ_MEDIA_TYPE)
                if response.status_code != 415:
                    if response.status_code < 400 or response.status_code == 422:
                        self._binary = True
                    return response
                self._binary = False
        return self._send(path, body.json(), wire.JSON_MEDIA_TYPE, wire.NPZ_MEDIA_TYPE)

    def _post_json(self, path: str, content: bytes) -> Any:
        response = self._send(path, content, wire.JSON_MEDIA_TYPE, wire.JSON_MEDIA_TYPE)
        self._raise_for(response)
        return response.json()

    def cross_entropy(
        self,
        logits: Any,
        labels: Any,
        *,
        weight: Any = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        dtype: Dtype = "float64",
        numeric: Mapping[str, Any] | None = None,
        tolerance: Mapping[str, float] | None = None,
        include: Sequence[str] | None = None,
        candidate: Mapping[str, Any] | None = None,
        z_loss: float | None = None,
        softcap: float | None = None,
    ) -> CrossEntropyResult:
        """`POST /v1/cross-entropy`: loss, gradient, checks (and `candidate_check` when you
        send `candidate`, a dict of your own outputs: probabilities, log_probabilities, loss,
        losses, gradient, jacobian). Arrays are anything `np.asarray` takes, torch tensors
        included; the options mean what they mean in `torch.nn.functional.cross_entropy`."""
        body = self._cross_entropy_body(
            logits,
            labels,
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            dtype=dtype,
            numeric=numeric,
            tolerance=tolerance,
            include=include,
            candidate=candidate,
            z_loss=z_loss,
            softcap=softcap,
        )
        response = self._compute("/v1/cross-entropy", body)
        self._raise_for(response)
        return wire.cross_entropy_result(*wire.read_compute(response))

    def test(
        self,
        fn: Callable[..., Any],
        suite: str | Path | Mapping[str, Any] = "basics",
        *,
        framework: Literal["numpy", "torch"] = "numpy",
        supports: Collection[str] = (),
        options: Mapping[str, Any] | None = None,
    ) -> SuiteReport:
        """Run `fn(logits, labels, **options) -> (loss, gradient)` on every case of `suite` (a
        name served by `GET /v1/suites`, a course's JSON file as a `Path`, or such a document)
        and check its outputs; a failing case is shrunk to a smallest problem that fails the same
        way (at most 100 service calls), with a reproduction to paste. See
        `gradcheck_client.runner` for which options are passed and when a case is not
        applicable."""
        return run_suite(self, fn, suite, framework=framework, supports=supports, options=options)

    def softmax(
        self,
        logits: Any,
        *,
        dim: int | None = None,
        dtype: Dtype = "float64",
        numeric: Mapping[str, Any] | None = None,
        tolerance: Mapping[str, float] | None = None,
        include: Sequence[str] | None = None,
        candidate: Mapping[str, Any] | None = None,
    ) -> SoftmaxResult:
        """`POST /v1/softmax`: probabilities, Jacobian, checks. With `dim`, softmax is taken
        along that axis (as `torch.softmax(x, dim)`): probabilities come back in the input's
        layout and Jacobians as (*other axes, C, C), and a candidate is in the same shapes. (A
        service that predates `dim` gets the logits as rows, class axis last; the results are
        put back in your layout, but a candidate must then be given as those rows.)"""
        options: dict[str, Any] = {
            "dtype": dtype,
            "numeric": numeric,
            "tolerance": tolerance,
            "include": include,
            "candidate": candidate,
        }
        server_dim = self._uses_server_dim(dim)
        body, shape, axis = self._softmax_request(logits, dim, server_dim, **options)
        response = self._compute("/v1/softmax", body)
        if server_dim and self._learn_dim(response):
            body, shape, axis = self._softmax_request(logits, dim, False, **options)
            response = self._compute("/v1/softmax", body)
        self._raise_for(response)
        return _restore_dim(wire.softmax_result(*wire.read_compute(response)), shape, axis)

    def check(
        self,
        logits: Any,
        labels: Any = None,
        *,
        candidate: Mapping[str, Any],
        include: Sequence[str] = (),
        **options: Any,
    ) -> CandidateCheck:
        """Your outputs (`candidate`) against the exact reference: the candidate check alone.
        With `labels` it is cross-entropy's (options as `cross_entropy`), without them
        softmax's (probabilities, log_probabilities, jacobian)."""
        if labels is None:
            result: SoftmaxResult = self.softmax(
                logits, candidate=candidate, include=include, **options
            )
        else:
            result = self.cross_entropy(
                logits, labels, candidate=candidate, include=include, **options
            )
        if result.candidate_check is None:
            raise GradcheckError(200, "the response has no candidate_check", self.base_url)
        return result.candidate_check

    def problems(
        self,
        seed: str | int,
        *,
        batch_size: int | None = None,
        num_classes: int | None = None,
        label_type: Literal["index", "probabilities"] | None = None,
        logit_scale: float | None = None,
        weight: Any = None,
        ignore_index: int | None = None,
        reduction: Reduction | None = None,
        label_smoothing: float | None = None,
        dtype: Dtype | None = None,
    ) -> Problem:
        """`POST /v1/problems`: the seeded problem of `seed` (e.g. "hw3:ada@example.edu");
        options left None take the service's defaults."""
        options = dict(locals())
        for name in ("self", "seed"):
            del options[name]
        data = self._post_json("/v1/problems", self._problem_body(seed, options))
        return Problem.from_json(data)

    def grade(
        self,
        submission: Any,
        *,
        problem_id: str | None = None,
        problem: Problem | Mapping[str, Any] | None = None,
        points: Mapping[str, float] | None = None,
        tolerance: Mapping[str, float] | None = None,
        partial_credit: bool | None = None,
        feedback: str | None = None,
        format: GradeFormat | None = None,
        reveal_expected: bool | None = None,
        visibility: str | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/grade`: one answer (a dict of loss, gradient, … as arrays or lists) to a
        problem given by id or in full. Returns the result in the requested `format` (native,
        gradescope or prairielearn) as the service wrote it."""
        options = _grading_options(
            points, tolerance, partial_credit, feedback, format, reveal_expected, visibility
        )
        content = self._grading_body(problem_id, problem, options, submission=submission)
        result: dict[str, Any] = self._post_json("/v1/grade", content)
        return result

    def grade_batch(
        self,
        submissions: Sequence[Any] | None = None,
        *,
        problem_id: str | None = None,
        problem: Problem | Mapping[str, Any] | None = None,
        items: Sequence[Mapping[str, Any]] | None = None,
        points: Mapping[str, float] | None = None,
        tolerance: Mapping[str, float] | None = None,
        partial_credit: bool | None = None,
        feedback: str | None = None,
        format: GradeFormat | None = None,
        reveal_expected: bool | None = None,
        visibility: str | None = None,
    ) -> list[dict[str, Any]]:
        """`POST /v1/grade/batch`: many answers to one problem (`submissions`), or a roster
        (`items`: dicts of problem_id or problem, submission and an optional student label),
        in one call. Returns one result per answer, in order."""
        options = _grading_options(
            points, tolerance, partial_credit, feedback, format, reveal_expected, visibility
        )
        content = self._grading_body(
            problem_id,
            problem,
            options,
            submissions=None if submissions is None else list(submissions),
            items=None if items is None else self._items(items),
        )
        results: list[dict[str, Any]] = self._post_json("/v1/grade/batch", content)["results"]
        return results


class AsyncClient(_Core):
    """The asynchronous twin of `Client`: the same methods, awaited.

    ```python
    async with AsyncClient("http://127.0.0.1:8000") as service:
        result = await service.cross_entropy(logits, labels)
    ```
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        *,
        retries: int = DEFAULT_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        binary: bool | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retries, max_retry_wait, binary)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _send(
        self, path: str, content: bytes, content_type: str, accept: str
    ) -> httpx.Response:
        url = self.base_url + path
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.post(
                    path, content=content, headers=self._headers_for(content_type, accept)
                )
            except httpx.TransportError as error:
                raise _with_url(error, "POST", url) from error
            if response.status_code != 503 or attempt == self.retries:
                return response
            await asyncio.sleep(retry_delay(response, attempt, self.max_retry_wait))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _compute(self, path: str, body: wire.Body) -> httpx.Response:
        if self._binary is not False:
            content = body.npz()
            if content is not None:
                response = await self._send(path, content, wire.NPZ_MEDIA_TYPE, wire.NPZ_MEDIA_TYPE)
                if response.status_code != 415:
                    if response.status_code < 400 or response.status_code == 422:
                        self._binary = True
                    return response
                self._binary = False
        return await self._send(path, body.json(), wire.JSON_MEDIA_TYPE, wire.NPZ_MEDIA_TYPE)

    async def _post_json(self, path: str, content: bytes) -> Any:
        response = await self._send(path, content, wire.JSON_MEDIA_TYPE, wire.JSON_MEDIA_TYPE)
        self._raise_for(response)
        return response.json()

    async def cross_entropy(
        self,
        logits: Any,
        labels: Any,
        *,
        weight: Any = None,
        ignore_index: int = -100,
        reduction: Reduction = "mean",
        label_smoothing: float = 0.0,
        dtype: Dtype = "float64",
        numeric: Mapping[str, Any] | None = None,
        tolerance: Mapping[str, float] | None = None,
        include: Sequence[str] | None = None,
        candidate: Mapping[str, Any] | None = None,
        z_loss: float | None = None,
        softcap: float | None = None,
    ) -> CrossEntropyResult:
        """`POST /v1/cross-entropy`, as `Client.cross_entropy`."""
        body = self._cross_entropy_body(
            logits,
            labels,
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            dtype=dtype,
            numeric=numeric,
            tolerance=tolerance,
            include=include,
            candidate=candidate,
            z_loss=z_loss,
            softcap=softcap,
        )
        response = await self._compute("/v1/cross-entropy", body)
        self._raise_for(response)
        return wire.cross_entropy_result(*wire.read_compute(response))

    async def softmax(
        self,
        logits: Any,
        *,
        dim: int | None = None,
        dtype: Dtype = "float64",
        numeric: Mapping[str, Any] | None = None,
        tolerance: Mapping[str, float] | None = None,
        include: Sequence[str] | None = None,
        candidate: Mapping[str, Any] | None = None,
    ) -> SoftmaxResult:
        """`POST /v1/softmax`, as `Client.softmax`."""
        options: dict[str, Any] = {
            "dtype": dtype,
            "numeric": numeric,
            "tolerance": tolerance,
            "include": include,
            "candidate": candidate,
        }
        server_dim = self._uses_server_dim(dim)
        body, shape, axis = self._softmax_request(logits, dim, server_dim, **options)
        response = await self._compute("/v1/softmax", body)
        if server_dim and self._learn_dim(response):
            body, shape, axis = self._softmax_request(logits, dim, False, **options)
            response = await self._compute("/v1/softmax", body)
        self._raise_for(response)
        return _restore_dim(wire.softmax_result(*wire.read_compute(response)), shape, axis)

    async def check(
        self,
        logits: Any,
        labels: Any = None,
        *,
        candidate: Mapping[str, Any],
        include: Sequence[str] = (),
        **options: Any,
    ) -> CandidateCheck:
        """The candidate check alone, as `Client.check`."""
        if labels is None:
            result: SoftmaxResult = await self.softmax(
                logits, candidate=candidate, include=include, **options
            )
        else:
            result = await self.cross_entropy(
                logits, labels, candidate=candidate, include=include, **options
            )
        if result.candidate_check is None:
            raise GradcheckError(200, "the response has no candidate_check", self.base_url)
        return result.candidate_check

    async def problems(
        self,
        seed: str | int,
        *,
        batch_size: int | None = None,
        num_classes: int | None = None,
        label_type: Literal["index", "probabilities"] | None = None,
        logit_scale: float | None = None,
        weight: Any = None,
        ignore_index: int | None = None,
        reduction: Reduction | None = None,
        label_smoothing: float | None = None,
        dtype: Dtype | None = None,
    ) -> Problem:
        """`POST /v1/problems`, as `Client.problems`."""
        options = dict(locals())
        for name in ("self", "seed"):
            del options[name]
        data = await self._post_json("/v1/problems", self._problem_body(seed, options))
        return Problem.from_json(data)

    async def grade(
        self,
        submission: Any,
        *,
        problem_id: str | None = None,
        problem: Problem | Mapping[str, Any] | None = None,
        points: Mapping[str, float] | None = None,
        tolerance: Mapping[str, float] | None = None,
        partial_credit: bool | None = None,
        feedback: str | None = None,
        format: GradeFormat | None = None,
        reveal_expected: bool | None = None,
        visibility: str | None = None,
    ) -> dict[str, Any]:
        """`POST /v1/grade`, as `Client.grade`."""
        options = _grading_options(
            points, tolerance, partial_credit, feedback, format, reveal_expected, visibility
        )
        content = self._grading_body(problem_id, problem, options, submission=submission)
        result: dict[str, Any] = await self._post_json("/v1/grade", content)
        return result

    async def grade_batch(
        self,
        submissions: Sequence[Any] | None = None,
        *,
        problem_id: str | None = None,
        problem: Problem | Mapping[str, Any] | None = None,
        items: Sequence[Mapping[str, Any]] | None = None,
        points: Mapping[str, float] | None = None,
        tolerance: Mapping[str, float] | None = None,
        partial_credit: bool | None = None,
        feedback: str | None = None,
        format: GradeFormat | None = None,
        reveal_expected: bool | None = None,
        visibility: str | None = None,
    ) -> list[dict[str, Any]]:
        """`POST /v1/grade/batch`, as `Client.grade_batch`."""
        options = _grading_options(
            points, tolerance, partial_credit, feedback, format, reveal_expected, visibility
        )
        content = self._grading_body(
            problem_id,
            problem,
            options,
            submissions=None if submissions is None else list(submissions),
            items=None if items is None else self._items(items),
        )
        body = await self._post_json("/v1/grade/batch", content)
        results: list[dict[str, Any]] = body["results"]
        return results
