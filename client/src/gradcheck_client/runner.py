"""`Client.test`: run a function on every case of a suite, check its outputs with the service, and
shrink each failure to a smallest problem that fails the same way.

How `fn` is called and how its outputs are checked depends on the case's endpoint (`ENDPOINTS`,
one entry each):

* `/v1/cross-entropy`: `fn(logits, labels, **options)` returns `(loss, gradient)` (with
  `reduction="none"`, the gradient of the summed losses);
* `/v1/linear-cross-entropy` (suite `lm_head`): `fn(input, linear_weight, labels, **options)`,
  with `linear_bias=` when the case has a bias, returns `(loss, input_gradient,
  linear_weight_gradient[, linear_bias_gradient])`.

With `framework="torch"` fn receives tensors (the logits, or the input, weight and bias,
requiring grad) and may return the loss alone: the gradients then come from autograd. Only the
options a case needs, or that `options=` fixes, are passed, and only those `fn`'s signature
accepts (`**kwargs` accepts all). A case is not applicable when it needs an option `fn` does
not take (unless `options=` fixes it to the case's value: `fn` is written for that value), an
option fixed to another value, an input feature not in `supports`, when the service refuses
the case with the options `options=` fixes (`denominator` under a fixed `sum`), or when `fn`
raises `NotImplementedError`.
"""

from __future__ import annotations

import inspect
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from gradcheck_client import wire
from gradcheck_client.errors import RefusedError, ResponseError
from gradcheck_client.results import CandidateCheck
from gradcheck_client.shrink import (
    LinearShrinker,
    OutOfBudget,
    Shrinker,
    linear_reproduction,
    reproduction,
    shape_text,
)
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
LINEAR_OPTION_DEFAULTS: dict[str, Any] = {
    **OPTION_DEFAULTS,
    "causal_shift": False,
    "denominator": None,
}
"""The options an LM-head function may take: the loss's and the two of LM training."""
LINEAR_GRADIENTS = ("input_gradient", "linear_weight_gradient", "linear_bias_gradient")
"""What an LM-head function returns after its loss, in order."""
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
        if set(fixed) - set(LINEAR_OPTION_DEFAULTS):
            raise ValueError(
                f"options: unknown {sorted(set(fixed) - set(LINEAR_OPTION_DEFAULTS))}; "
                f"known: {list(LINEAR_OPTION_DEFAULTS)}"
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

    def prepare(self, case: Case) -> tuple[Endpoint, dict[str, Any], list[str]]:
        """The case's endpoint, its request with the fixed options applied, and the options
        passed to fn; NotApplicable if it cannot run."""
        endpoint = ENDPOINTS.get(case.endpoint)
        if endpoint is None:
            raise NotApplicable(f"this client runs no cases of {case.endpoint}")
        missing = sorted(case.features - self.supports)
        if missing:
            raise NotApplicable(f"needs {', '.join(missing)} (not in supports)")
        if case.dtype == "bfloat16" and self.framework == "numpy" and wire._bfloat16() is None:
            raise NotApplicable("bfloat16 arrays need ml_dtypes (gradcheck-client[bfloat16])")
        request = dict(case.request or {})
        for parameter in endpoint.parameters(request):
            if parameter not in self.accepted:
                raise NotApplicable(f"fn takes no `{parameter}`")
        foreign = sorted(set(self.fixed) - set(endpoint.options))
        if foreign:
            raise NotApplicable(f"options fix {', '.join(foreign)}: {case.endpoint} takes none")
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
            for option in endpoint.options
            if (option in case.options or option in self.fixed) and option in self.accepted
        ]
        return endpoint, request, passed

    # ----- one run -----

    def cast(self, values: Any, dtype: str, grad: bool = False) -> Any:
        """Float64 `values` in `dtype`, in fn's framework (a tensor requiring grad if `grad`)."""
        if self.framework == "numpy":
            cast = wire._bfloat16() if dtype == "bfloat16" else np.dtype(dtype)
            return np.array(values, np.float64).astype(cast)
        tensor = self.torch.tensor(np.array(values, np.float64)).to(getattr(self.torch, dtype))
        return tensor.requires_grad_(True) if grad else tensor

    def labels(self, labels: Any, probability: bool, dtype: str) -> Any:
        """Fresh labels in fn's framework (probability rows in `dtype` for torch)."""
        array = np.array(labels)
        if self.framework == "numpy":
            return array
        tensor = self.torch.tensor(array)
        return tensor.to(getattr(self.torch, dtype)) if probability else tensor

    def option_values(
        self, endpoint: Endpoint, request: dict[str, Any], dtype: str, passed: list[str]
    ) -> dict[str, Any]:
        """The options passed to fn, class weights as an array (a tensor in `dtype`)."""
        values = {option: request.get(option, endpoint.options[option]) for option in passed}
        if values.get("weight") is not None:
            weight = np.asarray(values["weight"], np.float64)
            values["weight"] = weight if self.framework == "numpy" else self.cast(weight, dtype)
        return values

    def autograd(self, result: Any, count: int, leaves: list[Any]) -> list[Any]:
        """fn's gradients for torch: those it returned after its loss, or autograd's of the
        (summed) loss with respect to `leaves` (zeros for a leaf the loss does not use)."""
        if isinstance(result, tuple | list) and len(result) == count + 1 and result[1] is not None:
            return [wire.as_array(value) for value in result]
        loss = result[0] if isinstance(result, tuple | list) else result
        total = loss.sum() if loss.ndim else loss
        gradients = self.torch.autograd.grad(total, leaves, allow_unused=True)
        return [wire.as_array(loss)] + [
            wire.as_array(self.torch.zeros_like(leaf) if g is None else g)
            for leaf, g in zip(leaves, gradients, strict=True)
        ]

    def run(
        self, endpoint: Endpoint, request: dict[str, Any], dtype: str, passed: list[str]
    ) -> tuple[Outcome, bool]:
        """fn on the request, then the service's check: (outcome, whether the service was
        called). NotImplementedError propagates."""
        try:
            candidate = endpoint.call(self, request, dtype, passed)
        except NotImplementedError:
            raise
        except Exception as error:
            line = _error_line(error)
            return Outcome({}, f"raised {line}", line, type(error).__name__), False
        failing, message = _describe(endpoint.check(self.client, request, candidate))
        return Outcome(failing, message), True

    # ----- a case -----

    def case(self, case: Case) -> CaseResult:
        """Run, check and (if it fails) shrink one case."""
        try:
            endpoint, request, passed = self.prepare(case)
            outcome, _ = self.run(endpoint, request, case.dtype, passed)
        except NotApplicable as reason:
            return CaseResult(case.name, None, False, str(reason), case.reason)
        except NotImplementedError as error:
            detail = _error_line(error)
            return CaseResult(
                case.name, None, False, f"not applicable: fn raised {detail}", case.reason
            )
        except RefusedError as error:
            if not self.fixed:  # the case itself is refused: no verdict on fn
                raise
            fixed = ", ".join(sorted(self.fixed))
            message = f"the service refuses the case with {fixed} fixed: {error}"
            return CaseResult(case.name, None, False, message, case.reason)
        if outcome.passed:
            return CaseResult(case.name, True, True, "", case.reason)
        smallest, calls = self.shrink(endpoint, request, case.dtype, passed, outcome)
        shrunk = f"shrunk to {shape_text(smallest)} in {calls} calls"
        return CaseResult(
            name=case.name,
            passed=False,
            applicable=True,
            message=f"{outcome.message} ({shrunk})",
            reason=case.reason,
            diagnoses=outcome.failing,
            smallest=wire.jsonable(smallest),
            reproduction=endpoint.reproduction(
                self.fn, self.framework, smallest, case.dtype, passed, self.client.base_url
            ),
            shrink_calls=calls,
        )

    def shrink(
        self,
        endpoint: Endpoint,
        request: dict[str, Any],
        dtype: str,
        passed: list[str],
        outcome: Outcome,
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
                found, called = self.run(endpoint, smaller, dtype, passed)
            except NotImplementedError:
                return False
            except RefusedError:  # e.g. every row left is ignored
                calls += 1
                return False
            calls += called
            return found.key == outcome.key

        smallest = endpoint.shrinker(request, dtype, still_fails).run()
        return smallest, calls


class Endpoint(ABC):
    """How the cases of one endpoint are run: the options fn may take, how fn is called, how
    its outputs are checked, shrunk and reproduced."""

    path: str
    options: dict[str, Any]
    shrinker: Callable[[dict[str, Any], str, Callable[[dict[str, Any]], bool]], Shrinker]
    reproduction: Callable[..., str]

    def parameters(self, request: dict[str, Any]) -> list[str]:
        """The parameters fn must take for this request, besides its options."""
        return []

    @abstractmethod
    def call(
        self, runner: Runner, request: dict[str, Any], dtype: str, passed: list[str]
    ) -> dict[str, Any]:
        """fn on fresh inputs of the request: its outputs, as the check's candidate."""

    @abstractmethod
    def check(
        self, client: Client, request: dict[str, Any], candidate: dict[str, Any]
    ) -> CandidateCheck:
        """The service's check of the candidate on the request."""


class CrossEntropyEndpoint(Endpoint):
    """`/v1/cross-entropy`: fn(logits, labels, **options) -> (loss, gradient)."""

    path = "/v1/cross-entropy"
    options = OPTION_DEFAULTS
    shrinker = Shrinker
    reproduction = staticmethod(reproduction)

    def call(
        self, runner: Runner, request: dict[str, Any], dtype: str, passed: list[str]
    ) -> dict[str, Any]:
        logits = runner.cast(request["logits"], dtype, grad=True)
        probability = np.ndim(request["labels"]) == np.ndim(request["logits"])
        labels = runner.labels(request["labels"], probability, dtype)
        result = runner.fn(logits, labels, **runner.option_values(self, request, dtype, passed))
        if runner.framework == "torch":
            loss, gradient = runner.autograd(result, 1, [logits])
        elif not isinstance(result, tuple | list) or len(result) != 2:
            raise TypeError(f"fn returned {type(result).__name__}: expected (loss, gradient)")
        else:
            loss, gradient = (wire.as_array(value) for value in result)
        return {"loss": loss, "gradient": gradient}

    def check(
        self, client: Client, request: dict[str, Any], candidate: dict[str, Any]
    ) -> CandidateCheck:
        return client.check(
            request["logits"],
            request["labels"],
            candidate=candidate,
            include=CHECK_INCLUDE,
            **{k: v for k, v in request.items() if k not in {"logits", "labels", "include"}},
        )


class LinearCrossEntropyEndpoint(Endpoint):
    """`/v1/linear-cross-entropy`: fn(input, linear_weight, labels, [linear_bias=…,] **options)
    -> (loss, input_gradient, linear_weight_gradient[, linear_bias_gradient])."""

    path = "/v1/linear-cross-entropy"
    options = LINEAR_OPTION_DEFAULTS
    shrinker = LinearShrinker
    reproduction = staticmethod(linear_reproduction)

    def parameters(self, request: dict[str, Any]) -> list[str]:
        return ["linear_bias"] if request.get("linear_bias") is not None else []

    def call(
        self, runner: Runner, request: dict[str, Any], dtype: str, passed: list[str]
    ) -> dict[str, Any]:
        leaves = [runner.cast(request[name], dtype, grad=True) for name in self.arrays(request)]
        probability = np.ndim(request["labels"]) == np.ndim(request["input"])
        labels = runner.labels(request["labels"], probability, dtype)
        values = runner.option_values(self, request, dtype, passed)
        if len(leaves) == 3:
            values["linear_bias"] = leaves[2]
        result = runner.fn(leaves[0], leaves[1], labels, **values)
        names = ["loss", *LINEAR_GRADIENTS[: len(leaves)]]
        if runner.framework == "torch":
            outputs = runner.autograd(result, len(leaves), leaves)
        elif not isinstance(result, tuple | list) or len(result) < len(names):
            expected = ", ".join(names)
            raise TypeError(f"fn returned {type(result).__name__}: expected ({expected})")
        else:
            outputs = [wire.as_array(value) for value in result[: len(names)]]
        return dict(zip(names, outputs, strict=True))

    @staticmethod
    def arrays(request: dict[str, Any]) -> list[str]:
        """The request's arrays fn differentiates: input, linear_weight[, linear_bias]."""
        names = ["input", "linear_weight"]
        return names + (["linear_bias"] if request.get("linear_bias") is not None else [])

    def check(
        self, client: Client, request: dict[str, Any], candidate: dict[str, Any]
    ) -> CandidateCheck:
        arrays = {"input", "linear_weight", "labels", "include"}
        result = client.linear_cross_entropy(
            request["input"],
            request["linear_weight"],
            request["labels"],
            candidate=candidate,
            include=("loss",),
            **{k: v for k, v in request.items() if k not in arrays},
        )
        if result.candidate_check is None:
            raise ResponseError(f"{client.base_url}: the response has no candidate_check")
        return result.candidate_check


ENDPOINTS: dict[str, Endpoint] = {
    endpoint.path: endpoint for endpoint in (CrossEntropyEndpoint(), LinearCrossEntropyEndpoint())
}
"""The endpoints whose cases this runner can run, each saying how."""


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
