"""POST /v1/linear-cross-entropy: the LM head fused with its loss, its three gradients, their
numeric check along random directions, and a caller's own gradients checked and diagnosed."""

from typing import Any

from fastapi import APIRouter, Response

from app.api.deps import LinearCrossEntropyBody, Received
from app.api.encoding import (
    candidate_fields,
    check_fields,
    directional_fields,
    linear_report_fields,
    respond,
)
from app.api.inputs import (
    LinearAnalysis,
    linear_request_cost,
    linear_request_entries,
    to_linear_call,
)
from app.api.offload import run_admitted
from app.api.routes import ACCEPT_PARAMETER, ERROR_RESPONSES, success_response
from app.api.schemas.compute import LinearCrossEntropyRequest, LinearCrossEntropyResponse

router = APIRouter(prefix="/v1", tags=["linear-cross-entropy"])


def linear_fields(analysis: LinearAnalysis, include: frozenset[str], dtype: str) -> dict[str, Any]:
    """The response fields of one analysis."""
    fields = linear_report_fields(analysis.report, include, dtype)
    if analysis.directional is not None:
        fields["gradient_check"] = check_fields(analysis.directional.check, lambda index: index)
        fields["directional_derivatives"] = directional_fields(analysis.directional)
    if analysis.candidate is not None:
        fields["candidate_check"] = candidate_fields(analysis.candidate, None)
    return fields


@router.post(
    "/linear-cross-entropy",
    summary="The LM head fused with its loss, and a check of its three gradients",
    response_model=LinearCrossEntropyResponse,
    response_model_exclude_none=True,
    responses={**ERROR_RESPONSES, **success_response()},
    openapi_extra={"parameters": [ACCEPT_PARAMETER]},
)
async def linear_cross_entropy(received: LinearCrossEntropyBody) -> Response:
    """torch 2.13's `F.linear_cross_entropy`: logits z = x·Wᵀ + b (by blocks of rows, never
    all at once) and their cross-entropy with every option of `F.cross_entropy`, plus z_loss,
    softcap, causal_shift and denominator. Returns the loss and dL/dinput, dL/dlinear_bias
    (dL/dlinear_weight, the logits, their gradient and the probabilities on request), checks
    the three gradients along random directions (`numeric_gradient` in include), and with
    `candidate` checks your own loss and gradients and names the mistakes of chunked kernels."""
    body, context = received.body, received.context
    entries = linear_request_entries(body)
    cost = linear_request_cost(body, context.accept)
    return await run_admitted(entries, cost, context, lambda: _alone(received))


def _alone(received: Received[LinearCrossEntropyRequest]) -> Response:
    body, context = received.body, received.context
    call = to_linear_call(
        body, context.settings, overflow=received.overflow, deadline=context.deadline
    )
    fields = linear_fields(call.analyse(), frozenset(body.include), body.dtype)
    return respond(fields, context.accept, context.deadline)
