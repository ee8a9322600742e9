"""`make accuracy`, K-dimensional rows: the adversarial cases sent as K-dimensional inputs.

Each case's N × C logits are sent as one sample of shape (1, C, N) (torch's segmentation layout:
the class axis at 1, N positions after it) with labels (1, N), or probabilities (1, C, N),
through the request parsing of the API (`app.api.inputs.to_loss_call`: nested lists, the class
axis moved last, positions flattened). The reported loss, losses and gradient are measured per
position against mpmath exactly as the (N, C) rows are: K-dimensional inputs carry the same
guarantee, and these rows show it.
"""

from collections import defaultdict
from typing import Any

import numpy as np

from app.api.inputs import to_loss_call
from app.api.schemas.compute import CrossEntropyRequest
from app.core.config import Settings
from tests.numerics.adversarial import Case, cases, measure

OUTPUTS = ("losses", "loss", "gradient")
GUARANTEE = 1e-13


def as_k_dimensional(case: Case) -> CrossEntropyRequest:
    """The case as a (1, C, N) request (labels (1, N) or probabilities (1, C, N))."""
    logits = case.logits.T[None]
    if case.labels is not None:
        labels: Any = case.labels[None].tolist()
    else:
        assert case.probabilities is not None
        labels = case.probabilities.T[None].tolist()
    body: dict[str, Any] = {
        "logits": logits.tolist(),
        "labels": labels,
        "ignore_index": case.ignore_index,
        "reduction": str(case.reduction),
        "label_smoothing": case.label_smoothing,
        "include": ["loss", "gradient"],
    }
    if case.weight is not None:
        body["weight"] = case.weight.tolist()
    return CrossEntropyRequest.model_validate(body)


def run(size: str, seed: int) -> dict[str, float]:
    """The worst per-position error of each output over every case."""
    settings = Settings(max_batch_size=1 << 30, max_output_entries=1 << 40)
    worst: dict[str, float] = defaultdict(float)
    for case in cases(size, seed):  # type: ignore[arg-type]
        if not np.isfinite(case.logits).any(axis=1).all():
            continue
        call = to_loss_call(as_k_dimensional(case), settings)
        assert call.layout.shape == (1, case.logits.shape[1], case.logits.shape[0])
        report = call.run().report
        for output, error in measure(case, report).errors.items():
            if output in OUTPUTS and not error <= worst[output]:
                worst[output] = error
    return dict(worst)


def section(size: str, seed: int) -> str:
    """The markdown of the K-dimensional rows."""
    worst = run(size, seed)
    lines = [
        "",
        "## K-dimensional inputs",
        "",
        "The same cases sent as one sample of shape (1, C, N) with labels (1, N) or "
        "probabilities (1, C, N), through the API's request parsing "
        "(`accuracy/kdim.py`). Worst per-position error:",
        "",
        "| output | gradcheck | guarantee |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {worst[name]:.1e} | {GUARANTEE:.0e} |" for name in OUTPUTS]
    failing = [name for name in OUTPUTS if not worst[name] <= GUARANTEE]
    if failing:
        raise SystemExit(f"K-dimensional inputs outside the guarantee: {', '.join(failing)}")
    return "\n".join(lines) + "\n"
