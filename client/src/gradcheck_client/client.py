"""`Client` and `AsyncClient`: the service's routes as methods, numpy in and numpy out.

Both have the same methods with the same parameters (the async ones awaited), as httpx's
`Client` and `AsyncClient` do; what they share (request bodies, result decoding, errors) lives
in `_Core`. Every request field of the service is a parameter and every response field an
attribute of the result (tests/client/test_parity.py compares them with the OpenAPI schema).
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import zipfile
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypedDict, TypeVar

import httpx

from gradcheck_client import blocks, linear, wire
from gradcheck_client.errors import ResponseError, TransportError, status_error
from gradcheck_client.linear import LinearCandidate, LinearCrossEntropyResult, LinearOutput
from gradcheck_client.results import (
    GRADING_RESULTS,
    BatchGrades,
    CandidateCheck,
    ClassSummary,
    CrossEntropyResult,
    GradingResult,
    Problem,
    SoftmaxResult,
)
from gradcheck_client.runner import run_suite
from gradcheck_client.suites import (
    Suite,
    SuiteReport,
    SuiteSummary,
    _aget,
    _get,
    afetch_case,
    afetch_suite,
    fetch_case,
    fetch_suite,
    suite_list,
)
from gradcheck_client.version import __version__

Reduction = Literal["mean", "sum", "none"]
Dtype = Literal["float64", "float32"]
"""The precision the service computes in. Your candidate's arrays keep their own dtype
(float64, float32, float16 or bfloat16): that is not this."""
Method = Literal["central", "forward", "five_point", "complex_step"]
SoftmaxOutput = Literal["probabilities", "log_probabilities", "jacobian", "numeric_jacobian"]
Output = Literal[
    "probabilities",
    "log_probabilities",
    "loss",
    "gradient",
    "numeric_gradient",
    "jacobian",
    "numeric_jacobian",
    "hessian",
    "numeric_hessian",
    "hessian_vector_product",
]
LabelType = Literal["index", "probabilities"]
Part = Literal["probabilities", "loss", "gradient", "jacobian", "hessian"]
Feedback = Literal["none", "verdict", "full"]
GradeFormat = Literal["native", "gradescope", "prairielearn"]
Visibility = Literal["visible", "hidden", "after_due_date", "after_published"]


class NumericOptions(TypedDict, total=False):
    """`numeric` of /v1/softmax: how the numeric derivative is taken."""

    method: Method
    step: float


class GradientNumericOptions(NumericOptions, total=False):
    """`numeric` of /v1/cross-entropy: also `directions`, a check along k random directions."""

    directions: int


class ToleranceOptions(TypedDict, total=False):
    """`tolerance`: |analytic − numeric| ≤ atol + rtol·|numeric| (for a candidate, |got −
    expected| ≤ atol + rtol·|expected|)."""

    atol: float
    rtol: float


class SoftmaxCandidate(TypedDict, total=False):
    """Your own softmax outputs (arrays, lists or tensors, in the response's shapes)."""

    probabilities: Any
    log_probabilities: Any
    jacobian: Any


class LossCandidate(SoftmaxCandidate, total=False):
    """Your own cross-entropy outputs (arrays, lists or tensors, in the response's shapes)."""

    loss: Any
    losses: Any
    gradient: Any
    hessian: Any


DEFAULT_TIMEOUT = 60.0
MAX_BLOCKS_IN_FLIGHT = 8
"""Requests of one batch sent by blocks (`row_block`) that are in flight at once."""
DEFAULT_RETRIES = 3
DEFAULT_MAX_RETRY_WAIT = 30.0

Result = TypeVar("Result")


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


def _transport_error(error: Exception, url: str) -> TransportError:
    """An httpx error as the client's own, naming the address that could not be reached."""
    return TransportError(f"POST {url}: {error or type(error).__name__}", url)


def _problem_field(problem: Problem | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(problem, Problem):
        return problem.request_fields()
    return {k: wire.jsonable(v) for k, v in problem.items()}


def _present(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields given (None means "the service's default")."""
    return {name: value for name, value in fields.items() if value is not None}


def _grade_reader(format: GradeFormat | None) -> Callable[[httpx.Response], GradingResult]:
    """Reads /v1/grade's result in `format` (None: the service's default, native)."""
    kind = GRADING_RESULTS[format or "native"]
    return lambda response: kind.from_json(response.json())


def _grades_reader(format: GradeFormat | None) -> Callable[[httpx.Response], BatchGrades]:
    """Reads /v1/grade/batch's results in `format` and its class summary."""
    kind = GRADING_RESULTS[format or "native"]

    def read(response: httpx.Response) -> BatchGrades:
        data = response.json()
        return BatchGrades(
            results=tuple(kind.from_json(result) for result in data["results"]),
            summary=ClassSummary.from_json(data["summary"]),
            raw=data,
        )

    return read


class _Core:
    """What the sync and async clients share: settings, request bodies, result decoding and
    the errors."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        retries: int,
        max_retry_wait: float,
        binary: bool,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = max(0, retries)
        self.max_retry_wait = max_retry_wait
        self.binary = binary
        self._headers = {"User-Agent": f"gradcheck-client/{__version__}"}
        if api_key:
            self._headers["X-API-Key"] = api_key

    def _headers_for(self, content_type: str, accept: str) -> dict[str, str]:
        return {**self._headers, "Content-Type": content_type, "Accept": accept}

    def _compute_content(self, body: wire.Body) -> tuple[bytes, str]:
        """The body as .npz when binary and every value is a rectangular array, else JSON."""
        content = body.npz() if self.binary else None
        if content is not None:
            return content, wire.NPZ_MEDIA_TYPE
        return body.json(), wire.JSON_MEDIA_TYPE

    def _read(self, response: httpx.Response, decode: Callable[[httpx.Response], Result]) -> Result:
        """The decoded result of a success, or the error of an error status."""
        url = str(response.request.url)
        if response.status_code >= 400:
            raise status_error(response.status_code, wire.error_detail(response), url)
        try:
            return decode(response)
        except (KeyError, ValueError, TypeError, AttributeError, zipfile.BadZipFile) as error:
            detail = f"{type(error).__name__}: {error}"
            raise ResponseError(
                f"HTTP {response.status_code} from {url}: not the documented response ({detail})",
                url,
            ) from error

    @staticmethod
    def _cross_entropy_body(
        logits: Any,
        labels: Any,
        *,
        weight: Any,
        ignore_index: int | None,
        reduction: Reduction | None,
        label_smoothing: float | None,
        dtype: Dtype | None,
        numeric: GradientNumericOptions | None,
        z_loss: float | None,
        softcap: float | None,
        tolerance: ToleranceOptions | None,
        include: Sequence[Output] | None,
        vector: Any,
        candidate: LossCandidate | Mapping[str, Any] | None,
        denominator: float | None = None,
    ) -> wire.Body:
        arrays = _present({"logits": logits, "labels": labels, "weight": weight, "vector": vector})
        fields = _present(
            {
                "ignore_index": ignore_index,
                "reduction": reduction,
                "label_smoothing": label_smoothing,
                "dtype": dtype,
                "numeric": numeric,
                "z_loss": z_loss,
                "softcap": softcap,
                "denominator": denominator,
                "tolerance": tolerance,
                "include": None if include is None else list(include),
            }
        )
        for name, value in (candidate or {}).items():
            arrays[f"candidate.{name}"] = value
        return wire.Body(arrays, wire.jsonable(fields))

    @staticmethod
    def _softmax_body(
        logits: Any,
        *,
        dim: int | None,
        dtype: Dtype | None,
        numeric: NumericOptions | None,
        tolerance: ToleranceOptions | None,
        include: Sequence[SoftmaxOutput] | None,
        candidate: SoftmaxCandidate | Mapping[str, Any] | None,
    ) -> wire.Body:
        arrays: dict[str, Any] = {"logits": logits}
        fields = _present(
            {
                "dim": dim,
                "dtype": dtype,
                "numeric": numeric,
                "tolerance": tolerance,
                "include": None if include is None else list(include),
            }
        )
        for name, value in (candidate or {}).items():
            arrays[f"candidate.{name}"] = value
        return wire.Body(arrays, wire.jsonable(fields))

    @staticmethod
    def _problem_body(seed: str | int, options: Mapping[str, Any]) -> bytes:
        return wire.dumps(wire.jsonable({"seed": seed, **_present(options)}))

    @staticmethod
    def _grading_body(
        problem_id: str | None,
        problem: Problem | Mapping[str, Any] | None,
        options: Mapping[str, Any],
    ) -> bytes:
        body: dict[str, Any] = {}
        if problem_id is not None:
            body["problem_id"] = problem_id
        if problem is not None:
            if isinstance(problem, Problem) and problem_id is None:
                body["problem_id"] = problem.problem_id
            else:
                body["problem"] = _problem_field(problem)
        body.update(wire.jsonable(_present(options)))
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

    @staticmethod
    def _candidate_check(result: SoftmaxResult, url: str) -> CandidateCheck:
        if result.candidate_check is None:
            raise ResponseError(f"{url}: the response has no candidate_check", url)
        return result.candidate_check

    @staticmethod
    def _compute_result(response: httpx.Response) -> CrossEntropyResult:
        return wire.cross_entropy_result(*wire.read_compute(response))

    @staticmethod
    def _softmax_result(response: httpx.Response) -> SoftmaxResult:
        return wire.softmax_result(*wire.read_compute(response))

    @staticmethod
    def _problem(response: httpx.Response) -> Problem:
        return Problem.from_json(response.json())


class Client(_Core):
    """A synchronous client of one gradcheck service.

    ```python
    with Client("http://127.0.0.1:8000") as service:
        result = service.cross_entropy(logits, labels)
    ```

    Arrays go out as `.npz` (every array in its own dtype; `binary=False`: JSON, -Infinity
    masks included) and come back as numpy arrays. A 503 is retried up to `retries` times,
    waiting as its Retry-After says (at most `max_retry_wait` seconds each time). Every
    failure raises a `GradcheckError`: `RefusedError` (4xx), `UnavailableError` (5xx),
    `TransportError` (no connection, a timeout) or `ResponseError` (an undocumented answer).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        *,
        retries: int = DEFAULT_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        binary: bool = True,
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

    def _replica(self, base_url: str) -> Client:
        """A client of another replica, with this one's key, timeout and retries."""
        return Client(
            base_url,
            self._headers.get("X-API-Key"),
            self._http.timeout,
            retries=self.retries,
            max_retry_wait=self.max_retry_wait,
            binary=self.binary,
        )

    def _send(self, path: str, content: bytes, content_type: str, accept: str) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = self._http.post(
                    path, content=content, headers=self._headers_for(content_type, accept)
                )
            except (httpx.HTTPError, httpx.InvalidURL) as error:
                raise _transport_error(error, self.base_url + path) from error
            if response.status_code != 503 or attempt == self.retries:
                return response
            time.sleep(retry_delay(response, attempt, self.max_retry_wait))
        raise AssertionError("unreachable")  # pragma: no cover

    def _compute(self, path: str, body: wire.Body) -> httpx.Response:
        content, media_type = self._compute_content(body)
        return self._send(path, content, media_type, wire.NPZ_MEDIA_TYPE)

    def _post_json(self, path: str, content: bytes) -> httpx.Response:
        return self._send(path, content, wire.JSON_MEDIA_TYPE, wire.JSON_MEDIA_TYPE)

    def cross_entropy(
        self,
        logits: Any,
        labels: Any,
        *,
        weight: Any = None,
        ignore_index: int | None = None,
        reduction: Reduction | None = None,
        label_smoothing: float | None = None,
        dtype: Dtype | None = None,
        numeric: GradientNumericOptions | None = None,
        z_loss: float | None = None,
        softcap: float | None = None,
        tolerance: ToleranceOptions | None = None,
        include: Sequence[Output] | None = None,
        vector: Any = None,
        candidate: LossCandidate | Mapping[str, Any] | None = None,
        denominator: float | None = None,
        row_block: int | None = None,
        replicas: Sequence[str] = (),
    ) -> CrossEntropyResult:
        """`POST /v1/cross-entropy`: loss, gradient, checks, Hessians (`include`), H·v (with
        `vector`), and `candidate_check` when you send `candidate`, your own outputs. Arrays are
        anything `np.asarray` takes, torch tensors included; the options mean what they mean in
        `torch.nn.functional.cross_entropy`; options left None take the service's defaults.

        `row_block` (client side): a batch too large for one request is sent by blocks of that
        many samples, concurrently, to this service and the `replicas` (other base URLs) in
        turn, and joined (`gradcheck_client.blocks`): the gradient rows are the whole batch's
        bit for bit, the loss the `math.fsum` of the per-row losses (divided by `denominator`,
        which `mean` needs then). Row outputs only: loss, gradient, probabilities."""
        if row_block is not None:
            blocks.check_blockable(
                reduction=reduction,
                denominator=denominator,
                include=include,
                candidate=candidate,
                vector=vector,
                row_block=row_block,
            )
            options: dict[str, Any] = {
                "weight": weight,
                "ignore_index": ignore_index,
                "reduction": reduction,
                "label_smoothing": label_smoothing,
                "dtype": dtype,
                "numeric": numeric,
                "z_loss": z_loss,
                "softcap": softcap,
                "tolerance": tolerance,
                "include": include,
                "denominator": denominator,
            }
            parts = blocks.split(logits, labels, row_block)
            services = [self, *(self._replica(url) for url in replicas)]
            try:
                with ThreadPoolExecutor(max_workers=min(len(parts), MAX_BLOCKS_IN_FLIGHT)) as pool:
                    futures = [
                        pool.submit(services[i % len(services)].cross_entropy, z, y, **options)
                        for i, (z, y) in enumerate(parts)
                    ]
                    results = [future.result() for future in futures]
            finally:
                for service in services[1:]:
                    service.close()
            return blocks.join(results, reduction, denominator)
        body = self._cross_entropy_body(
            logits,
            labels,
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            dtype=dtype,
            numeric=numeric,
            z_loss=z_loss,
            softcap=softcap,
            tolerance=tolerance,
            include=include,
            vector=vector,
            candidate=candidate,
            denominator=denominator,
        )
        return self._read(self._compute("/v1/cross-entropy", body), self._compute_result)

    def linear_cross_entropy(
        self,
        input: Any,
        linear_weight: Any,
        labels: Any,
        *,
        linear_bias: Any = None,
        weight: Any = None,
        ignore_index: int | None = None,
        reduction: Reduction | None = None,
        label_smoothing: float | None = None,
        dtype: Dtype | None = None,
        numeric: GradientNumericOptions | None = None,
        z_loss: float | None = None,
        softcap: float | None = None,
        causal_shift: bool | None = None,
        denominator: float | None = None,
        tolerance: ToleranceOptions | None = None,
        include: Sequence[LinearOutput] | None = None,
        candidate: LinearCandidate | Mapping[str, Any] | None = None,
    ) -> LinearCrossEntropyResult:
        """`POST /v1/linear-cross-entropy`: the LM head fused with its loss, as torch 2.13's
        `F.linear_cross_entropy(input, linear_weight, labels, linear_bias=…)`, with z_loss,
        softcap, causal_shift and denominator; `candidate` your own loss, losses and gradients
        by input, weight and bias (tensors included), checked and diagnosed."""
        body = linear.body(
            input,
            linear_weight,
            labels,
            linear_bias=linear_bias,
            weight=weight,
            options={
                "ignore_index": ignore_index,
                "reduction": reduction,
                "label_smoothing": label_smoothing,
                "dtype": dtype,
                "z_loss": z_loss,
                "softcap": softcap,
                "causal_shift": causal_shift,
                "denominator": denominator,
            },
            numeric=numeric,
            tolerance=tolerance,
            include=include,
            candidate=candidate,
        )
        return self._read(self._compute(linear.PATH, body), linear.read)

    def suites(self) -> list[SuiteSummary]:
        """`GET /v1/suites`: every suite of hard cases the service has."""
        return suite_list(_get(self, "/v1/suites", wire.JSON_MEDIA_TYPE))

    def suite(self, name: str) -> Suite:
        """`GET /v1/suites/{name}`: the suite's cases, each large case's request fetched from
        `GET /v1/suites/{name}/cases/{case}` (as .npz)."""
        return fetch_suite(self, name)

    def suite_case(self, name: str, case: str) -> dict[str, Any]:
        """`GET /v1/suites/{name}/cases/{case}`: one case's request (arrays as numpy), ready
        for `cross_entropy(**request)`."""
        return fetch_case(self, name, case)

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
        and check its outputs (for `lm_head`, cases of `/v1/linear-cross-entropy`:
        `fn(input, linear_weight, labels, [linear_bias=…,] **options) -> (loss,
        input_gradient, linear_weight_gradient[, linear_bias_gradient])`); a failing case is
        shrunk to a smallest problem that fails the same way (at most 100 service calls), with
        a reproduction to paste. See `gradcheck_client.runner` for which options are passed and
        when a case is not applicable."""
        return run_suite(self, fn, suite, framework=framework, supports=supports, options=options)

    def softmax(
        self,
        logits: Any,
        *,
        dim: int | None = None,
        dtype: Dtype | None = None,
        numeric: NumericOptions | None = None,
        tolerance: ToleranceOptions | None = None,
        include: Sequence[SoftmaxOutput] | None = None,
        candidate: SoftmaxCandidate | Mapping[str, Any] | None = None,
    ) -> SoftmaxResult:
        """`POST /v1/softmax`: probabilities, Jacobian, checks. With `dim`, softmax is taken
        along that axis (as `torch.softmax(x, dim)`)."""
        body = self._softmax_body(
            logits,
            dim=dim,
            dtype=dtype,
            numeric=numeric,
            tolerance=tolerance,
            include=include,
            candidate=candidate,
        )
        return self._read(self._compute("/v1/softmax", body), self._softmax_result)

    def check(
        self,
        logits: Any,
        labels: Any = None,
        *,
        candidate: LossCandidate | Mapping[str, Any],
        **options: Any,
    ) -> CandidateCheck:
        """Your outputs (`candidate`) against the exact reference: the candidate check alone.
        With `labels` it is cross-entropy's (options as `cross_entropy`), without them
        softmax's (probabilities, log_probabilities, jacobian)."""
        options.setdefault("include", ())
        result: SoftmaxResult
        if labels is None:
            result = self.softmax(logits, candidate=candidate, **options)
        else:
            result = self.cross_entropy(logits, labels, candidate=candidate, **options)
        return self._candidate_check(result, self.base_url)

    def problems(
        self,
        seed: str | int,
        *,
        batch_size: int | None = None,
        num_classes: int | None = None,
        label_type: LabelType | None = None,
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
        del options["self"], options["seed"]
        content = self._problem_body(seed, options)
        return self._read(self._post_json("/v1/problems", content), self._problem)

    def grade(
        self,
        submission: Any,
        *,
        problem_id: str | None = None,
        problem: Problem | Mapping[str, Any] | None = None,
        tolerance: ToleranceOptions | None = None,
        points: Mapping[Part, float] | None = None,
        partial_credit: bool | None = None,
        feedback: Feedback | None = None,
        format: GradeFormat | None = None,
        reveal_expected: bool | None = None,
        visibility: Visibility | None = None,
    ) -> GradingResult:
        """`POST /v1/grade`: one answer (a dict of loss, gradient, … as arrays or lists) to a
        problem given by id or in full. Returns the result in the requested `format`:
        `GradeResult` (native), `GradescopeResult` or `PrairieLearnResult`, each with the
        service's JSON in `raw`."""
        options = dict(locals())
        del options["self"], options["problem_id"], options["problem"]
        content = self._grading_body(problem_id, problem, options)
        return self._read(self._post_json("/v1/grade", content), _grade_reader(format))

    def grade_batch(
        self,
        submissions: Sequence[Any] | None = None,
        *,
        problem_id: str | None = None,
        problem: Problem | Mapping[str, Any] | None = None,
        items: Sequence[Mapping[str, Any]] | None = None,
        tolerance: ToleranceOptions | None = None,
        points: Mapping[Part, float] | None = None,
        partial_credit: bool | None = None,
        feedback: Feedback | None = None,
        format: GradeFormat | None = None,
        reveal_expected: bool | None = None,
        visibility: Visibility | None = None,
    ) -> BatchGrades:
        """`POST /v1/grade/batch`: many answers to one problem (`submissions`), or a roster
        (`items`: dicts of problem_id or problem, submission and an optional student label),
        in one call. Returns `BatchGrades`: one result per answer, in order (`results`; it
        iterates over them too), and the class summary (`summary`: per part, in how many
        submissions each mistake was found; the score distribution)."""
        options = dict(locals())
        del options["self"], options["problem_id"], options["problem"]
        options["submissions"] = None if submissions is None else list(submissions)
        options["items"] = None if items is None else self._items(items)
        content = self._grading_body(problem_id, problem, options)
        return self._read(self._post_json("/v1/grade/batch", content), _grades_reader(format))


class AsyncClient(_Core):
    """The asynchronous twin of `Client`: the same methods and errors, awaited.

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
        binary: bool = True,
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

    def _replica(self, base_url: str) -> AsyncClient:
        """A client of another replica, with this one's key, timeout and retries."""
        return AsyncClient(
            base_url,
            self._headers.get("X-API-Key"),
            self._http.timeout,
            retries=self.retries,
            max_retry_wait=self.max_retry_wait,
            binary=self.binary,
        )

    async def _send(
        self, path: str, content: bytes, content_type: str, accept: str
    ) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.post(
                    path, content=content, headers=self._headers_for(content_type, accept)
                )
            except (httpx.HTTPError, httpx.InvalidURL) as error:
                raise _transport_error(error, self.base_url + path) from error
            if response.status_code != 503 or attempt == self.retries:
                return response
            await asyncio.sleep(retry_delay(response, attempt, self.max_retry_wait))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _compute(self, path: str, body: wire.Body) -> httpx.Response:
        content, media_type = self._compute_content(body)
        return await self._send(path, content, media_type, wire.NPZ_MEDIA_TYPE)

    async def _post_json(self, path: str, content: bytes) -> httpx.Response:
        return await self._send(path, content, wire.JSON_MEDIA_TYPE, wire.JSON_MEDIA_TYPE)

    async def cross_entropy(
        self,
        logits: Any,
        labels: Any,
        *,
        weight: Any = None,
        ignore_index: int | None = None,
        reduction: Reduction | None = None,
        label_smoothing: float | None = None,
        dtype: Dtype | None = None,
        numeric: GradientNumericOptions | None = None,
        z_loss: float | None = None,
        softcap: float | None = None,
        tolerance: ToleranceOptions | None = None,
        include: Sequence[Output] | None = None,
        vector: Any = None,
        candidate: LossCandidate | Mapping[str, Any] | None = None,
        denominator: float | None = None,
        row_block: int | None = None,
        replicas: Sequence[str] = (),
    ) -> CrossEntropyResult:
        """`POST /v1/cross-entropy`, as `Client.cross_entropy` (blocks sent concurrently)."""
        if row_block is not None:
            blocks.check_blockable(
                reduction=reduction,
                denominator=denominator,
                include=include,
                candidate=candidate,
                vector=vector,
                row_block=row_block,
            )
            options: dict[str, Any] = {
                "weight": weight,
                "ignore_index": ignore_index,
                "reduction": reduction,
                "label_smoothing": label_smoothing,
                "dtype": dtype,
                "numeric": numeric,
                "z_loss": z_loss,
                "softcap": softcap,
                "tolerance": tolerance,
                "include": include,
                "denominator": denominator,
            }
            parts = blocks.split(logits, labels, row_block)
            services = [self, *(self._replica(url) for url in replicas)]
            limit = asyncio.Semaphore(MAX_BLOCKS_IN_FLIGHT)

            async def one(index: int, z: Any, y: Any) -> CrossEntropyResult:
                async with limit:
                    return await services[index % len(services)].cross_entropy(z, y, **options)

            try:
                results = await asyncio.gather(*(one(i, z, y) for i, (z, y) in enumerate(parts)))
            finally:
                for service in services[1:]:
                    await service.aclose()
            return blocks.join(results, reduction, denominator)
        body = self._cross_entropy_body(
            logits,
            labels,
            weight=weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
            dtype=dtype,
            numeric=numeric,
            z_loss=z_loss,
            softcap=softcap,
            tolerance=tolerance,
            include=include,
            vector=vector,
            candidate=candidate,
            denominator=denominator,
        )
        return self._read(await self._compute("/v1/cross-entropy", body), self._compute_result)

    async def linear_cross_entropy(
        self,
        input: Any,
        linear_weight: Any,
        labels: Any,
        *,
        linear_bias: Any = None,
        weight: Any = None,
        ignore_index: int | None = None,
        reduction: Reduction | None = None,
        label_smoothing: float | None = None,
        dtype: Dtype | None = None,
        numeric: GradientNumericOptions | None = None,
        z_loss: float | None = None,
        softcap: float | None = None,
        causal_shift: bool | None = None,
        denominator: float | None = None,
        tolerance: ToleranceOptions | None = None,
        include: Sequence[LinearOutput] | None = None,
        candidate: LinearCandidate | Mapping[str, Any] | None = None,
    ) -> LinearCrossEntropyResult:
        """`POST /v1/linear-cross-entropy`: the LM head fused with its loss, as torch 2.13's
        `F.linear_cross_entropy(input, linear_weight, labels, linear_bias=…)`, with z_loss,
        softcap, causal_shift and denominator; `candidate` your own loss, losses and gradients
        by input, weight and bias (tensors included), checked and diagnosed."""
        body = linear.body(
            input,
            linear_weight,
            labels,
            linear_bias=linear_bias,
            weight=weight,
            options={
                "ignore_index": ignore_index,
                "reduction": reduction,
                "label_smoothing": label_smoothing,
                "dtype": dtype,
                "z_loss": z_loss,
                "softcap": softcap,
                "causal_shift": causal_shift,
                "denominator": denominator,
            },
            numeric=numeric,
            tolerance=tolerance,
            include=include,
            candidate=candidate,
        )
        return self._read(await self._compute(linear.PATH, body), linear.read)

    async def softmax(
        self,
        logits: Any,
        *,
        dim: int | None = None,
        dtype: Dtype | None = None,
        numeric: NumericOptions | None = None,
        tolerance: ToleranceOptions | None = None,
        include: Sequence[SoftmaxOutput] | None = None,
        candidate: SoftmaxCandidate | Mapping[str, Any] | None = None,
    ) -> SoftmaxResult:
        """`POST /v1/softmax`, as `Client.softmax`."""
        body = self._softmax_body(
            logits,
            dim=dim,
            dtype=dtype,
            numeric=numeric,
            tolerance=tolerance,
            include=include,
            candidate=candidate,
        )
        return self._read(await self._compute("/v1/softmax", body), self._softmax_result)

    async def suites(self) -> list[SuiteSummary]:
        """`GET /v1/suites`, as `Client.suites`."""
        return suite_list(await _aget(self, "/v1/suites", wire.JSON_MEDIA_TYPE))

    async def suite(self, name: str) -> Suite:
        """`GET /v1/suites/{name}`, as `Client.suite`."""
        return await afetch_suite(self, name)

    async def suite_case(self, name: str, case: str) -> dict[str, Any]:
        """`GET /v1/suites/{name}/cases/{case}`, as `Client.suite_case`."""
        return await afetch_case(self, name, case)

    async def check(
        self,
        logits: Any,
        labels: Any = None,
        *,
        candidate: LossCandidate | Mapping[str, Any],
        **options: Any,
    ) -> CandidateCheck:
        """The candidate check alone, as `Client.check`."""
        options.setdefault("include", ())
        result: SoftmaxResult
        if labels is None:
            result = await self.softmax(logits, candidate=candidate, **options)
        else:
            result = await self.cross_entropy(logits, labels, candidate=candidate, **options)
        return self._candidate_check(result, self.base_url)

    async def problems(
        self,
        seed: str | int,
        *,
        batch_size: int | None = None,
        num_classes: int | None = None,
        label_type: LabelType | None = None,
        logit_scale: float | None = None,
        weight: Any = None,
        ignore_index: int | None = None,
        reduction: Reduction | None = None,
        label_smoothing: float | None = None,
        dtype: Dtype | None = None,
    ) -> Problem:
        """`POST /v1/problems`, as `Client.problems`."""
        options = dict(locals())
        del options["self"], options["seed"]
        content = self._problem_body(seed, options)
        return self._read(await self._post_json("/v1/problems", content), self._problem)

    async def grade(
        self,
        submission: Any,
        *,
        problem_id: str | None = None,
        problem: Problem | Mapping[str, Any] | None = None,
        tolerance: ToleranceOptions | None = None,
        points: Mapping[Part, float] | None = None,
        partial_credit: bool | None = None,
        feedback: Feedback | None = None,
        format: GradeFormat | None = None,
        reveal_expected: bool | None = None,
        visibility: Visibility | None = None,
    ) -> GradingResult:
        """`POST /v1/grade`, as `Client.grade`."""
        options = dict(locals())
        del options["self"], options["problem_id"], options["problem"]
        content = self._grading_body(problem_id, problem, options)
        return self._read(await self._post_json("/v1/grade", content), _grade_reader(format))

    async def grade_batch(
        self,
        submissions: Sequence[Any] | None = None,
        *,
        problem_id: str | None = None,
        problem: Problem | Mapping[str, Any] | None = None,
        items: Sequence[Mapping[str, Any]] | None = None,
        tolerance: ToleranceOptions | None = None,
        points: Mapping[Part, float] | None = None,
        partial_credit: bool | None = None,
        feedback: Feedback | None = None,
        format: GradeFormat | None = None,
        reveal_expected: bool | None = None,
        visibility: Visibility | None = None,
    ) -> BatchGrades:
        """`POST /v1/grade/batch`, as `Client.grade_batch`."""
        options = dict(locals())
        del options["self"], options["problem_id"], options["problem"]
        options["submissions"] = None if submissions is None else list(submissions)
        options["items"] = None if items is None else self._items(items)
        content = self._grading_body(problem_id, problem, options)
        return self._read(await self._post_json("/v1/grade/batch", content), _grades_reader(format))
