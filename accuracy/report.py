"""`make accuracy`: worst per-row error of every output on the adversarial cases, vs mpmath.

    python -m accuracy.report [--size full|quick] [--seed N]

Runs tests/numerics/adversarial.py's cases through the service's numerics and, when `torch`
is importable, through PyTorch (F.softmax, F.log_softmax, 1 − softmax, autograd Jacobian,
F.cross_entropy and its autograd gradient, double backward for the Hessian blocks and
Hessian-vector products, all float64); prints a Markdown table and writes it to
accuracy/results.md, with the raw figures in accuracy/results.json. The Hessian rows
(accuracy/hessian.py) are held to 1e-13 per C×C block and the Hessian-vector products to 1e-12
per row; every other output to 1e-13. The LM head (accuracy/linear.py: linear cross-entropy,
with and without cancellation in the matmul) holds its logits to the matmul's error bound.
"""

import argparse
import json
import math
import platform
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accuracy import hessian, kdim, linear, llm_options
from app.numerics.gradcheck import Report
from app.numerics.softmax import Softmax
from tests.numerics.adversarial import (
    MAX_JACOBIAN_CLASSES,
    Case,
    cases,
    measure,
)
from tests.numerics.adversarial import OUTPUTS as FIRST_ORDER_OUTPUTS

HERE = Path(__file__).parent
GUARANTEE = 1e-13
OUTPUTS = (*FIRST_ORDER_OUTPUTS, *hessian.HESSIAN_OUTPUTS)
GUARANTEES = dict.fromkeys(FIRST_ORDER_OUTPUTS, GUARANTEE) | hessian.GUARANTEES


def torch_version() -> str | None:
    """PyTorch's version, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return str(torch.__version__)


def torch_report(case: Case) -> Report:
    """The same outputs from PyTorch in float64 (autograd for the derivatives)."""
    import torch
    from torch.nn import functional

    z = torch.tensor(case.logits, dtype=torch.float64, requires_grad=True)
    probabilities = torch.softmax(z, dim=1)
    log_probabilities = torch.log_softmax(z, dim=1)
    jacobian = None
    if case.logits.shape[1] <= MAX_JACOBIAN_CLASSES:
        row_jacobian = torch.func.jacrev(lambda row: torch.softmax(row, dim=-1))
        jacobian = torch.func.vmap(row_jacobian)(z.detach()).numpy()
    weight = None if case.weight is None else torch.tensor(case.weight, dtype=torch.float64)
    if case.labels is not None:
        target = torch.tensor(case.labels, dtype=torch.int64)
    else:
        target = torch.tensor(case.probabilities, dtype=torch.float64)
    options: dict[str, Any] = {
        "weight": weight,
        "ignore_index": case.ignore_index,
        "label_smoothing": case.label_smoothing,
    }
    losses = functional.cross_entropy(z, target, reduction="none", **options)
    loss = functional.cross_entropy(z, target, reduction=str(case.reduction), **options)
    (gradient,) = torch.autograd.grad(loss.sum(), z)
    detached = probabilities.detach().numpy()
    softmax = Softmax(
        detached,
        log_probabilities.detach().numpy(),
        1 - detached,
        np.argmax(case.logits, axis=1),
        np.zeros(case.logits.shape[0]),
    )
    return Report(
        case.logits,
        kept_softmax=softmax,
        losses=losses.detach().numpy(),
        loss=np.asarray(loss.detach().numpy()),
        gradient=gradient.numpy(),
        jacobian=jacobian,
    )


@dataclass
class Worst:
    """The largest error seen for one output, and the case it came from."""

    error: float = 0.0
    where: str = ""

    def update(self, error: float, case: Case) -> None:
        if not error <= self.error:  # NaN counts as worst
            self.error, self.where = error, f"{case.family}; {case.options()}; {case.logits.shape}"


def _format(error: float | None) -> str:
    if error is None:
        return "–"
    if math.isnan(error) or math.isinf(error):
        return "NaN/inf"
    return f"{error:.1e}"


def run(size: str, seed: int) -> dict[str, Any]:
    """Measure every case; the aggregated figures as a JSON-able dict."""
    version = torch_version()
    ours: dict[str, Worst] = defaultdict(Worst)
    theirs: dict[str, Worst] = defaultdict(Worst)
    by_family: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    by_family_torch: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    start = time.perf_counter()
    all_cases = cases(size, seed)  # type: ignore[arg-type]
    rows = 0
    for case in all_cases:
        rows += case.logits.shape[0]
        mine = measure(case)
        for output, error in mine.errors.items():
            ours[output].update(error, case)
            by_family[case.family][output].append(error)
        for output, error in hessian.worst(hessian.measure(case)).items():
            ours[output].update(error, case)
            by_family[case.family][output].append(error)
        if version is not None:
            other = measure(case, torch_report(case))
            second = hessian.worst(hessian.measure(case, hessian.torch_outputs(case)))
            for output, error in (other.errors | second).items():
                theirs[output].update(error, case)
                by_family_torch[case.family][output].append(error)
    elapsed = time.perf_counter() - start
    return {
        "size": size,
        "seed": seed,
        "cases": len(all_cases),
        "rows": rows,
        "seconds": round(elapsed, 1),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "torch": version,
        "outputs": {
            output: {
                "gradcheck": ours[output].error,
                "gradcheck_where": ours[output].where,
                "torch": theirs[output].error if version else None,
                "torch_where": theirs[output].where if version else None,
            }
            for output in OUTPUTS
        },
        "families": {
            family: {
                output: {
                    "gradcheck": max(errors),
                    "torch": max(by_family_torch[family][output]) if version else None,
                }
                for output, errors in outputs.items()
            }
            for family, outputs in by_family.items()
        },
    }


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    version = results["torch"]
    torch_column = f"PyTorch {version}" if version else "PyTorch (not installed)"
    lines = [
        f"Worst per-row relative error over {results['cases']} adversarial cases "
        f"({results['rows']} rows, size `{results['size']}`, seed {results['seed']}) against "
        f"mpmath at 60+ digits; numpy {results['numpy']}, Python {results['python']}.",
        "",
        "",
        "hessian: the C×C block (Σq/D)(diag a − a aᵀ) of each sample (C ≤ 1000); hvp: H v with "
        "v ~ N(0, 1); hvp_near_constant: v = 3 + 1e-9·N(0, 1), where v − ⟨a, v⟩ cancels 9 "
        "digits. Guarantee: 1e-12 for the HVPs, 1e-13 for everything else.",
        "",
        f"| output | gradcheck | {torch_column} | gradcheck's worst case |",
        "|---|---|---|---|",
    ]
    for output, figures in results["outputs"].items():
        lines.append(
            f"| {output} | {_format(figures['gradcheck'])} | {_format(figures['torch'])} "
            f"| {figures['gradcheck_where']} |"
        )
    lines += [
        "",
        "By family (gradcheck / PyTorch):",
        "",
        "| family | " + " | ".join(OUTPUTS) + " |",
        "|---|" + "---|" * len(OUTPUTS),
    ]
    for family, outputs in results["families"].items():
        cells = []
        for output in OUTPUTS:
            figures = outputs.get(output)
            if figures is None:
                cells.append("–")
            elif version:
                cells.append(f"{_format(figures['gradcheck'])} / {_format(figures['torch'])}")
            else:
                cells.append(_format(figures["gradcheck"]))
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["quick", "full"], default="full")
    parser.add_argument("--seed", type=int, default=2026)
    arguments = parser.parse_args()
    results = run(arguments.size, arguments.seed)
    table = (
        markdown(results)
        + llm_options.section(arguments.size, arguments.seed)
        + kdim.section(arguments.size, arguments.seed)
        + linear.section(arguments.size, arguments.seed)
    )
    print(table)
    (HERE / "results.md").write_text(table)
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    failing = []
    for output, figures in results["outputs"].items():
        error, guarantee = figures["gradcheck"], GUARANTEES[output]
        print(f"worst row error of gradcheck, {output}: {error:.2e} (guarantee {guarantee:.0e})")
        if not error <= guarantee:
            failing.append(output)
    print(f"{results['seconds']} s")
    if failing:
        raise SystemExit(f"outside the guarantee: {', '.join(failing)}")


if __name__ == "__main__":
    main()
