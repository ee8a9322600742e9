"""POST /v1/softmax: probabilities, log-probabilities and the Jacobian of a batch of logits."""

from typing import Any

from fastapi import APIRouter, Response

from app.api.deps import SoftmaxBody
from app.api.encoding import candidate_fields, report_fields, respond
from app.api.inputs import (
    DTYPE_NAMES,
    SoftmaxCall,
    request_entries,
    softmax_request_cost,
    to_softmax_call,
)
from app.api.offload import run_admitted
from app.api.routes import ACCEPT_PARAMETER, ERROR_RESPONSES, success_response
from app.api.schemas.compute import SoftmaxResponse

router = APIRouter(prefix="/v1", tags=["softmax"])


def softmax_fields(call: SoftmaxCall) -> dict[str, Any]:
    """Compute one softmax call and collect its response fields (422 if one is not finite)."""
    report = call.analyse()
    report.refuse_non_finite(call.include)
    fields = report_fields(report, call.include, DTYPE_NAMES[call.logits.dtype], call.layout)
    if call.candidate is not None:
        check = call.candidate.check(report, call.tolerance)
        fields["candidate_check"] = candidate_fields(check, call.layout)
    return fields


@router.post(
    "/softmax",
    summary="Softmax and its Jacobian",
    response_model=SoftmaxResponse,
    response_model_exclude_none=True,
    responses={**ERROR_RESPONSES, **success_response()},
    openapi_extra={"parameters": [ACCEPT_PARAMETER]},
)
async def softmax(received: SoftmaxBody) -> Response:
    """a = softmax(z) with a_i = exp(z_i − m) / Σ_j exp(z_j − m) (m = max z), log a, and the
    Jacobian ∂a_i/∂z_j = a_i(δ_ij − a_j) of every sample; with `numeric_jacobian`, a numeric
    Jacobian and its agreement with the analytic one."""
    body, context = received.body, received.context
    entries = request_entries(body.logits, body.include, body.dim)
    cost = softmax_request_cost(body, context.accept)

    def work() -> Response:
        call = to_softmax_call(
            body, context.settings, overflow=received.overflow, deadline=context.deadline
        )
        return respond(softmax_fields(call), context.accept, context.deadline)

    return await run_admitted(entries, cost, context, work)
