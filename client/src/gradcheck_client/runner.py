"""`Client.test`: run a function on every case of a suite, check its outputs with the service, and
shrink each failure to a smallest problem that fails the same way.

`fn(logits, labels, **options)` returns `(loss, gradient)` (with `reduction="none"`, the gradient
of the summed losses). With `framework="torch"` it receives tensors (logits requiring grad) and
may return the loss alone: the gradient then comes from autograd. Only the options a case needs,
or that `options=` fixes, are passed, and only those `fn`'s signature accepts (`**kwargs`
accepts all). A case is not applicable when it needs an option `fn` does not take (unless
`options=` fixes it to the case's value: `fn` is written for that value), an option fixed to
another value, an input feature not in `supports`, or when `fn` raises `NotImplementedError`.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gradcheck_client import wire
from gradcheck_client.errors import RefusedError
from gradcheck_client.results import CandidateCheck
from gradcheck_client.shrink import OutOfBudget, Shrinker, reproduction, shape_text
from gradcheck_client.suites import (
    FEATURES,
    Case,
    CaseResult,
    Suite,
    SuiteInfo,
    SuiteReport,
    fetch_suite,
)

if TYPE_CHECKING:
    from gradcheck_client.client import Client

Framework = Literal["numpy", "torch"]
OPTION_DEFAULTS: dict[str, Any] = {
    "reduction": "mean",
    "weight": None,
    "ignore_index": -100,
    "label_smoothing": 0.0,
    "z_loss": 0.0,
    "softcap": None,
}
"""The options a tested function may take, in the order they are passed."""
ENDPOINTS = frozenset({"/v1/cross-entropy"})
"""The endpoints whose cases this runner can run."""
SHRINK_CALLS = 100
"""Most service calls spent shrinking one case."""
CHECK_INCLUDE = ("loss",)
"""What the service returns besides the candidate check (the least it computes)."""


@dataclass(frozen=True)
class Accepted:
    """The options a function's signature accepts."""

    names: frozenset[str]
    everything: bool

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> Accepted:
        """From `fn`'s signature (a torch module's `forward`)."""
        target = fn.forward if hasattr(fn, "forward") else fn
        try:
            parameters = inspect.signature(target).parameters.values()
        except (TypeError, ValueError):  # no signature to read: pass every option
            return cls(frozenset(), True)
        everything = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        names = frozenset(
            p.name
            for p in parameters
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        )
        return cls(names, everything)

    def __contains__(self, option: object) -> bool:
        return self.everything or option in self.names


class NotApplicable(Exception):
    """The case cannot be run on this function: the message says why."""


@dataclass(frozen=True)
class Outcome:
    """One run of the function on a request, checked."""

    failing: dict[str, tuple[str, ...]]
    """Each failing output and the mistakes named for it."""
    message: str = ""
    error: str | None = None
    """The exception's last line, when `fn` raised one."""
    error_type: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failing and self.error is None

    @property
    def key(self) -> tuple[Any, ...]:
        """What "failing the same way" compares: the failing outputs and their diagnoses, or
        the exception's type."""
        return (
            tuple(sorted((name, tuple(sorted(codes))) for name, codes in self.failing.items())),
            self.error_type,
        )


def _error_line(error: BaseException) -> str:
    return traceback.format_exception_only(type(error), error)[-1].strip()


def _describe(check: CandidateCheck) -> tuple[dict[str, tuple[str, ...]], str]:
    failing: dict[str, tuple[str, ...]] = {}
    parts = []
    for name, output in sorted(check.outputs.items()):
        if output.passed:
            continue
        codes = tuple(d.code for d in check.diagnoses if d.output == name)
        failing[name] = codes
        if output.defect is not None:
            detail = f"not read: {output.defect}"
        else:
            detail = f"{output.mismatches} of {output.checked} off"
            if output.nonfinite:
                detail += f", {output.nonfinite} not finite"
            elif output.max_rel_error is not None:
                detail += f", max rel error {output.max_rel_error:.2g}"
        parts.append(f"{name}: {detail}" + (f" [{', '.join(codes)}]" if codes else ""))
    return failing, "; ".join(parts)


class Runner:
    """Runs one function over the cases of a suite."""

    def __init__(
        self,
        client: Client,
        fn: Callable[..., Any],
        framework: Framework,
        supports: Collection[str],
        options: Mapping[str, Any] | None,
    ) -> None:
        unknown = set(supports) - FEATURES
        if unknown:
            raise ValueError(
                f"supports: unknown features {sorted(unknown)}; known: {sorted(FEATURES)}"
            )
        fixed = dict(options or {})
        if set(fixed) - set(OPTION_DEFAULTS):
            raise ValueError(
                f"options: unknown {sorted(set(fixed) - set(OPTION_DEFAULTS))}; "
                f"known: {list(OPTION_DEFAULTS)}"
            )
        if framework not in ("numpy", "torch"):
            raise ValueError(f"framework must be 'numpy' or 'torch', got {framework!r}")
        self.client = client
        self.fn = fn
        self.framework = framework
        self.supports = frozenset(supports)
        self.fixed = fixed
        self.accepted = Accepted.of(fn)
        self.torch: Any = None
        if framework == "torch":
            import torch  # only for framework="torch"

            self.torch = torch

    # ----- applicability -----

    def prepare(self, case: Case) -> tuple[dict[str, Any], list[str]]:
        """The case's request with the fixed options applied, and the options passed to fn;
        NotApplicable if it cannot run."""
        if case.endpoint not in ENDPOINTS:
            raise NotApplicable(f"this client runs no cases of {case.endpoint}")
        missing = sorted(case.features - self.supports)
        if missing:
            raise NotApplicable(f"needs {', '.join(missing)} (not in supports)")
        if case.dtype == "bfloat16" and self.framework == "numpy" and wire._bfloat16() is None:
            raise NotApplicable("bfloat16 logits need ml_dtypes (gradcheck-client[bfloat16])")
        request = dict(case.request or {})
        for option in case.options:
            if option in self.fixed:  # fn is written for the fixed value: it must be this one
                if not _same(self.fixed[option], request.get(option)):
                    raise NotApplicable(
                        f"needs {option}={_short(request.get(option))}, options fix "
                        f"{_short(self.fixed[option])}"
                    )
            elif option not in self.accepted:
                raise NotApplicable(f"fn takes no `{option}`")
        for option, value in self.fixed.items():
            request[option] = np.asarray(value, np.float64) if option == "weight" else value
        passed = [
            option
            for option in OPTION_DEFAULTS
            if (option in case.options or option in self.fixed) and option in self.accepted
        ]
        return request, passed

    # ----- one run -----

    def inputs(
        self, request: dict[str, Any], dtype: str, passed: list[str]
    ) -> tuple[Any, Any, dict[str, Any]]:
        """Fresh logits (in `dtype`), labels and options for fn, in its framework."""
        logits = request["logits"]
        labels = np.asarray(request["labels"])
        probability = labels.ndim == np.ndim(logits)
        values = {option: request.get(option, OPTION_DEFAULTS[option]) for option in passed}
        if self.framework == "numpy":
            cast = wire._bfloat16() if dtype == "bfloat16" else np.dtype(dtype)
            if values.get("weight") is not None:
                values["weight"] = np.array(values["weight"], np.float64)
            return np.array(logits, np.float64).astype(cast), labels.copy(), values
        torch = self.torch
        torch_dtype = getattr(torch, dtype)
        z = torch.tensor(np.array(logits, np.float64)).to(torch_dtype).requires_grad_(True)
        y = torch.tensor(labels).to(torch_dtype) if probability else torch.tensor(labels)
        if values.get("weight") is not None:
            values["weight"] = torch.tensor(np.asarray(values["weight"], np.float64)).to(
                torch_dtype
            )
        return z, y, values

    def outputs(self, logits: Any, result: Any) -> tuple[Any, Any]:
        """(loss, gradient) as arrays from what fn returned."""
        if self.framework == "torch":
            if isinstance(result, tuple | list) and len(result) == 2 and result[1] is not None:
                loss, gradient = result
            else:
                loss = result[0] if isinstance(result, tuple | list) else result
                total = loss.sum() if loss.ndim else loss
                (gradient,) = self.torch.autograd.grad(total, logits)
            return wire.as_array(loss), wire.as_array(gradient)
        if not isinstance(result, tuple | list) or len(result) != 2:
            raise TypeError(f"fn returned {type(result).__name__}: expected (loss, gradient)")
        return wire.as_array(result[0]), wire.as_array(result[1])

    def run(self, request: dict[str, Any], dtype: str, passed: list[str]) -> tuple[Outcome, bool]:
        """fn on the request, then the service's check: (outcome, whether the service was
        called). NotImplementedError propagates."""
        logits, labels, values = self.inputs(request, dtype, passed)
        try:
            loss, gradient = self.outputs(logits, self.fn(logits, labels, **values))
        except NotImplementedError:
            raise
        except Exception as error:
            line = _error_line(error)
            return Outcome({}, f"raised {line}", line, type(error).__name__), False
        check = self.client.check(
            request["logits"],
            request["labels"],
            candidate={"loss": loss, "gradient": gradient},
            include=CHECK_INCLUDE,
            **{k: v for k, v in request.items() if k not in {"logits", "labels", "include"}},
        )
        failing, message = _describe(check)
        return Outcome(failing, message), True

    # ----- a case -----

    def case(self, case: Case) -> CaseResult:
        """Run, check and (if it fails) shrink one case."""
        try:
            request, passed = self.prepare(case)
            outcome, _ = self.run(request, case.dtype, passed)
        except NotApplicable as reason:
            return CaseResult(case.name, None, False, str(reason), case.reason)
        except NotImplementedError as error:
            detail = _error_line(error)
            return CaseResult(
                case.name, None, False, f"not applicable: fn raised {detail}", case.reason
            )
        if outcome.passed:
            return CaseResult(case.name, True, True, "", case.reason)
        smallest, calls = self.shrink(request, case.dtype, passed, outcome)
        shrunk = f"shrunk to {shape_text(smallest)} in {calls} calls"
        return CaseResult(
            name=case.name,
            passed=False,
            applicable=True,
            message=f"{outcome.message} ({shrunk})",
            reason=case.reason,
            diagnoses=outcome.failing,
            smallest=wire.jsonable(smallest),
            reproduction=reproduction(
                self.fn, self.framework, smallest, case.dtype, passed, self.client.base_url
            ),
            shrink_calls=calls,
        )

    def shrink(
        self, request: dict[str, Any], dtype: str, passed: list[str], outcome: Outcome
    ) -> tuple[dict[str, Any], int]:
        """A smallest request that fails as `outcome` did, and the service calls it took."""
        calls = 0
        tries = 0

        def still_fails(smaller: dict[str, Any]) -> bool:
            nonlocal calls, tries
            if calls >= SHRINK_CALLS or tries >= 2 * SHRINK_CALLS:
                raise OutOfBudget
            tries += 1
            try:
                found, called = self.run(smaller, dtype, passed)
            except NotImplementedError:
                return False
            except RefusedError:  # e.g. every row left is ignored
                calls += 1
                return False
            calls += called
            return found.key == outcome.key

        smallest = Shrinker(request, dtype, still_fails).run()
        return smallest, calls


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, str) or isinstance(b, str):
        return bool(a == b)
    return bool(np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64)))


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return repr(value.tolist())
    return repr(value)


def load_suite(client: Client, suite: str | Path | Mapping[str, Any] | Suite) -> Suite:
    """A suite by name (from the service), from a course's JSON file, or as a document."""
    if isinstance(suite, Suite):
        return suite
    if isinstance(suite, Path):
        return Suite.from_file(suite)
    if isinstance(suite, Mapping):
        return Suite.from_json(suite)
    return fetch_suite(client, suite)


def run_suite(
    client: Client,
    fn: Callable[..., Any],
    suite: str | Path | Mapping[str, Any] | Suite = "basics",
    *,
    framework: Framework = "numpy",
    supports: Collection[str] = (),
    options: Mapping[str, Any] | None = None,
) -> SuiteReport:
    """Run `fn` on every case of `suite` (see `Client.test`)."""
    runner = Runner(client, fn, framework, supports, options)
    loaded = load_suite(client, suite)
    results = tuple(runner.case(case) for case in loaded.cases)
    return SuiteReport(SuiteInfo(loaded.name, loaded.version), results, framework)
