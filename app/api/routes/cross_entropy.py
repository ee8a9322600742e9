"""POST /v1/cross-entropy: loss, analytic and numeric gradient, Jacobian and their agreement."""

from typing import Any

from fastapi import APIRouter, Response

from app.api.deps import CrossEntropyBody, Received
from app.api.encoding import (
    candidate_fields,
    check_fields,
    directional_fields,
    report_fields,
    respond,
)
from app.api.inputs import (
    DTYPE_NAMES,
    LossCall,
    cross_entropy_request_cost,
    request_entries,
    to_loss_call,
)
from app.api.offload import run_admitted, runs_inline
from app.api.routes import ACCEPT_PARAMETER, ERROR_RESPONSES, success_response
from app.api.schemas.compute import CrossEntropyRequest, CrossEntropyResponse
from app.numerics.gradcheck import Report

router = APIRouter(prefix="/v1", tags=["cross-entropy"])


def cross_entropy_fields(call: LossCall, report: Report) -> dict[str, Any]:
    """The response fields of a cross-entropy report (422 if an output is not finite)."""
    report.refuse_non_finite(call.include)
    fields = report_fields(
        report, call.include, DTYPE_NAMES[call.problem.logits.dtype], call.layout
    )
    fields["reduction"] = str(call.problem.reduction)
    directional = call.directional(report)
    if directional is not None:
        fields["gradient_check"] = check_fields(directional.check, lambda index: index)
        fields["directional_derivatives"] = directional_fields(directional)
    if call.candidate is not None:
        check = call.candidate.check(report, call.tolerance)
        fields["candidate_check"] = candidate_fields(check, call.layout)
    return fields


@router.post(
    "/cross-entropy",
    summary="Cross-entropy loss and a gradient check",
    response_model=CrossEntropyResponse,
    response_model_exclude_none=True,
    responses={**ERROR_RESPONSES, **success_response()},
    openapi_extra={"parameters": [ACCEPT_PARAMETER]},
)
async def cross_entropy(received: CrossEntropyBody) -> Response:
    """PyTorch `F.cross_entropy` (weight, ignore_index, label_smoothing, reduction, probability
    targets) with effective targets q: loss_n = −Σ_c q_nc log a_nc, and its gradient
    ∂loss_n/∂z_nj = a_nj·Σ_c q_nc − q_nj (a − y only when the target sums to 1), divided by the
    reduction's D; checked against a numeric gradient with |a − n| ≤ atol + rtol·|n|. With
    `candidate`, your own outputs are checked against the exact reference and a wrong one is
    explained by the mistake that produces it (`candidate_check`)."""
    body, context = received.body, received.context
    entries = request_entries(body.logits, body.include)
    if not runs_inline(entries, context):  # validated and computed off the event loop
        cost = cross_entropy_request_cost(body, context.settings, context.accept)
        return await run_admitted(entries, cost, context, lambda: _alone(received))
    call = _call(received)
    report = await context.coalescer.analyse(call) if call.coalescable else call.analyse()
    return respond(cross_entropy_fields(call, report), context.accept, context.deadline)


def _call(received: Received[CrossEntropyRequest]) -> LossCall:
    context = received.context
    return to_loss_call(
        received.body, context.settings, overflow=received.overflow, deadline=context.deadline
    )


def _alone(received: Received[CrossEntropyRequest]) -> Response:
    call = _call(received)
    context = received.context
    return respond(cross_entropy_fields(call, call.analyse()), context.accept, context.deadline)
