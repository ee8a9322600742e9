"""Case 9 (issue 29 item 6): an LM head fused with its loss, checked at LLM scale in one request.

`Plan.linear` = (N, d, C): bfloat16 hidden states `input` (N, d) ~ N(0, 1) and head
`linear_weight` (C, d) ~ N(0, 1/d), class-index labels with 10 % of the positions ignored (−100),
and candidate gradients `input_gradient` and `linear_weight_gradient` (the exact ones rounded to
bfloat16, so they pass), sent as .npz to POST /v1/linear-cross-entropy with include ["loss"],
answered as JSON; no numeric check. At 1,024 × 1,024 × 32,000 the body is about 140 MB.

- *Baseline*: torch 2.13's float64 `F.linear_cross_entropy` forward and backward in-process
  (`torch_forward_backward`), from float64 tensors of input and weight made beforehand: the
  three matmuls and the loss, nothing else. The service must stay within 1.3× of it end to end;
  "not available" without torch.
- *Information*: the same against torch's whole check in-process (`torch_check`): `np.load` of
  the archive, float64 copies of input and weight, forward and backward, `torch.allclose` of
  each candidate at bfloat16's default tolerance (what a caller checking with torch pays).
- *Memory*: a fresh server's peak RSS growth (VmHWM) while it serves its first such request,
  less the body, against the float64 size of input + weight (≤ 3).
- *Liveness*: the longest answer of `GET /healthz`, asked every 50 ms on its own connection
  while the large requests run (< 1 s).

Run it alone: `python -m bench.run --case 9` (with the Makefile's allocator settings:
`make bench BENCH_ARGS="--case 9"`).
"""

import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import ml_dtypes
import numpy as np
import orjson

from app.numerics.candidate import DEFAULT_TOLERANCE
from app.numerics.linear import LinearOutput, LinearProblem, analyse_linear
from bench import cases
from bench.case7_llm_kernel import TORCH_UNAVAILABLE, torch_module
from bench.client import Connection, build_request
from bench.plan import Bench
from bench.report import Row, reply_detail, row, unavailable
from bench.server import running_server

LINEAR_PATH = "/v1/linear-cross-entropy"
IGNORE_INDEX = -100
IGNORED_FRACTION = 0.1
INCLUDE = ["loss"]
CANDIDATES = ("input_gradient", "linear_weight_gradient")
BFLOAT16_TOLERANCE = DEFAULT_TOLERANCE["bfloat16"]
"""(atol, rtol) the service gives a bfloat16 candidate sent without a tolerance."""
HEALTH_INTERVAL = 0.05
"""Seconds between two /healthz probes."""

MEANING = (
    "end-to-end time / torch float64 linear_cross_entropy forward and backward in-process "
    "(tensors ready)"
)
CHECK_MEANING = (
    "end-to-end time / torch's whole check in-process (np.load, float64 copies, forward and "
    "backward, allclose)"
)
MEMORY_MEANING = "(server peak RSS growth − body) / float64 size of input + weight"
HEALTH_MEANING = "longest GET /healthz answer while the requests run / 1 s"


def linear_problem(samples: int, features: int, classes: int, seed: int = 0) -> dict[str, Any]:
    """bfloat16 input N(0, 1) (N, d) and linear_weight N(0, 1/d) (C, d), and class-index
    labels with 10 % of the positions ignored (padding)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, samples)
    ignored = rng.choice(samples, size=round(IGNORED_FRACTION * samples), replace=False)
    labels[ignored] = IGNORE_INDEX
    weight = rng.standard_normal((classes, features), dtype=np.float32) / np.sqrt(features)
    return {
        "input": rng.standard_normal((samples, features), dtype=np.float32).astype(
            ml_dtypes.bfloat16
        ),
        "linear_weight": weight.astype(ml_dtypes.bfloat16),
        "labels": labels,
    }


def right_gradients(payload: dict[str, Any]) -> dict[str, np.ndarray]:
    """A right bfloat16 kernel's gradients: the exact ones (the service's numerics) rounded."""
    problem = LinearProblem(payload["input"], payload["linear_weight"], payload["labels"])
    report = analyse_linear(
        problem, frozenset({LinearOutput.LOSS, *(LinearOutput(name) for name in CANDIDATES)})
    )
    return {
        name: np.asarray(getattr(report, name)).astype(ml_dtypes.bfloat16) for name in CANDIDATES
    }


def linear_body(payload: dict[str, Any], gradients: dict[str, np.ndarray]) -> bytes:
    """Case 9's binary request: input, linear_weight, labels, the candidate gradients and
    include ["loss"]."""
    candidate = {f"candidate.{name}": value for name, value in gradients.items()}
    return cases.npz_request({**payload, **candidate}, {"include": INCLUDE})


def read_body(body: bytes) -> dict[str, np.ndarray]:
    """The request's arrays by field name, `np.load`ed (bfloat16 members read as '<V2' viewed
    as bfloat16)."""
    arrays, _ = cases.read_npz_request(body)
    return {
        name: value.view(ml_dtypes.bfloat16) if value.dtype.kind == "V" else value
        for name, value in arrays.items()
    }


@dataclass(frozen=True)
class Checked:
    """What torch found: the reduced loss and whether each candidate passed."""

    loss: float
    passed: dict[str, bool]


def torch_check(torch: Any, body: bytes) -> Checked:
    """The baseline: `np.load` of the archive; float64 input and weight; torch 2.13's
    `F.linear_cross_entropy(input, linear_weight, labels)` (mean over the non-ignored
    positions, ignore_index −100), `backward()`; `torch.allclose` of each candidate gradient
    with torch's at bfloat16's default tolerance."""
    arrays = read_body(body)
    x = torch.from_numpy(arrays["input"].astype(np.float64)).requires_grad_()
    w = torch.from_numpy(arrays["linear_weight"].astype(np.float64)).requires_grad_()
    labels = torch.from_numpy(arrays["labels"])
    loss = torch.nn.functional.linear_cross_entropy(x, w, labels, ignore_index=IGNORE_INDEX)
    loss.backward()
    atol, rtol = BFLOAT16_TOLERANCE
    passed = {}
    for name, gradient in (("input_gradient", x.grad), ("linear_weight_gradient", w.grad)):
        candidate = torch.from_numpy(arrays[f"candidate.{name}"].astype(np.float64))
        passed[name] = bool(torch.allclose(candidate, gradient, rtol=rtol, atol=atol))
    return Checked(float(loss.detach()), passed)


def torch_tensors(torch: Any, payload: dict[str, Any]) -> tuple[Any, Any, Any]:
    """float64 input and weight tensors and the labels, made once."""
    return (
        torch.from_numpy(payload["input"].astype(np.float64)),
        torch.from_numpy(payload["linear_weight"].astype(np.float64)),
        torch.from_numpy(payload["labels"]),
    )


def torch_forward_backward(torch: Any, tensors: tuple[Any, Any, Any]) -> float:
    """torch float64 `F.linear_cross_entropy` forward and backward alone: the loss."""
    x, w, labels = tensors
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    loss = torch.nn.functional.linear_cross_entropy(x, w, labels, ignore_index=IGNORE_INDEX)
    loss.backward()
    return float(loss.detach())


class HealthProbe:
    """GET /healthz every HEALTH_INTERVAL seconds on a connection of its own, in a thread,
    while the block runs (at most `limit` seconds): the longest answer time."""

    def __init__(self, port: int, limit: float) -> None:
        self.port, self.limit = port, limit
        self.longest = 0.0
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        connection = Connection(self.port, timeout=30.0)
        request = build_request("GET", "/healthz")
        stop_at = time.monotonic() + self.limit
        try:
            while not self._stop.is_set() and time.monotonic() < stop_at:
                started = time.perf_counter()
                connection.request(request).raise_for_status()
                self.longest = max(self.longest, time.perf_counter() - started)
                self.answers += 1
                self._stop.wait(HEALTH_INTERVAL)
        finally:
            connection.close()

    def __enter__(self) -> "HealthProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60.0)


def _post_ready(connection: Connection, raw_request: bytes) -> dict[str, Any]:
    """End to end for an HTTP request built beforehand (its body is not copied on the clock):
    send, receive, decode the JSON response."""
    decoded: dict[str, Any] = orjson.loads(connection.request(raw_request).raise_for_status().body)
    return decoded


def measure(bench: Bench) -> tuple[list[Row], dict[str, Any]]:
    """Case 9's rows (against a fresh server of its own, whose first large request gives the
    memory row) and what each side found."""
    plan = bench.plan
    n, d, c = plan.linear
    payload = linear_problem(n, d, c)
    gradients = right_gradients(payload)
    body = linear_body(payload, gradients)
    head_bytes = (n * d + c * d) * 8
    case = f"(N={n}, d={d}, C={c}, bfloat16, candidate input and weight gradients)"
    end_to_end = f"9 linear cross-entropy checked {case}"
    torch = torch_module()
    small = linear_body(linear_problem(4, 8, 16), right_gradients(linear_problem(4, 8, 16)))
    raw = build_request("POST", LINEAR_PATH, body, cases.BINARY_JSON_HEADERS)
    with running_server(bench.env) as server:
        connection = Connection(server.port, timeout=600.0)
        _post_ready(
            connection, build_request("POST", LINEAR_PATH, small, cases.BINARY_JSON_HEADERS)
        )
        limit = 120.0 + 60.0 * plan.linear_repeats
        with HealthProbe(server.port, limit) as probe:
            before = server.peak_rss_bytes()
            started = time.perf_counter()
            reply = connection.request(raw)
            first = time.perf_counter() - started
            growth = server.peak_rss_bytes() - before
            if reply.status != 200:
                connection.close()
                reason = f"not available: HTTP {reply.status} ({reply_detail(reply.body)})"
                keys = ("9", "9 torch check", "9 memory", "9 healthz")
                return [unavailable(key, f"{key} {case}", "s", MEANING, reason) for key in keys], {
                    "N": n,
                    "d": d,
                    "C": c,
                    "status": reply.status,
                }
            response = orjson.loads(reply.body)
            actions: dict[str, Any] = {"service": partial(_post_ready, connection, raw)}
            if torch is not None:
                tensors = torch_tensors(torch, payload)
                actions["torch_check"] = partial(torch_check, torch, body)
                actions["torch_forward_backward"] = partial(torch_forward_backward, torch, tensors)
            found = {name: action() for name, action in actions.items()}  # warm; what each found
            times = cases.interleaved(actions, plan.linear_repeats)
        connection.close()
    rows = []
    check_case = f"9 the same against torch's whole check, information {case}"
    if torch is None:
        rows.append(unavailable("9", end_to_end, "s", MEANING, TORCH_UNAVAILABLE))
        rows.append(unavailable("9 torch check", check_case, "s", CHECK_MEANING, TORCH_UNAVAILABLE))
    else:
        service = times["service"]
        alone = times["torch_forward_backward"]
        rows.append(row("9", end_to_end, service, alone, "s", service / alone, MEANING))
        whole = times["torch_check"]
        rows.append(
            row("9 torch check", check_case, service, whole, "s", service / whole, CHECK_MEANING)
        )
    rows.append(
        row(
            "9 memory",
            f"9 peak memory, server {case}",
            growth - len(body),
            head_bytes,
            "bytes",
            (growth - len(body)) / head_bytes,
            MEMORY_MEANING,
        )
    )
    rows.append(
        row(
            "9 healthz",
            f"9 /healthz while it runs ({probe.answers} probes)",
            probe.longest,
            1.0,
            "s",
            probe.longest,
            HEALTH_MEANING,
        )
    )
    checked = {name: value for name, value in found.items() if isinstance(value, Checked)}
    details = {
        "N": n,
        "d": d,
        "C": c,
        "body_bytes": len(body),
        "head_float64_bytes": head_bytes,
        "server_peak_rss_growth_bytes": growth,
        "first_run_seconds": first,
        "seconds": times,
        "healthz": {"longest_seconds": probe.longest, "answers": probe.answers},
        "response_keys": sorted(response),
        "losses": {
            "service": response["loss"],
            **{name: value.loss for name, value in checked.items()},
            **({"torch_forward_backward": found["torch_forward_backward"]} if torch else {}),
        },
        "passed": {
            "service": {
                name: response["candidate_check"]["outputs"][name]["passed"] for name in CANDIDATES
            },
            **{name: value.passed for name, value in checked.items()},
        },
        "torch_threads": None if torch is None else torch.get_num_threads(),
    }
    return rows, details
