"""Case 7 (issue 18 item 6, floor restated by issue 25 item 7): a fused kernel's float32
gradient checked at LLM scale.

N×C of `Plan.llm` float32 logits (N(0, 3²), 10 % of the positions ignored with −100) sent as
.npz with a float32 `candidate.gradient` (the exact gradient rounded to float32, so it passes),
z-loss 1e-4 and softcap 30, include ["loss"], answered as JSON; no numeric check.

- *Floor*: the formula in plain numpy float64 on one thread (`formula_floor`): what checking the
  kernel costs a caller who writes it out, with nothing of the service's. The service must stay
  within 1.5× of it end to end.
- *Information*: the same check by the service's own numerics in-process (`numerics_in_process`:
  what the service computes, without HTTP), and by torch float64 autograd in-process
  (`torch_autograd`; "not available" without torch), each against the floor.
- *Memory*: a fresh server's peak RSS growth (VmHWM) while it serves its first such request,
  against the float64 size of the logits (N·C·8 bytes).

Run it alone: `python -m bench.run --case 7` (with the Makefile's allocator settings:
`make bench BENCH_ARGS="--case 7"`).
"""

import importlib
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import orjson

from app.numerics.candidate import DEFAULT_TOLERANCE, CandidateCheck, check_candidate
from app.numerics.cross_entropy import Reduction
from app.numerics.gradcheck import Output, ReferenceOutputs, analyse_cross_entropy
from bench import cases
from bench.client import Connection, build_request
from bench.heap import in_warm_heap
from bench.plan import Bench
from bench.report import Row, reply_detail, row, unavailable
from bench.server import running_server

LLM_OPTIONS = {"z_loss": 1e-4, "softcap": 30.0}
"""PaLM's z-loss and Gemma 2's logit soft-capping, as the kernel under test computes them."""
LLM_INCLUDE = ["loss"]
IGNORE_INDEX = -100
IGNORED_FRACTION = 0.1
LOSS_AND_GRADIENT = frozenset({Output.LOSS, Output.GRADIENT})

MEANING = "end-to-end time / in-process floor (np.load, the formula in numpy float64, allclose)"
NUMERICS_MEANING = "in-process time (np.load, the service's numerics, check_candidate) / floor"
TORCH_MEANING = "in-process time (np.load, torch float64 autograd, torch.allclose) / floor"
MEMORY_MEANING = "server peak RSS growth / float64 size of the logits"
TORCH_UNAVAILABLE = "not available: torch is not installed (make torch)"


def llm_problem(num_samples: int, num_classes: int, seed: int = 0) -> dict[str, Any]:
    """float32 logits N(0, 3²) over a vocabulary, and labels with 10 % of the positions
    ignored (ignore_index −100, padding)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_samples)
    ignored = rng.choice(num_samples, size=round(IGNORED_FRACTION * num_samples), replace=False)
    labels[ignored] = IGNORE_INDEX
    return {
        "logits": rng.normal(scale=3.0, size=(num_samples, num_classes)).astype(np.float32),
        "labels": labels,
    }


def llm_gradient(payload: dict[str, Any]) -> np.ndarray:
    """A right float32 kernel gradient: the exact one (z-loss, softcap) rounded to float32."""
    report = cases.analyse(payload, LOSS_AND_GRADIENT, **LLM_OPTIONS)
    assert report.gradient is not None
    return report.gradient.astype(np.float32)


def llm_body(payload: dict[str, Any]) -> bytes:
    """Case 7's binary request: logits, labels, a float32 `candidate.gradient`, z_loss,
    softcap, include ["loss"]."""
    arrays = {**payload, "candidate.gradient": llm_gradient(payload)}
    return cases.npz_request(arrays, {**LLM_OPTIONS, "include": LLM_INCLUDE})


@dataclass(frozen=True)
class Checked:
    """What a floor or reference found: the reduced loss and whether the candidate passed."""

    loss: float
    passed: bool


def _candidate_tolerance(candidate: np.ndarray) -> tuple[float, float]:
    """(atol, rtol) the service gives a candidate of this dtype sent without a tolerance."""
    return DEFAULT_TOLERANCE[str(candidate.dtype)]


@in_warm_heap
def formula_floor(body: bytes) -> Checked:
    """The floor: the check written out in plain numpy float64, on one thread, as a caller
    would: `np.load` of the archive; y = c·tanh(z/c); ℓ = m + log Σ exp(y − m) per row (m the
    row's maximum); the mean over the kept rows of ℓ − y_label + λ·ℓ²; the gradient
    (a·(1 + 2λℓ) − onehot) / kept · (1 − tanh²(z/c)), 0 on ignored rows; `np.allclose` of the
    candidate with it at the candidate's default tolerance."""
    arrays, fields = cases.read_npz_request(body)
    labels = arrays["labels"]
    softcap, z_loss = fields["softcap"], fields["z_loss"]
    tanh = np.tanh(arrays["logits"].astype(np.float64) / softcap)
    capped = softcap * tanh
    top = capped.max(axis=1, keepdims=True)
    exponentials = np.exp(capped - top)
    totals = exponentials.sum(axis=1, keepdims=True)
    lse = (top + np.log(totals))[:, 0]
    kept = np.flatnonzero(labels != IGNORE_INDEX)
    count = kept.size
    chosen = capped[kept, labels[kept]]
    loss = (np.sum(lse[kept] - chosen) + z_loss * np.sum(lse[kept] ** 2)) / count
    gradient = exponentials / totals
    gradient *= ((1 + 2 * z_loss * lse) / count)[:, None]
    gradient[kept, labels[kept]] -= 1 / count
    gradient[labels == IGNORE_INDEX] = 0
    gradient *= 1 - tanh * tanh
    candidate = arrays["candidate.gradient"]
    atol, rtol = _candidate_tolerance(candidate)
    return Checked(float(loss), bool(np.allclose(candidate, gradient, rtol=rtol, atol=atol)))


@in_warm_heap
def numerics_in_process(body: bytes) -> CandidateCheck:
    """The service's own numerics on the request, in-process: `np.load` of the archive, the
    float64 loss and gradient with the same z-loss and softcap (`analyse_cross_entropy`), and
    the candidate's comparison at its float32 tolerance (`check_candidate`)."""
    arrays, fields = cases.read_npz_request(body)
    logits = np.asarray(arrays["logits"], np.float64)
    targets = cases.default_targets(arrays, logits.shape[1])
    report = analyse_cross_entropy(
        logits,
        targets,
        Reduction.MEAN,
        LOSS_AND_GRADIENT,
        z_loss=fields["z_loss"],
        softcap=fields["softcap"],
    )
    atol, rtol = _candidate_tolerance(arrays["candidate.gradient"])
    return check_candidate(
        {"gradient": arrays["candidate.gradient"]},
        ReferenceOutputs(report),
        atol=atol,
        rtol=rtol,
    )


def torch_module() -> Any:
    """torch if it can be imported (never a dependency of the service), else None."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


@in_warm_heap
def torch_autograd(torch: Any, body: bytes) -> Checked:
    """The check by torch float64 autograd, in-process, as Liger-Kernel's reference writes it:
    `np.load` of the archive; y = c·tanh(z/c); `F.cross_entropy(y, labels, ignore_index=-100)`
    plus λ·Σ ℓ² / kept with ℓ = `torch.logsumexp(y)` over the kept rows; `backward()`;
    `torch.allclose` of the candidate with z's gradient (torch's own threads)."""
    arrays, fields = cases.read_npz_request(body)
    softcap, z_loss = fields["softcap"], fields["z_loss"]
    logits = torch.from_numpy(arrays["logits"]).to(torch.float64).requires_grad_()
    labels = torch.from_numpy(arrays["labels"])
    capped = softcap * torch.tanh(logits / softcap)
    kept = labels != IGNORE_INDEX
    lse = torch.logsumexp(capped, dim=1)[kept]
    loss = torch.nn.functional.cross_entropy(capped, labels, ignore_index=IGNORE_INDEX)
    loss = loss + z_loss * (lse * lse).sum() / kept.sum()
    loss.backward()
    candidate = arrays["candidate.gradient"]
    atol, rtol = _candidate_tolerance(candidate)
    passed = torch.allclose(
        torch.from_numpy(candidate).to(torch.float64), logits.grad, rtol=rtol, atol=atol
    )
    return Checked(float(loss.detach()), bool(passed))


def _post_ready(connection: Connection, raw_request: bytes) -> Any:
    """End to end for an HTTP request built beforehand (its 65 MB body is not copied into a
    request on the clock): send, receive, decode the JSON response."""
    return orjson.loads(connection.request(raw_request).raise_for_status().body)


def measure(bench: Bench) -> tuple[list[Row], dict[str, Any]]:
    """Case 7's rows (against a fresh server of its own, whose first large request gives the
    memory row) and what each side found."""
    plan = bench.plan
    n, c = plan.llm
    payload = llm_problem(n, c)
    body = llm_body(payload)
    small = cases.npz_request(cases.problem(*plan.small), {"include": LLM_INCLUDE})
    logits_bytes = n * c * 8
    case = f"(N={n}, C={c}, float32, z-loss, softcap)"
    torch = torch_module()
    with running_server(bench.env) as server:
        connection = Connection(server.port, timeout=300.0)
        cases.post_binary(connection, small, npz_response=False)  # every path imported
        before = server.peak_rss_bytes()
        started = time.perf_counter()
        reply = cases.post_body(connection, body, cases.BINARY_JSON_HEADERS)
        first = time.perf_counter() - started
        growth = server.peak_rss_bytes() - before
        if reply.status != 200:
            connection.close()
            reason = f"not available: HTTP {reply.status} ({reply_detail(reply.body)})"
            return [
                unavailable("7", f"7 kernel gradient checked {case}", "s", MEANING, reason),
                unavailable(
                    "7 memory", f"7 peak memory, server {case}", "bytes", MEMORY_MEANING, reason
                ),
            ], {"N": n, "C": c, "status": reply.status}
        response = orjson.loads(reply.body)
        raw = build_request("POST", cases.CROSS_ENTROPY_PATH, body, cases.BINARY_JSON_HEADERS)
        actions = {
            "floor": partial(formula_floor, body),
            "service": partial(_post_ready, connection, raw),
            "numerics_in_process": partial(numerics_in_process, body),
        }
        if torch is not None:
            actions["torch_autograd"] = partial(torch_autograd, torch, body)
        found = {name: action() for name, action in actions.items()}  # warm, and what each found
        times = cases.interleaved(actions, plan.llm_repeats)
        connection.close()
    floor = times["floor"]
    rows = [
        row(
            "7",
            f"7 kernel gradient checked {case}",
            times["service"],
            floor,
            "s",
            times["service"] / floor,
            MEANING,
        ),
        row(
            "7 numerics",
            f"7 the service's numerics in-process, information {case}",
            times["numerics_in_process"],
            floor,
            "s",
            times["numerics_in_process"] / floor,
            NUMERICS_MEANING,
        ),
    ]
    torch_case = f"7 torch float64 autograd in-process, information {case}"
    if torch is None:
        rows.append(unavailable("7 torch", torch_case, "s", TORCH_MEANING, TORCH_UNAVAILABLE))
    else:
        seconds = times["torch_autograd"]
        rows.append(row("7 torch", torch_case, seconds, floor, "s", seconds / floor, TORCH_MEANING))
    rows.append(
        row(
            "7 memory",
            f"7 peak memory, server {case}",
            growth,
            logits_bytes,
            "bytes",
            growth / logits_bytes,
            MEMORY_MEANING,
        )
    )
    checks: dict[str, Checked] = {
        name: value for name, value in found.items() if isinstance(value, Checked)
    }
    details = {
        "N": n,
        "C": c,
        "body_bytes": len(body),
        "logits_float64_bytes": logits_bytes,
        "server_peak_rss_growth_bytes": growth,
        "first_run_seconds": first,
        "seconds": times,
        "response_keys": sorted(response),
        "losses": {"service": response["loss"], **{k: v.loss for k, v in checks.items()}},
        "passed": {
            "service": response["candidate_check"]["passed"],
            "numerics_in_process": found["numerics_in_process"].passed,
            **{name: value.passed for name, value in checks.items()},
        },
        "torch_threads": None if torch is None else torch.get_num_threads(),
    }
    return rows, details
