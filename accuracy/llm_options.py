"""`make accuracy`, z-loss and soft-capping rows: worst per-row error against mpmath.

The adversarial cases (tests/numerics/adversarial.py) under (z_loss, softcap) pairs
(tests/numerics/llm_reference.py: PaLM's 1e-4, Gemma 2's 30, both, and 0.5 with a cap of 2),
for the service's numerics and, when `torch` is importable, for PyTorch float64 autograd of
Liger-Kernel's reference formula (`F.cross_entropy` of c·tanh(z/c) plus λ·logsumexp² per
non-ignored sample, its `mean` over those samples). Guarantee: 1e-13 for losses and the loss,
1e-13 for the gradient without a softcap and 1e-12 with one (the capped logits carry one
rounding, ~eps·c).
"""

from collections import defaultdict
from typing import Any

import numpy as np

from app.numerics.cross_entropy import Reduction
from app.numerics.gradcheck import Report
from tests.numerics.llm_reference import LlmCase, llm_cases, measure_llm

OUTPUTS = ("losses", "loss", "gradient")


def guarantee(output: str, softcap: float | None) -> float:
    """The per-row guarantee of an output under these options."""
    return 1e-12 if output == "gradient" and softcap is not None else 1e-13


def torch_report(item: LlmCase) -> Report:
    """The same outputs from PyTorch float64 (autograd for the gradient)."""
    import torch
    from torch.nn import functional

    case = item.case
    z = torch.tensor(case.logits, dtype=torch.float64, requires_grad=True)
    capped = z if item.softcap is None else item.softcap * torch.tanh(z / item.softcap)
    weight = None if case.weight is None else torch.tensor(case.weight, dtype=torch.float64)
    options: dict[str, Any] = {"weight": weight, "label_smoothing": case.label_smoothing}
    if case.labels is not None:
        target = torch.tensor(case.labels, dtype=torch.int64)
        options["ignore_index"] = case.ignore_index
        active = torch.tensor(case.labels != case.ignore_index, dtype=torch.float64)
    else:
        target = torch.tensor(case.probabilities, dtype=torch.float64)
        active = torch.ones(case.logits.shape[0], dtype=torch.float64)
    ce = functional.cross_entropy(capped, target, reduction=str(case.reduction), **options)
    each = functional.cross_entropy(capped, target, reduction="none", **options)
    z_each = item.z_loss * torch.logsumexp(capped, dim=1) ** 2 * active
    if case.reduction is Reduction.MEAN:
        loss = ce + z_each.sum() / active.sum()
    elif case.reduction is Reduction.SUM:
        loss = ce + z_each.sum()
    else:
        loss = each + z_each
    (gradient,) = torch.autograd.grad(loss.sum(), z)
    return Report(
        case.logits,
        losses=(each + z_each).detach().numpy(),
        loss=np.asarray(loss.detach().numpy()),
        gradient=gradient.numpy(),
    )


def run(size: str, seed: int) -> dict[str, dict[str, dict[str, float | None]]]:
    """Worst error per (z_loss, softcap) pair and output, for gradcheck and PyTorch."""
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    ours: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(OUTPUTS, 0.0))
    theirs: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(OUTPUTS, 0.0))
    for item in llm_cases(size, seed):
        key = f"z_loss={item.z_loss:g}, softcap={item.softcap}"
        for output, error in measure_llm(item).items():
            if not error <= ours[key][output]:
                ours[key][output] = error
        if have_torch:
            for output, error in measure_llm(item, torch_report(item)).items():
                if not error <= theirs[key][output]:
                    theirs[key][output] = error
    return {
        key: {
            output: {
                "gradcheck": figures[output],
                "torch": theirs[key][output] if have_torch else None,
                "guarantee": guarantee(output, None if key.endswith("None") else 1.0),
            }
            for output in OUTPUTS
        }
        for key, figures in ours.items()
    }


def section(size: str, seed: int) -> str:
    """The Markdown section of `make accuracy` for the z-loss and soft-capping options."""
    results = run(size, seed)
    lines = [
        "",
        "z-loss and soft-capping (issue 18): worst per-row relative error against mpmath "
        "(gradcheck / PyTorch float64 autograd of the same formula; guarantee in brackets).",
        "",
        "| options | " + " | ".join(OUTPUTS) + " |",
        "|---|" + "---|" * len(OUTPUTS),
    ]
    failing = []
    for key, outputs in results.items():
        cells = []
        for output in OUTPUTS:
            figures = outputs[output]
            mine, other, bound = figures["gradcheck"], figures["torch"], figures["guarantee"]
            assert mine is not None and bound is not None
            if not mine <= bound:
                failing.append(f"{key} {output}")
            torch_cell = "–" if other is None else f"{other:.1e}"
            cells.append(f"{mine:.1e} / {torch_cell} [{bound:.0e}]")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if failing:
        lines += ["", "Outside the guarantee: " + ", ".join(failing)]
    text = "\n".join(lines) + "\n"
    print(text)
    return text
