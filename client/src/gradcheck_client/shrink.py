"""Shrinking a failing case to a smallest problem that still fails the same way, and the Python
that reproduces it.

A `/v1/cross-entropy` request (arrays as numpy) is made smaller one step at a time, each step
kept only if the tested function still fails it in the same way (the same failing outputs with
the same diagnoses, or the same exception): fewer rows, then fewer classes (the classes that are
labels are kept, and labels renumbered), then smaller magnitudes (rows centred, logits divided by
10, single logits set to 0), then values rounded to few digits. Each step is tried in a fixed
order, so the result is deterministic; `still_fails` raises `OutOfBudget` once its service calls
are spent, and shrinking stops there with the smallest problem found so far.

A `/v1/linear-cross-entropy` request (`LinearShrinker`) loses positions (sequences, then
positions within them under `causal_shift`), then classes (rows of the head, its bias and the
class weights; labels kept valid), then hidden features (columns of the input and the head).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from gradcheck_client import wire

MAX_ZEROED_ENTRIES = 24
"""Single logits tried at 0 (the first ones, in C order)."""
ROUNDING_DECIMALS = (0, 1, 2, 3)
"""Decimals tried for the logits, coarsest first."""
SCALE_STEPS = 4
"""At most this many divisions of the logits by 10."""


class OutOfBudget(Exception):
    """No service calls left for this case."""


def exact_in(values: Any, dtype: str) -> np.ndarray:
    """`values` rounded to `dtype` (float64, float32 or bfloat16), as float64."""
    array = np.asarray(values, np.float64)
    if dtype == "float64":
        return array
    if dtype == "float32":
        return array.astype(np.float32).astype(np.float64)
    bfloat16 = wire._bfloat16()
    if bfloat16 is not None:
        return np.asarray(array.astype(bfloat16).astype(np.float64))
    import torch  # a bfloat16 case runs on numpy only with ml_dtypes, else on torch

    return np.asarray(torch.from_numpy(array).to(torch.bfloat16).double().numpy())


def class_axis(request: dict[str, Any]) -> int:
    """The logits' class axis: 1, or 0 without a batch axis."""
    return 1 if np.ndim(request["logits"]) >= 2 else 0


def _probability(request: dict[str, Any]) -> bool:
    return bool(np.ndim(request["labels"]) == np.ndim(request["logits"]))


def _ignore_index(request: dict[str, Any]) -> int:
    return int(request.get("ignore_index", -100))


def keep_rows(request: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The request with only `rows` of the batch (axis 0)."""
    return {**request, "logits": request["logits"][rows], "labels": request["labels"][rows]}


def label_classes(request: dict[str, Any]) -> set[int]:
    """The classes that are some position's (not ignored) index label."""
    if _probability(request):
        return set()
    labels = np.asarray(request["labels"]).reshape(-1)
    return {int(label) for label in labels if label != _ignore_index(request)}


def keep_classes(request: dict[str, Any], classes: list[int]) -> dict[str, Any]:
    """The request with only `classes` (in order), index labels renumbered to match."""
    axis = class_axis(request)
    shrunk = {**request, "logits": np.take(request["logits"], classes, axis=axis)}
    if _probability(request):
        shrunk["labels"] = np.take(request["labels"], classes, axis=axis)
    else:
        ignore = _ignore_index(request)
        renumber = {old: new for new, old in enumerate(classes)}
        labels = np.asarray(request["labels"])
        shrunk["labels"] = np.vectorize(lambda y: y if y == ignore else renumber[int(y)])(
            labels
        ).astype(np.int64)
    if request.get("weight") is not None:
        shrunk["weight"] = np.asarray(request["weight"])[classes]
    return shrunk


class Shrinker:
    """Shrinks `request` while `still_fails` says the smaller one fails the same way."""

    def __init__(
        self, request: dict[str, Any], dtype: str, still_fails: Callable[[dict[str, Any]], bool]
    ) -> None:
        self.best = request
        self.dtype = dtype
        self._still_fails = still_fails

    def _try(self, request: dict[str, Any]) -> bool:
        if self._still_fails(request):
            self.best = request
            return True
        return False

    def run(self) -> dict[str, Any]:
        """Every step in order; the smallest request found when the budget runs out."""
        try:
            if class_axis(self.best) == 1:
                self._fewer(
                    lambda: list(range(self.best["logits"].shape[0])),
                    keep_rows,
                    minimum=1,
                )
            self._fewer_classes()
            self._smaller_magnitudes()
            self._rounded()
        except OutOfBudget:
            pass
        return self.best

    def _fewer(
        self,
        items: Callable[[], list[int]],
        keep: Callable[[dict[str, Any], list[int]], dict[str, Any]],
        minimum: int,
        fixed: Iterable[int] = (),
    ) -> None:
        """Remove chunks of items (halves, then quarters, … single ones) while it still fails;
        `fixed` items are never removed."""
        pinned = set(fixed)
        current = items()
        removable = [item for item in current if item not in pinned]
        chunk = max(1, len(removable) // 2)
        while removable:
            start = 0
            while start < len(removable):
                trial_removed = set(removable[start : start + chunk])
                kept = [item for item in current if item not in trial_removed]
                if len(kept) >= minimum and self._try(keep(self.best, _positions(current, kept))):
                    current = kept
                    removable = [item for item in removable if item not in trial_removed]
                else:
                    start += chunk
            if chunk == 1:
                return
            chunk = max(1, chunk // 2)

    def _fewer_classes(self) -> None:
        labels = label_classes(self.best)
        axis = class_axis(self.best)
        logits = self.best["logits"]
        classes = logits.shape[axis]
        largest = np.argmax(np.moveaxis(logits, axis, -1).reshape(-1, classes), axis=1)
        essential = labels | {int(c) for c in largest}
        others = [c for c in range(classes) if c not in essential]
        kept = sorted(essential | set(others[: max(0, 2 - len(essential))]))  # at least 2
        if len(kept) < classes:
            self._try(keep_classes(self.best, kept))
        self._fewer(
            lambda: list(range(self.best["logits"].shape[class_axis(self.best)])),
            keep_classes,
            minimum=2,
            fixed=label_classes(self.best),
        )

    def _with_logits(self, logits: np.ndarray) -> bool:
        logits = exact_in(logits, self.dtype)
        if np.array_equal(logits, self.best["logits"]):
            return False
        return self._try({**self.best, "logits": logits})

    def _smaller_magnitudes(self) -> None:
        logits = self.best["logits"]
        axis = class_axis(self.best)
        self._with_logits(logits - np.round(logits.mean(axis=axis, keepdims=True)))
        for _ in range(SCALE_STEPS):
            if np.abs(self.best["logits"]).max() < 1 or not self._with_logits(
                self.best["logits"] / 10
            ):
                break
        flat = self.best["logits"].reshape(-1)
        for index in np.flatnonzero(flat)[:MAX_ZEROED_ENTRIES]:
            zeroed = self.best["logits"].copy().reshape(-1)
            zeroed[index] = 0.0
            self._with_logits(zeroed.reshape(self.best["logits"].shape))

    def _rounded(self) -> None:
        for decimals in ROUNDING_DECIMALS:
            if self._with_logits(np.round(self.best["logits"], decimals)):
                break
        for name, decimals in (("weight", 1), ("labels", 2)):
            value = self.best.get(name)
            if value is None or (name == "labels" and not _probability(self.best)):
                continue
            rounded = np.round(value, decimals)
            if not np.array_equal(rounded, value):
                self._try({**self.best, name: rounded})


def _positions(current: list[int], kept: list[int]) -> list[int]:
    """Where the kept items sit in the current request."""
    where = {item: position for position, item in enumerate(current)}
    return [where[item] for item in kept]


class LinearShrinker(Shrinker):
    """Shrinks a `/v1/linear-cross-entropy` request: positions, classes, hidden features."""

    def run(self) -> dict[str, Any]:
        """Every step in order; the smallest request found when the budget runs out."""
        causal = bool(self.best.get("causal_shift"))
        try:
            self._fewer(lambda: _range(self.best["input"], 0), keep_positions, minimum=1)
            if causal:  # positions within each sequence: at least one pair (t, t + 1)
                self._fewer(lambda: _range(self.best["input"], 1), keep_steps, minimum=2)
            self._fewer(
                lambda: _range(self.best["linear_weight"], 0),
                keep_head_classes,
                minimum=2,
                fixed=head_label_classes(self.best),
            )
            self._fewer(lambda: _range(self.best["input"], -1), keep_features, minimum=1)
        except OutOfBudget:
            pass
        return self.best


def _range(array: np.ndarray, axis: int) -> list[int]:
    return list(range(np.shape(array)[axis]))


def keep_positions(request: dict[str, Any], rows: list[int]) -> dict[str, Any]:
    """The head's request with only `rows` of axis 0 (positions, or sequences)."""
    labels = np.asarray(request["labels"])
    return {**request, "input": request["input"][rows], "labels": labels[rows]}


def keep_steps(request: dict[str, Any], steps: list[int]) -> dict[str, Any]:
    """The head's causal request with only `steps` of each sequence (axis 1)."""
    labels = np.asarray(request["labels"])
    return {**request, "input": request["input"][:, steps], "labels": labels[:, steps]}


def head_label_classes(request: dict[str, Any]) -> set[int]:
    """The classes that are some position's (not ignored) index label."""
    labels = np.asarray(request["labels"])
    if labels.dtype.kind == "f":  # probability targets
        return set()
    ignore = _ignore_index(request)
    return {int(label) for label in labels.reshape(-1) if label != ignore}


def keep_head_classes(request: dict[str, Any], classes: list[int]) -> dict[str, Any]:
    """The head's request with only `classes`: rows of the weight, entries of the bias and
    the class weights, index labels renumbered."""
    shrunk = {**request, "linear_weight": request["linear_weight"][classes]}
    for name in ("linear_bias", "weight"):
        if request.get(name) is not None:
            shrunk[name] = np.asarray(request[name])[classes]
    labels = np.asarray(request["labels"])
    if labels.dtype.kind == "f":
        shrunk["labels"] = labels[..., classes]
    else:
        ignore = _ignore_index(request)
        renumber = {old: new for new, old in enumerate(classes)}
        shrunk["labels"] = np.vectorize(lambda y: y if y == ignore else renumber[int(y)])(
            labels
        ).astype(np.int64)
    return shrunk


def keep_features(request: dict[str, Any], features: list[int]) -> dict[str, Any]:
    """The head's request with only `features` of the hidden size d."""
    return {
        **request,
        "input": request["input"][..., features],
        "linear_weight": request["linear_weight"][..., features],
    }


def shape_text(request: dict[str, Any]) -> str:
    """'3×5' (rows × classes, the logits' shape), or for the head 'input 3×4, weight 5×4'."""
    if "logits" not in request:
        return (
            f"input {'×'.join(map(str, np.shape(request['input'])))}, "
            f"weight {'×'.join(map(str, np.shape(request['linear_weight'])))}"
        )
    shape = np.shape(request["logits"])
    return "×".join(str(n) for n in shape)


# ----- the reproduction -----

_NUMPY_DTYPES = {"float64": "np.float64", "float32": "np.float32", "bfloat16": "ml_dtypes.bfloat16"}
_TORCH_DTYPES = {
    "float64": "torch.float64",
    "float32": "torch.float32",
    "bfloat16": "torch.bfloat16",
}


def _number(value: float, dtype: str) -> str:
    """The shortest text that gives `value` back in `dtype`."""
    if value == math.floor(value) and abs(value) < 1e15:
        return f"{value:.1f}"
    if dtype == "float32":
        return str(np.float32(value))
    return repr(float(value))


def _literal(array: np.ndarray, dtype: str) -> str:
    if array.ndim == 0:
        return _number(float(array), dtype)
    return "[" + ", ".join(_literal(item, dtype) for item in array) + "]"


def _int_literal(array: np.ndarray) -> str:
    return repr(np.asarray(array).astype(int).tolist())


def function_import(fn: Any) -> tuple[str, str]:
    """(an import line for `fn`, or a comment when it cannot be imported; the name to call it
    by): a torch module's class is imported and instantiated."""
    module_class = hasattr(fn, "forward") and not inspect.isfunction(fn)
    target = type(fn) if module_class else fn
    module = getattr(target, "__module__", None)
    qualname = str(getattr(target, "__qualname__", ""))
    call = f"{qualname}()" if module_class else qualname
    if not qualname.isidentifier() and "." not in qualname:
        return "# fn: the function you tested", "fn"
    if "<" in qualname:
        return "# fn: the function you tested", "fn"
    if not module or module in {"__main__", "builtins"}:
        return f"# {qualname}: the function you tested", call
    return f"from {module} import {qualname.split('.')[0]}", call


def reproduction(
    fn: Any,
    framework: str,
    request: dict[str, Any],
    dtype: str,
    passed_options: list[str],
    url: str,
) -> str:
    """A few lines of Python with the arrays inline: run `fn` on the shrunk problem and check
    its outputs with the service."""
    import_line, name = function_import(fn)
    probability = _probability(request)
    labels = request["labels"]
    lines = ["import numpy as np"]
    if framework == "torch":
        lines.append("import torch")
    elif dtype == "bfloat16":
        lines.append("import ml_dtypes")
    lines += ["from gradcheck_client import Client", import_line, ""]
    if framework == "torch":
        torch_dtype = _TORCH_DTYPES[dtype]
        lines.append(
            f"logits = torch.tensor({_literal(request['logits'], dtype)}, dtype={torch_dtype}, "
            "requires_grad=True)"
        )
        if probability:
            lines.append(
                f"labels = torch.tensor({_literal(labels, 'float64')}, dtype={torch_dtype})"
            )
        else:
            lines.append(f"labels = torch.tensor({_int_literal(labels)})")
    else:
        lines.append(
            f"logits = np.array({_literal(request['logits'], dtype)}, dtype={_NUMPY_DTYPES[dtype]})"
        )
        if probability:
            lines.append(f"labels = np.array({_literal(labels, 'float64')})")
        else:
            lines.append(f"labels = np.array({_int_literal(labels)})")
    options = _options(request, passed_options, framework, dtype)
    arguments = "".join(f", {key}={value}" for key, value in options.items())
    if framework == "torch":
        lines += [
            f"out = {name}(logits, labels{arguments})",
            "loss, gradient = out if isinstance(out, tuple) else "
            "(out, torch.autograd.grad(out.sum(), logits)[0])",
        ]
    else:
        lines.append(f"loss, gradient = {name}(logits, labels{arguments})")
    check_options = _check_options(request)
    lines += [
        f"with Client({url!r}) as service:",
        "    check = service.check(",
        "        logits,",
        "        labels,",
        '        candidate={"loss": loss, "gradient": gradient},',
        *(f"        {key}={value}," for key, value in check_options.items()),
        "    )",
        "print(check.passed, [(d.output, d.code) for d in check.diagnoses])",
    ]
    return "\n".join(lines)


def _options(
    request: dict[str, Any], passed: list[str], framework: str, dtype: str
) -> dict[str, str]:
    options: dict[str, str] = {}
    for option in passed:
        value = request.get(option)
        if option == "weight" and value is not None:
            literal = _literal(np.asarray(value), "float64")
            options[option] = (
                f"torch.tensor({literal}, dtype={_TORCH_DTYPES[dtype]})"
                if framework == "torch"
                else f"np.array({literal})"
            )
        else:
            options[option] = repr(value)
    return options


def _check_options(request: dict[str, Any]) -> dict[str, str]:
    options: dict[str, str] = {}
    for key, value in request.items():
        if key in {"logits", "input", "linear_weight", "linear_bias", "labels", "include"}:
            continue
        if key == "weight" and value is not None:
            options[key] = f"np.array({_literal(np.asarray(value), 'float64')})"
        else:
            options[key] = repr(value)
    return options


def linear_reproduction(
    fn: Any,
    framework: str,
    request: dict[str, Any],
    dtype: str,
    passed_options: list[str],
    url: str,
) -> str:
    """A few lines of Python with the arrays inline: run the LM-head function `fn` on the shrunk
    problem and check its loss and gradients with the service."""
    import_line, name = function_import(fn)
    arrays = ["input", "linear_weight"]
    if request.get("linear_bias") is not None:
        arrays.append("linear_bias")
    gradients = [f"{array}_gradient" for array in arrays]
    lines = ["import numpy as np"]
    if framework == "torch":
        lines.append("import torch")
    elif dtype == "bfloat16":
        lines.append("import ml_dtypes")
    lines += ["from gradcheck_client import Client", import_line, ""]
    for array in arrays:
        literal = _literal(np.asarray(request[array]), dtype)
        if framework == "torch":
            lines.append(
                f"{array} = torch.tensor({literal}, dtype={_TORCH_DTYPES[dtype]}, "
                "requires_grad=True)"
            )
        else:
            lines.append(f"{array} = np.array({literal}, dtype={_NUMPY_DTYPES[dtype]})")
    labels = _int_literal(np.asarray(request["labels"]))
    lines.append(
        f"labels = torch.tensor({labels})"
        if framework == "torch"
        else f"labels = np.array({labels})"
    )
    options = _options(request, passed_options, framework, dtype)
    if "linear_bias" in arrays:
        options = {"linear_bias": "linear_bias", **options}
    arguments = "".join(f", {key}={value}" for key, value in options.items())
    outputs = ", ".join(["loss", *gradients])
    if framework == "torch":
        lines += [
            f"out = {name}(input, linear_weight, labels{arguments})",
            f"{outputs} = out if isinstance(out, tuple) else "
            f"(out, *torch.autograd.grad(out.sum(), [{', '.join(arrays)}]))",
        ]
    else:
        lines.append(f"{outputs} = {name}(input, linear_weight, labels{arguments})")
    candidate = ", ".join(f'"{output}": {output}' for output in ["loss", *gradients])
    bias = ["        linear_bias=linear_bias,"] if "linear_bias" in arrays else []
    lines += [
        f"with Client({url!r}) as service:",
        "    check = service.linear_cross_entropy(",
        "        input,",
        "        linear_weight,",
        "        labels,",
        *bias,
        f"        candidate={{{candidate}}},",
        '        include=["loss"],',
        *(f"        {key}={value}," for key, value in _check_options(request).items()),
        "    ).candidate_check",
        "print(check.passed, [(d.output, d.code) for d in check.diagnoses])",
    ]
    return "\n".join(lines)
