"""One entry into the numerics per problem kind: a task (the problem and everything a request
asks of it) in, its result out, with nothing left to compute.

    run_softmax(SoftmaxTask)                 → SoftmaxResult
    run_cross_entropy(LossTask)              → LossResult
    run_cross_entropy_batch([LossTask, …])   → [LossResult or the exception of that task, …]
    run_linear(LinearTask)                   → LinearResult   (the LM head fused with its loss)

A result is plain data: the report (outputs, numeric derivatives and their checks, second
order), the directional check of the gradient when directions replace the element-wise one, and
the check of the caller's own outputs with the mistakes that explain them. The batch entry is
the same computation on stacked problems (`app.numerics.batch`), used by the coalescer: each task
gets exactly the result it gets alone.

A new problem kind joins with its task, its result and its `run_…`, composed from the modules
below this one.
"""

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from app.numerics.batch import analyse_cross_entropy_batch
from app.numerics.candidate import CandidateCheck, check_candidate
from app.numerics.cross_entropy import Reduction
from app.numerics.diagnose import ProblemInputs
from app.numerics.directional import DirectionalDerivatives, directional_check
from app.numerics.gradcheck import (
    SECOND_ORDER,
    LossProblem,
    NumericOptions,
    Output,
    ReferenceOutputs,
    Report,
    Tolerance,
    analyse_problem,
    analyse_softmax,
)
from app.numerics.linear import (
    LinearOutput,
    LinearProblem,
    LinearReport,
    analyse_linear,
    linear_directional_check,
)
from app.numerics.linear_candidate import check_linear_candidate
from app.numerics.softmax import FloatArray

NO_LLM_DIAGNOSES = (
    "no mistake is named with z_loss or softcap: the known mistakes are modelled without them, "
    "so read the worst entries and max_ulp_error (a gradient without the soft-cap's chain "
    "rule, or without the z-loss term, shows there)"
)


def names_mistakes(z_loss: float, softcap: float | None) -> bool:
    """Whether a wrong candidate's mistake is named: the known mistakes are modelled without
    z-loss and soft-capping (NO_LLM_DIAGNOSES)."""
    return not z_loss and softcap is None


def candidate_forms_softmax(outputs: Collection[str], z_loss: float, softcap: float | None) -> bool:
    """Whether checking a candidate of `outputs` may form the softmax: for its probabilities,
    log-probabilities, Jacobian or Hessian, or to name the mistake of a wrong one."""
    return not set(outputs) <= {"loss", "losses", "gradient"} or names_mistakes(z_loss, softcap)


@dataclass(frozen=True)
class Candidate:
    """A caller's own outputs, to check against the exact reference (float64), and what naming
    their mistakes needs."""

    outputs: Mapping[str, object]
    """Output name → the caller's value, in the rows layout (R, C) of the problem where its
    shape allowed the move; anything else is left for the check to describe."""
    inputs: ProblemInputs
    """The raw problem, which the diagnoses recompute under each mistaken assumption."""
    docs_url: str | None
    exact_problem: LossProblem | None = None
    """The cross-entropy problem in float64 when the task's precision is lower (None for a
    softmax task, whose float64 logits are `inputs.logits`)."""


@dataclass(frozen=True)
class SoftmaxTask:
    """Softmax of logits (R, C): the outputs `include` asks for, how numeric derivatives are
    taken and judged, and a candidate to check."""

    logits: FloatArray
    include: frozenset[Output]
    numeric: NumericOptions = field(default_factory=NumericOptions)
    tolerance: Tolerance = field(default_factory=Tolerance)
    candidate: Candidate | None = None


@dataclass(frozen=True)
class SoftmaxResult:
    """Everything a softmax task asked for."""

    include: frozenset[Output]
    report: Report
    """Its softmax is `report.kept_softmax`."""
    candidate_check: CandidateCheck | None = None


@dataclass(frozen=True)
class LossTask:
    """A cross-entropy problem and what is asked of it."""

    problem: LossProblem
    include: frozenset[Output]
    numeric: NumericOptions = field(default_factory=NumericOptions)
    tolerance: Tolerance = field(default_factory=Tolerance)
    candidate: Candidate | None = None
    directions: int | None = None
    """k: the gradient is checked along k random directions instead of element by element."""
    vector: FloatArray | None = None
    """v (R, C) for the Hessian-vector product."""

    @property
    def analysed(self) -> frozenset[Output]:
        """What the analysis computes: `include`, less the element-wise numeric gradient when
        directions replace it."""
        if self.directions is None:
            return self.include
        return self.include - {Output.NUMERIC_GRADIENT}

    @property
    def stackable(self) -> bool:
        """Whether the task can share a stacked batch: second-order outputs are computed for
        one problem at a time."""
        return not self.include & SECOND_ORDER

    def batch_key(self) -> tuple[object, ...]:
        """Tasks with equal keys can be computed in one stacked batch."""
        problem = self.problem
        return (
            self.analysed,
            self.numeric,
            self.tolerance,
            problem.logits.dtype,
            problem.logits.shape[1],
            problem.z_loss,
            problem.softcap,
        )


@dataclass(frozen=True)
class LossResult:
    """Everything a cross-entropy task asked for."""

    include: frozenset[Output]
    reduction: Reduction
    report: Report
    """Its softmax is `report.kept_softmax` whenever probabilities or log-probabilities are
    asked for (the analysis keeps it then)."""
    directional: DirectionalDerivatives | None = None
    candidate_check: CandidateCheck | None = None


def run_softmax(task: SoftmaxTask) -> SoftmaxResult:
    """The softmax task's report and candidate check (raises InvalidProblem naming the first
    output asked for that is not finite)."""
    report = analyse_softmax(task.logits, task.include, task.numeric, task.tolerance)
    report.refuse_non_finite(task.include)
    candidate = task.candidate
    check = None
    if candidate is not None:
        check = _check_candidate(candidate, report, task.tolerance, None)
    return SoftmaxResult(task.include, report, check)


def run_cross_entropy(task: LossTask) -> LossResult:
    """The cross-entropy task's report, directional check and candidate check (raises
    InvalidProblem, DeadlinePassed)."""
    report = analyse_problem(task.problem, task.analysed, task.numeric, task.tolerance, task.vector)
    return _finish(task, report)


def run_cross_entropy_batch(tasks: Sequence[LossTask]) -> list[LossResult | Exception]:
    """`run_cross_entropy` of tasks of one `batch_key`, their analyses stacked: each task's
    result, or the exception it alone raises. The batch serves several requests, so no one
    request's deadline stops its analysis (each task's own still applies to its own checks)."""
    first = tasks[0]
    numeric = NumericOptions(first.numeric.method, first.numeric.step)  # deadline NEVER
    reports = analyse_cross_entropy_batch(
        [task.problem for task in tasks], first.analysed, numeric, first.tolerance
    )
    results: list[LossResult | Exception] = []
    for task, report in zip(tasks, reports, strict=True):
        if isinstance(report, Exception):
            results.append(report)
            continue
        try:
            results.append(_finish(task, report))
        except Exception as error:
            results.append(error)
    return results


def _finish(task: LossTask, report: Report) -> LossResult:
    """The checks that follow the analysis of one task."""
    report.refuse_non_finite(task.include)
    directional = None
    if task.directions is not None:
        assert report.gradient is not None
        directional = directional_check(
            task.problem, report.gradient, task.directions, task.numeric, task.tolerance
        )
    candidate = task.candidate
    check = None
    if candidate is not None:
        check = _check_candidate(candidate, report, task.tolerance, task.problem)
    return LossResult(task.include, task.problem.reduction, report, directional, check)


def _check_candidate(
    candidate: Candidate, report: Report, tolerance: Tolerance, problem: LossProblem | None
) -> CandidateCheck:
    """The candidate against `report`'s outputs, or against the float64 problem's when the
    report is of a lower precision (the candidate is always checked against the exact
    reference)."""
    reference = report
    if report.logits.dtype != np.float64:
        exact = candidate.exact_problem
        if exact is None:
            reference = analyse_softmax(candidate.inputs.logits, frozenset())
        else:
            reference = analyse_problem(exact, frozenset())
    loss = candidate.exact_problem or problem
    targets = None if loss is None or loss.z_loss else loss.targets
    llm_options = loss is not None and not names_mistakes(loss.z_loss, loss.softcap)
    check = check_candidate(
        candidate.outputs,
        ReferenceOutputs(reference, targets),
        atol=tolerance.atol,
        rtol=tolerance.rtol,
        inputs=None if llm_options else candidate.inputs,
        softmax=reference.kept_softmax,
        docs_url=candidate.docs_url,
    )
    if llm_options and not check.passed:
        check.notes.append(NO_LLM_DIAGNOSES)
    return check


@dataclass(frozen=True)
class LinearTask:
    """A linear cross-entropy problem (the LM head and its loss) and what is asked of it."""

    problem: LinearProblem
    include: frozenset[LinearOutput]
    numeric: NumericOptions = field(default_factory=NumericOptions)
    tolerance: Tolerance = field(default_factory=Tolerance)
    directions: int | None = None
    """k: check the three gradients along k random directions of (input, weight, bias)."""
    candidate: Mapping[str, object] | None = None
    """The caller's own outputs (loss, losses, input_gradient, linear_weight_gradient,
    linear_bias_gradient) in the problem's own shapes."""
    docs_url: str | None = None


@dataclass(frozen=True)
class LinearResult:
    """Everything a linear cross-entropy task asked for."""

    include: frozenset[LinearOutput]
    report: LinearReport
    directional: DirectionalDerivatives | None = None
    candidate_check: CandidateCheck | None = None


def run_linear(task: LinearTask) -> LinearResult:
    """The LM head's report (the weight gradient too when the numeric check needs it), its
    numeric check along directions, and the candidate's check against the float64 reference
    with its diagnoses, computed in the reference's own pass (raises InvalidProblem,
    DeadlinePassed)."""
    outputs = task.include
    if task.directions is not None:
        outputs |= {LinearOutput.LINEAR_WEIGHT_GRADIENT}
    deadline = task.numeric.deadline
    check = None
    if task.candidate is not None:
        checked = check_linear_candidate(
            replace(task.problem, dtype=np.float64),
            task.candidate,
            atol=task.tolerance.atol,
            rtol=task.tolerance.rtol,
            include=outputs,
            docs_url=task.docs_url,
            deadline=deadline,
        )
        check = checked.check
        report = checked.report
        if task.problem.dtype is not np.float64:
            report = analyse_linear(task.problem, outputs, deadline=deadline)
    else:
        report = analyse_linear(task.problem, outputs, deadline=deadline)
    report.refuse_non_finite(task.include)
    directional = None
    if task.directions is not None:
        directional = linear_directional_check(
            report, task.directions, task.numeric, task.tolerance
        )
    return LinearResult(task.include, report, directional, check)
