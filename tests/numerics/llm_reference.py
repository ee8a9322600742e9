"""Exact (mpmath, 60 digits) z-loss and soft-capping outputs, and cases that exercise them.

Written from the definitions (Liger-Kernel's reference: `F.cross_entropy` of the capped logits
plus λ·ℓ² per non-ignored sample, its `mean` over the non-ignored samples), not from the
service's formulas:

    y = c·tanh(z / c)       ℓ_n = log Σ_c exp y_nc       loss_n = −Σ_c q_nc·(y_nc − ℓ_n) + λ·ℓ_n²
    L = Σ_n CE_n / D + Σ_n λ·ℓ_n² / D_z   (mean)         L = Σ_n loss_n   (sum; none: per sample)
    ∂L/∂z_nj = [(a_nj·S_n − q_nj) / D_n + 2λ·ℓ_n·a_nj / D_z,n] · (1 − tanh²(z_nj / c))
"""

from dataclasses import dataclass, replace

import mpmath as mp
import numpy as np

from app.numerics.cross_entropy import Reduction
from app.numerics.gradcheck import LossProblem, Output, Report, analyse_problem
from tests.numerics.adversarial import Case, cases, exact_targets, row_error

DIGITS = 60
Row = list[mp.mpf]


@dataclass(frozen=True)
class LlmCase:
    """An adversarial case with a z-loss and a soft-capping."""

    case: Case
    z_loss: float = 0.0
    softcap: float | None = None

    def problem(self) -> LossProblem:
        c = self.case
        return LossProblem(c.logits, c.targets(), c.reduction, self.z_loss, self.softcap)

    def name(self) -> str:
        return (
            f"{self.case.family}; {self.case.options()}; z_loss={self.z_loss:g}; "
            f"softcap={self.softcap}; {self.case.logits.shape}"
        )


@dataclass
class LlmExact:
    """Per-sample losses, the reduced loss (None for `none`) and the gradient by the raw z."""

    losses: Row
    loss: mp.mpf | None
    gradient: list[Row]


def exact_llm(item: LlmCase) -> LlmExact:
    """Every output of `item` at 60 digits."""
    case = item.case
    q, divisor = exact_targets(case)
    num_samples = case.logits.shape[0]
    active = [True] * num_samples
    if case.labels is not None:
        active = [int(label) != case.ignore_index for label in case.labels]
    with mp.workdps(DIGITS):
        lam = mp.mpf(item.z_loss)
        z_divisor = mp.mpf(sum(active)) if case.reduction is Reduction.MEAN else mp.mpf(1)
        cap = None if item.softcap is None else mp.mpf(item.softcap)
        losses: Row = []
        ce_total: Row = []
        z_total: Row = []
        gradient: list[Row] = []
        for n, row in enumerate(case.logits):
            raw = [mp.mpf(float(v)) if np.isfinite(v) else mp.ninf for v in row]
            y = [v if (cap is None or v == mp.ninf) else cap * mp.tanh(v / cap) for v in raw]
            top = max(v for v in y if v != mp.ninf)
            e = [mp.mpf(0) if v == mp.ninf else mp.exp(v - top) for v in y]
            total = mp.fsum(e)
            lse = top + mp.log(total)
            a = [v / total for v in e]
            ce = mp.fsum(-q_c * (y_c - lse) for q_c, y_c in zip(q[n], y, strict=True) if q_c != 0)
            z_term = lam * lse * lse if active[n] else mp.mpf(0)
            losses.append(ce + z_term)
            ce_total.append(ce)
            z_total.append(z_term)
            s = mp.fsum(q[n])
            kappa = 2 * lam * lse / z_divisor if active[n] else mp.mpf(0)
            g = []
            for j, (a_j, q_j) in enumerate(zip(a, q[n], strict=True)):
                value = (a_j * s - q_j) / divisor + kappa * a_j
                if cap is not None and raw[j] != mp.ninf:
                    value *= 1 / mp.cosh(raw[j] / cap) ** 2
                g.append(value)
            gradient.append(g)
        loss = None
        if case.reduction is not Reduction.NONE:
            loss = mp.fsum(ce_total) / divisor + mp.fsum(z_total) / z_divisor
        return LlmExact(losses, loss, gradient)


OPTIONS = ((1e-4, None), (0.0, 30.0), (1e-4, 30.0), (0.5, 2.0))
"""(z_loss, softcap): PaLM's 1e-4, Gemma 2's 30, both, and a strong pair that caps hard."""
EXCLUDED_FAMILIES = frozenset({"huge C", "huge C, saturated", "huge C, near-uniform"})
"""Too slow for 60-digit references of every option (the first-order tests cover them)."""


def llm_cases(size: str = "quick", seed: int = 2026) -> list[LlmCase]:
    """The adversarial cases (tests/numerics/adversarial.py) under rotating (z_loss, softcap)
    pairs. Cases whose targets equal the prediction are left out under a softcap: those
    targets were computed from the uncapped logits, and nothing cancels any more."""
    result = []
    for index, case in enumerate(cases(size, seed)):  # type: ignore[arg-type]
        if case.family in EXCLUDED_FAMILIES:
            continue
        for j in (0, 1) if size == "quick" else range(len(OPTIONS)):
            z_loss, softcap = OPTIONS[(index + j) % len(OPTIONS)]
            if softcap is not None and _targets_near_prediction(case):
                continue
            result.append(LlmCase(case, z_loss, softcap))
    return result


def _targets_near_prediction(case: Case) -> bool:
    """Probability targets within 1e-9 of the softmax of the raw logits, or of a rescaling
    of it (`prediction_options`): under a softcap the gradient of such rows cancels against
    the one rounding of c·tanh(z/c) (see the guarantee's scope in cross_entropy)."""
    if case.probabilities is None:
        return False
    z = case.logits
    e = np.exp(z - z.max(axis=1, keepdims=True))
    a = e / e.sum(axis=1, keepdims=True)
    q = case.targets().q
    with np.errstate(over="ignore", invalid="ignore"):
        ratio = np.where(a > 0, q / np.where(a > 0, a, 1), 1)
    return bool(np.any(np.ptp(ratio, axis=1) < 1e-6 * np.max(ratio, axis=1)))


def measure_llm(item: LlmCase, report: Report | None = None) -> dict[str, float]:
    """Worst per-row error of losses, loss and gradient (and the reference's gradient rows)."""
    if report is None:
        report = analyse_problem(item.problem(), frozenset({Output.GRADIENT}))
    reference = exact_llm(item)
    assert report.losses is not None and report.gradient is not None
    errors = {
        "losses": max(
            row_error(np.asarray([report.losses[n]]), [v]) for n, v in enumerate(reference.losses)
        ),
        "gradient": max(row_error(report.gradient[n], g) for n, g in enumerate(reference.gradient)),
    }
    if reference.loss is not None and report.loss is not None:
        errors["loss"] = row_error(np.asarray(report.loss).reshape(1), [reference.loss])
    return errors


def with_options(case: Case, **changes: object) -> Case:
    """`case` with some fields replaced."""
    return replace(case, **changes)  # type: ignore[arg-type]
