"""POST /v1/cross-entropy: loss, analytic and numeric gradient, Jacobian and their agreement."""

from typing import Any

from fastapi import APIRouter, Request, Response

from app.api.coalesce import Coalescer
from app.api.deps import CrossEntropyBody
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
from app.api.links import docs_url
from app.api.offload import compute
from app.api.routes import ACCEPT_PARAMETER, ERROR_RESPONSES, success_response
from app.api.schemas.compute import CrossEntropyRequest, CrossEntropyResponse
from app.core.config import Settings
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
async def cross_entropy(body: CrossEntropyBody, request: Request) -> Response:
    """PyTorch `F.cross_entropy` (weight, ignore_index, label_smoothing, reduction, probability
    targets) with effective targets q: loss_n = −Σ_c q_nc log a_nc, and its gradient
    ∂loss_n/∂z_nj = a_nj·Σ_c q_nc − q_nj (a − y only when the target sums to 1), divided by the
    reduction's D; checked against a numeric gradient with |a − n| ≤ atol + rtol·|n|. With
    `candidate`, your own outputs are checked against the exact reference and a wrong one is
    explained by the mistake that produces it (`candidate_check`)."""
    settings: Settings = request.app.state.settings
    accept = request.headers.get("accept")
    entries = request_entries(body.logits, body.include)
    if entries > settings.inline_max_entries:  # validated and computed off the event loop
        cost = cross_entropy_request_cost(body, settings, accept)
        links = docs_url(request)
        return await compute(entries, cost, request, lambda: _alone(body, settings, links, accept))
    call = to_loss_call(body, settings, docs_url(request))
    coalescer: Coalescer = request.app.state.coalescer
    report = await coalescer.analyse(call) if call.coalescable else call.analyse()
    return respond(cross_entropy_fields(call, report), accept)


def _alone(
    body: CrossEntropyRequest, settings: Settings, links: str | None, accept: str | None
) -> Response:
    call = to_loss_call(body, settings, links)
    return respond(cross_entropy_fields(call, call.analyse()), accept)
