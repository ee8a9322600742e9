"""The cases of the benchmark: workloads, in-process floors and baselines, end-to-end runs.

Every function returns plain numbers (seconds, requests per second, bytes) for `bench.run`.
"""

import io
import math
import statistics
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pydantic_core

from app.api.encoding import NPZ_METADATA_MEMBER, encode_npz
from app.api.schemas.compute import CROSS_ENTROPY_DEFAULT_INCLUDE, ToleranceOptions
from app.core.config import Settings
from app.numerics.candidate import CandidateCheck, check_candidate
from app.numerics.cross_entropy import Reduction, Targets, index_targets
from app.numerics.diagnose import ProblemInputs
from app.numerics.finite_diff import Method, choose_steps, plain_losses
from app.numerics.gradcheck import Output, ReferenceOutputs, Report, analyse_cross_entropy
from bench.client import Connection, Reply, build_request
from bench.heap import in_warm_heap

CROSS_ENTROPY_PATH = "/v1/cross-entropy"
CONSTANT_PATH = "/bench/constant"
"""The bare endpoint (bench/app.py): a constant, through the same middleware."""
HOP_PATH = "/bench/hop"
"""The same constant returned from a worker thread."""
NO_NUMERICS_PATH = "/bench/no-numerics"
"""The cross-entropy route's work with the numerics replaced by a ready report."""
JSON_HEADERS = {"Content-Type": "application/json"}
NPZ_HEADERS = {**JSON_HEADERS, "Accept": "application/x-npz"}
"""A JSON request answered as .npz."""
BINARY_JSON_HEADERS = {"Content-Type": "application/x-npz"}
"""A binary (.npz) request answered as JSON."""
BINARY_HEADERS = {**BINARY_JSON_HEADERS, "Accept": "application/x-npz"}
"""A binary request answered as .npz: binary in, binary out."""
NPZ_REQUEST_FIELDS = "request.json"
"""The member of a binary request holding its other (non-array) fields."""
DEFAULT_INCLUDE = frozenset(Output(item) for item in CROSS_ENTROPY_DEFAULT_INCLUDE)
DEFAULT_INCLUDE_NAMES = [str(item) for item in CROSS_ENTROPY_DEFAULT_INCLUDE]
SQUARE = frozenset({Output.JACOBIAN, Output.NUMERIC_JACOBIAN})


def problem(num_samples: int, num_classes: int, seed: int = 0) -> dict[str, Any]:
    """Random logits (N(0, 3²)) and class labels: a typical classifier batch."""
    rng = np.random.default_rng(seed)
    return {
        "logits": rng.normal(scale=3.0, size=(num_samples, num_classes)),
        "labels": rng.integers(0, num_classes, num_samples),
    }


def median_time(action: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def interleaved(actions: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each action, run in turn `repeats` times so that noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            times[name].append(median_time(action, 1))
    return {name: statistics.median(values) for name, values in times.items()}


def geometric(low: int, high: int, points: int) -> list[int]:
    """`points` integers from low to high, evenly spaced on a log scale (high included)."""
    if points <= 1 or high <= low:
        return [high]
    return sorted({round(low * (high / low) ** (k / (points - 1))) for k in range(points)})


def log_slope(entries: list[int], seconds: list[float]) -> float:
    """Least-squares slope of log(seconds) against log(entries): 1 means linear growth."""
    return float(np.polyfit(np.log(entries), np.log(seconds), 1)[0])


SLOPE_SPAN = 100
"""The slope of a sweep is taken over its points within this factor of its largest size, where
the work, not a request's fixed cost, is timed."""


def large_end_slope(entries: list[int], seconds: list[float]) -> float:
    """`log_slope` over the points of a sweep within SLOPE_SPAN of its largest size; NaN with
    fewer than two such points."""
    top = max(entries)
    kept = [(n, s) for n, s in zip(entries, seconds, strict=True) if n >= top / SLOPE_SPAN]
    if len(kept) < 2:
        return math.nan
    return log_slope([n for n, _ in kept], [s for _, s in kept])


def limit_entries(num_classes: int, include: frozenset[Output] = DEFAULT_INCLUDE) -> int:
    """Numbers per sample that GRADCHECK_MAX_OUTPUT_ENTRIES counts for `include`."""
    return sum(num_classes * num_classes if item in SQUARE else num_classes for item in include)


def largest_batch(num_classes: int, settings: Settings) -> int:
    """The largest N the configured limits allow with the default outputs."""
    by_output = settings.max_output_entries // limit_entries(num_classes)
    return min(by_output, settings.max_batch_size)


def largest_classes(num_samples: int, settings: Settings) -> int:
    """The largest C the configured limits allow with the default outputs."""
    num_classes = 2
    while (
        num_classes < settings.max_classes
        and num_samples * limit_entries(num_classes + 1) <= settings.max_output_entries
    ):
        num_classes += 1
    return num_classes


# ----- case 1 and 4: one large request, end to end and in-process -----


def default_targets(decoded: dict[str, Any], num_classes: int) -> Targets:
    """The effective targets of a decoded request's index labels (default options)."""
    return index_targets(
        np.asarray(decoded["labels"], np.int64),
        num_classes,
        weight=None,
        ignore_index=-100,
        label_smoothing=0.0,
        reduction=Reduction.MEAN,
        dtype=np.float64,
    )


def analyse(decoded: dict[str, Any], include: frozenset[Output], **options: Any) -> Report:
    """The service's own numerics on a decoded request (index labels, default options;
    `options`: z_loss, softcap, vector, as `analyse_cross_entropy` takes them)."""
    logits = np.asarray(decoded["logits"], np.float64)
    targets = default_targets(decoded, logits.shape[1])
    return analyse_cross_entropy(logits, targets, Reduction.MEAN, include, **options)


def _default_arrays(report: Report) -> dict[str, Any]:
    return {
        "probabilities": report.softmax.probabilities,
        "loss": float(np.asarray(report.loss)),
        "losses": report.losses,
        "gradient": report.gradient,
        "numeric_gradient": report.numeric_gradient,
        "jacobian": report.jacobian,
    }


@in_warm_heap
def floor(payload: dict[str, Any]) -> dict[str, Any]:
    """The physical floor of a cross-entropy request with the default outputs, in-process:
    orjson-encode the request, decode it, the numpy computation (the service's own numerics),
    orjson-encode the response arrays, decode them."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    report = analyse(orjson.loads(body), DEFAULT_INCLUDE)
    decoded_response: dict[str, Any] = orjson.loads(
        orjson.dumps(_default_arrays(report), option=orjson.OPT_SERIALIZE_NUMPY)
    )
    return decoded_response


@in_warm_heap
def npz_floor(payload: dict[str, Any]) -> dict[str, Any]:
    """The floor of the same JSON request answered as .npz, in-process: orjson-encode the
    request, decode it, the service's own numerics, the archive's encoding (the service's
    `encode_npz`), and `np.load` of every member, as `post_npz` reads it."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    report = analyse(orjson.loads(body), DEFAULT_INCLUDE)
    return read_npz(encode_npz(_default_arrays(report)))


@in_warm_heap
def binary_floor(payload: dict[str, Any]) -> dict[str, Any]:
    """The floor of the same request sent and answered as .npz (binary in, binary out),
    in-process: the request archive's encoding (`npz_request`, as `post_binary`'s caller
    builds it) and `np.load` of it, the service's own numerics, the response archive's
    encoding (`encode_npz`) and `np.load` of every member."""
    arrays, _ = read_npz_request(npz_request(payload))
    report = analyse(arrays, DEFAULT_INCLUDE)
    return read_npz(encode_npz(_default_arrays(report)))


def npz_request(arrays: dict[str, Any], fields: dict[str, Any] | None = None) -> bytes:
    """An `application/x-npz` request body (docs/api.md, "Binary requests"): one stored
    `.npy` member per array, named after its field, plus `request.json` with `fields`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(value), allow_pickle=False)
        if fields:
            archive.writestr(NPZ_REQUEST_FIELDS, orjson.dumps(fields))
    return buffer.getvalue()


def read_npz_request(body: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """A binary request read back with `np.load`: its arrays by field name, and its
    `request.json` fields."""
    with np.load(io.BytesIO(body), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files if name != NPZ_REQUEST_FIELDS}
        fields = (
            orjson.loads(archive[NPZ_REQUEST_FIELDS]) if NPZ_REQUEST_FIELDS in archive.files else {}
        )
    return arrays, fields


class BufferFile(io.RawIOBase):
    """A read-only, seekable file over a buffer, which it never copies whole.

    io.BytesIO shares only a `bytes` object: given the buffer a `Connection` receives into, it
    would first copy it (20 MB more for a Hessian, and its page faults: 14 ms of the 21 ms that
    reading such a reply took, where a client holding `bytes`, as httpx's `content` is, pays
    none). Reads copy what they return, as BytesIO's do.
    """

    def __init__(self, buffer: bytes | memoryview) -> None:
        super().__init__()
        self._view = memoryview(buffer)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else self._position + size
        data = self._view[self._position : end].tobytes()
        self._position += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


def read_npz(archive_bytes: bytes | memoryview) -> dict[str, Any]:
    """Every member of an .npz response read, the metadata decoded (a reply's buffer read in
    place: `BufferFile`)."""
    file = (
        io.BytesIO(archive_bytes) if isinstance(archive_bytes, bytes) else BufferFile(archive_bytes)
    )
    with np.load(file, allow_pickle=False) as archive:
        fields: dict[str, Any] = orjson.loads(archive[NPZ_METADATA_MEMBER])
        fields.update(
            {name: archive[name] for name in archive.files if name != NPZ_METADATA_MEMBER}
        )
    return fields


def post_json(connection: Connection, payload: dict[str, Any]) -> dict[str, Any]:
    """End to end as a client sees it: encode, POST, receive, decode the JSON response."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    reply = connection.request(build_request("POST", CROSS_ENTROPY_PATH, body, JSON_HEADERS))
    reply.raise_for_status()
    decoded: dict[str, Any] = orjson.loads(reply.body)
    return decoded


def post_npz(connection: Connection, payload: dict[str, Any]) -> dict[str, Any]:
    """End to end with `Accept: application/x-npz`: every array read, metadata decoded."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    reply = connection.request(build_request("POST", CROSS_ENTROPY_PATH, body, NPZ_HEADERS))
    reply.raise_for_status()
    return read_npz(reply.body)


def post_binary(connection: Connection, body: bytes, *, npz_response: bool = True) -> Any:
    """End to end for a binary request encoded beforehand: POST it, receive, and read every
    member of the .npz response (`npz_response`) or decode the JSON one."""
    headers = BINARY_HEADERS if npz_response else BINARY_JSON_HEADERS
    reply = connection.request(build_request("POST", CROSS_ENTROPY_PATH, body, headers))
    reply.raise_for_status()
    return read_npz(reply.body) if npz_response else orjson.loads(reply.body)


def output_bytes(fields: dict[str, Any]) -> int:
    """8 bytes per float64 number in the response's arrays (scalars count 8)."""
    return sum(np.asarray(value).size * 8 for value in fields.values() if _is_numeric_array(value))


def _is_numeric_array(value: object) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


# ----- case 2: numeric gradient against a per-element loop -----


@dataclass(frozen=True)
class LoopBaseline:
    """A per-element loop timed on a sample of elements and extrapolated to all N·C."""

    seconds_per_element: float
    elements_timed: int
    max_abs_difference: float
    """Largest |loop − service| over the sampled elements (both numeric gradients)."""


def loop_gradient(
    loss: Callable[[np.ndarray], Any],
    logits: np.ndarray,
    steps: np.ndarray,
    positions: list[tuple[int, int]],
    method: Method,
) -> np.ndarray:
    """cs231n's `eval_numerical_gradient`, element by element: the whole batch's scalar loss
    evaluated twice per element (central) or once at z + ih (complex step)."""
    x = logits.astype(np.complex128) if method is Method.COMPLEX_STEP else logits.copy()
    gradient = np.empty(len(positions))
    for k, ix in enumerate(positions):
        old = x[ix]
        if method is Method.COMPLEX_STEP:
            x[ix] = old + 1j * steps[ix]
            gradient[k] = np.imag(loss(x)) / steps[ix]
        else:
            x[ix] = old + steps[ix]
            plus = loss(x)
            x[ix] = old - steps[ix]
            minus = loss(x)
            gradient[k] = (plus - minus) / (2 * steps[ix])
        x[ix] = old
    return gradient


def loop_baseline(
    payload: dict[str, Any],
    method: Method,
    service_gradient: np.ndarray,
    elements: int,
    repeats: int,
) -> LoopBaseline:
    """Time `loop_gradient` on `elements` random elements of the mean cross-entropy."""
    logits = np.asarray(payload["logits"], np.float64)
    num_samples, num_classes = logits.shape
    q = np.zeros_like(logits)
    q[np.arange(num_samples), payload["labels"]] = 1.0

    def mean_loss(z: np.ndarray) -> Any:
        return plain_losses(z, q).sum() / num_samples

    steps = choose_steps(logits, method, None).h
    rng = np.random.default_rng(1)
    count = min(elements, logits.size)
    flat = rng.choice(logits.size, size=count, replace=False)
    positions = [(int(i) // num_classes, int(i) % num_classes) for i in flat]
    values = loop_gradient(mean_loss, logits, steps, positions, method)
    seconds = median_time(
        lambda: loop_gradient(mean_loss, logits, steps, positions, method), repeats
    )
    service = np.array([service_gradient[ix] for ix in positions])
    return LoopBaseline(seconds / count, count, float(np.max(np.abs(values - service))))


def numeric_gradient_payload(payload: dict[str, Any], method: Method) -> dict[str, Any]:
    """The request of case 2: only the numeric gradient (with its check), by `method`."""
    return {**payload, "include": ["numeric_gradient"], "numeric": {"method": str(method)}}


# ----- case 6: a caller's own outputs checked (issue 14) -----

CANDIDATE_UNAVAILABLE = "not available: candidate not accepted (422)"
"""What the candidate cases report when the service refuses a `candidate` field."""
TOLERANCE = ToleranceOptions()
"""The request's default tolerance, which the candidate comparison uses."""


def textbook_softmax(logits: np.ndarray) -> np.ndarray:
    """softmax(z) as a caller computes it: exp(z − max z) / Σ exp(z − max z), row by row."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    result: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return result


def candidate_gradient(payload: dict[str, Any], *, divided: bool = True) -> np.ndarray:
    """A caller's gradient of the mean loss, a − y over N; `divided=False` gives the classic
    mistake of not dividing by N (the service diagnoses it as `not_divided`)."""
    logits = np.asarray(payload["logits"], np.float64)
    gradient = textbook_softmax(logits)
    gradient[np.arange(len(logits)), payload["labels"]] -= 1.0
    return gradient / len(logits) if divided else gradient


def unexplained_gradient(payload: dict[str, Any], seed: int = 27) -> np.ndarray:
    """Case 6c: the right gradient with every entry off by a random 10 %: wrong in every row,
    and no single code nor any pair of them explains it (the service tries them all, pairs on
    the probe rows only)."""
    rng = np.random.default_rng(seed)
    gradient = candidate_gradient(payload)
    noisy: np.ndarray = gradient * (1 + 0.1 * rng.standard_normal(gradient.shape))
    return noisy


def ascent_gradient(payload: dict[str, Any]) -> np.ndarray:
    """Case 6c's pair: gradient ascent's y − a summed over the batch, sent as the gradient of
    the mean: sign flipped and not divided by N (diagnosed as the pair sign_flipped,
    not_divided)."""
    ascent: np.ndarray = -candidate_gradient(payload, divided=False)
    return ascent


def candidate_jacobian(payload: dict[str, Any], *, diagonal: bool = True) -> np.ndarray:
    """A caller's softmax Jacobian diag(a) − a aᵀ per sample, (N, C, C); `diagonal=False` gives
    −a aᵀ (diagnosed as `jacobian_missing_diagonal`)."""
    a = textbook_softmax(np.asarray(payload["logits"], np.float64))
    jacobian: np.ndarray = -a[:, :, None] * a[:, None, :]
    if diagonal:
        jacobian[:, np.arange(a.shape[1]), np.arange(a.shape[1])] += a
    return jacobian


def candidate_request(
    payload: dict[str, Any], include: list[str], candidate: dict[str, np.ndarray] | None
) -> bytes:
    """The JSON body of a cross-entropy request with `include`, and `candidate` if given."""
    request: dict[str, Any] = {**payload, "include": include}
    if candidate is not None:
        request["candidate"] = candidate
    return orjson.dumps(request, option=orjson.OPT_SERIALIZE_NUMPY)


def post_body(connection: Connection, body: bytes, headers: dict[str, str] = JSON_HEADERS) -> Reply:
    """POST a ready body (JSON unless `headers` say otherwise) to /v1/cross-entropy; the reply
    whatever its status."""
    return connection.request(build_request("POST", CROSS_ENTROPY_PATH, body, headers))


def post_ready_json(connection: Connection, body: bytes) -> dict[str, Any]:
    """End to end for a body encoded beforehand: POST, receive, decode the JSON response."""
    decoded: dict[str, Any] = orjson.loads(post_body(connection, body).raise_for_status().body)
    return decoded


def candidate_accepted(connection: Connection) -> bool:
    """Whether the service takes a `candidate` (False on 422: the field is refused)."""
    payload = problem(2, 3)
    body = candidate_request(payload, ["loss"], {"gradient": candidate_gradient(payload)})
    reply = post_body(connection, body)
    if reply.status == 422:
        return False
    reply.raise_for_status()
    return "candidate_check" in orjson.loads(reply.body)


def jacobian_bodies(payload: dict[str, Any], include: list[str]) -> dict[str, bytes]:
    """Case 6b's two requests: a correct candidate Jacobian and one without its diagonal."""
    return {
        "correct": jacobian_body(payload, include),
        "missing_diagonal": jacobian_body(payload, include, diagonal=False),
    }


def largest_candidate_batch(
    num_classes: int, max_body_bytes: int, include: list[str], upper: int, seed: int = 1
) -> int:
    """The largest N (at most `upper`) whose requests with a candidate Jacobian (N, C, C),
    `jacobian_bodies(problem(N, C, seed))`, all fit in `max_body_bytes`, while N + 1 does not:
    estimated from a small batch's bytes per sample, then bisected (a sample's bytes vary a
    little with its numbers' digits)."""

    def fits(num_samples: int) -> bool:
        bodies = jacobian_bodies(problem(num_samples, num_classes, seed), include)
        return max(map(len, bodies.values())) <= max_body_bytes

    probe = min(8, upper)
    per_sample = len(jacobian_body(problem(probe, num_classes, seed), include)) / probe
    estimate = min(upper, max(1, int(max_body_bytes / per_sample)))
    low, high = max(1, int(estimate * 0.97)), min(upper + 1, int(estimate * 1.03) + 2)
    for _ in range(8):  # widen the bracket until low fits and high does not
        if low == 1 or fits(low):
            break
        low = max(1, low // 2)
    for _ in range(8):
        if high > upper or not fits(high):
            break
        low, high = high, min(upper + 1, high * 2)
    while high - low > 1:  # fits(low), not fits(high) (or high beyond upper)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def jacobian_body(payload: dict[str, Any], include: list[str], *, diagonal: bool = True) -> bytes:
    """A request with a candidate Jacobian (see `candidate_jacobian`)."""
    return candidate_request(
        payload, include, {"jacobian": candidate_jacobian(payload, diagonal=diagonal)}
    )


@in_warm_heap
def candidate_floor(body: bytes, include: frozenset[Output]) -> CandidateCheck:
    """The floor of a request with a candidate, in-process: parse the body with pydantic's JSON
    parser (the one the service's model_validate_json uses; like the service it reads NaN and
    Infinity, which a candidate may hold), the service's own numerics for the request's
    outputs, the reference of the candidate's outputs, and their comparison (with diagnoses
    when it fails), as `check_candidate` does it."""
    decoded = pydantic_core.from_json(body)
    report = analyse(decoded, include)
    return check_candidate(
        decoded["candidate"],
        ReferenceOutputs(report),
        atol=TOLERANCE.atol,
        rtol=TOLERANCE.rtol,
        inputs=ProblemInputs(
            np.asarray(decoded["logits"], np.float64), np.asarray(decoded["labels"], np.int64)
        ),
        softmax=report.kept_softmax,
    )


# ----- case 8: second order (issue 20 item 5) -----

HESSIAN_INCLUDE = ["hessian"]
HVP_INCLUDE = ["hessian_vector_product"]


def hessian_arrays(report: Report, include: list[str]) -> dict[str, Any]:
    """The arrays a second-order response holds for `include` (with the reduced loss)."""
    arrays: dict[str, Any] = {"loss": float(np.asarray(report.loss))}
    for name in include:
        arrays[name] = getattr(report, name)
    return arrays


@in_warm_heap
def hessian_floor(payload: dict[str, Any], include: list[str], *, binary: bool) -> dict[str, Any]:
    """The floor of a second-order request, in-process, as `floor` (JSON) or `binary_floor`
    (.npz in and out) of case 1 and 4: encode and decode the request, the service's own
    numerics for `include`, encode and decode the response arrays."""
    wanted = frozenset(Output(item) for item in include)
    if binary:
        arrays, _ = read_npz_request(npz_request(payload, {"include": include}))
        report = analyse(arrays, wanted, vector=arrays.get("vector"))
        return read_npz(encode_npz(hessian_arrays(report, include)))
    decoded = orjson.loads(json_request(payload, include))
    vector = decoded.get("vector")
    report = analyse(decoded, wanted, vector=None if vector is None else np.asarray(vector))
    response: dict[str, Any] = orjson.loads(
        orjson.dumps(hessian_arrays(report, include), option=orjson.OPT_SERIALIZE_NUMPY)
    )
    return response


def json_request(payload: dict[str, Any], include: list[str]) -> bytes:
    """The JSON body of a request for `include`."""
    return orjson.dumps({**payload, "include": include}, option=orjson.OPT_SERIALIZE_NUMPY)


def with_vector(payload: dict[str, Any], seed: int = 2) -> dict[str, Any]:
    """The problem with a random direction `vector` of the logits' shape (for H·v)."""
    rng = np.random.default_rng(seed)
    return {**payload, "vector": rng.normal(size=np.shape(payload["logits"]))}
