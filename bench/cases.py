"""The five cases of the benchmark: workloads, in-process floors and baselines, end-to-end runs.

Every function returns plain numbers (seconds, requests per second, bytes) for `bench.run`.
"""

import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from app.api.encoding import NPZ_METADATA_MEMBER
from app.api.schemas.compute import CROSS_ENTROPY_DEFAULT_INCLUDE
from app.core.config import Settings
from app.numerics.cross_entropy import Reduction, index_targets
from app.numerics.finite_diff import Method, choose_steps, plain_losses
from app.numerics.gradcheck import Output, analyse_cross_entropy
from bench.client import Connection, build_request

CROSS_ENTROPY_PATH = "/v1/cross-entropy"
CONSTANT_PATH = "/bench/constant"
"""The bare endpoint (bench/app.py): a constant, through the same middleware."""
HOP_PATH = "/bench/hop"
"""The same constant returned from a worker thread."""
NO_NUMERICS_PATH = "/bench/no-numerics"
"""The cross-entropy route's work with the numerics replaced by a ready report."""
JSON_HEADERS = {"Content-Type": "application/json"}
NPZ_HEADERS = {**JSON_HEADERS, "Accept": "application/x-npz"}
DEFAULT_INCLUDE = frozenset(Output(item) for item in CROSS_ENTROPY_DEFAULT_INCLUDE)
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


def floor(payload: dict[str, Any]) -> dict[str, Any]:
    """The physical floor of a cross-entropy request with the default outputs, in-process:
    orjson-encode the request, decode it, the numpy computation (the service's own numerics),
    orjson-encode the response arrays, decode them."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    decoded = orjson.loads(body)
    logits = np.asarray(decoded["logits"], np.float64)
    targets = index_targets(
        np.asarray(decoded["labels"], np.int64),
        logits.shape[1],
        weight=None,
        ignore_index=-100,
        label_smoothing=0.0,
        reduction=Reduction.MEAN,
        dtype=np.float64,
    )
    report = analyse_cross_entropy(logits, targets, Reduction.MEAN, DEFAULT_INCLUDE)
    arrays = {
        "probabilities": report.softmax.probabilities,
        "loss": float(np.asarray(report.loss)),
        "losses": report.losses,
        "gradient": report.gradient,
        "numeric_gradient": report.numeric_gradient,
        "jacobian": report.jacobian,
    }
    decoded_response: dict[str, Any] = orjson.loads(
        orjson.dumps(arrays, option=orjson.OPT_SERIALIZE_NUMPY)
    )
    return decoded_response


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
    with np.load(io.BytesIO(reply.body), allow_pickle=False) as archive:
        fields: dict[str, Any] = orjson.loads(archive[NPZ_METADATA_MEMBER])
        fields.update(
            {name: archive[name] for name in archive.files if name != NPZ_METADATA_MEMBER}
        )
    return fields


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
