"""POST /v1/linear-cross-entropy: the LM head fused with its loss, its three gradients, their
numeric check along random directions, and a caller's own gradients checked and diagnosed."""

from fastapi import APIRouter, Response

from app.api.admission import linear_request_cost, linear_request_entries
from app.api.deps import LinearCrossEntropyBody
from app.api.encoding import linear_fields, respond
from app.api.inputs import linear_values, to_linear_call
from app.api.offload import run_admitted
from app.api.routes import ACCEPT_PARAMETER, ERROR_RESPONSES, success_response
from app.api.schemas.compute import LinearCrossEntropyResponse

router = APIRouter(prefix="/v1", tags=["linear-cross-entropy"])


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
    context = received.context
    values = linear_values(received.body)
    entries = linear_request_entries(values)
    cost = linear_request_cost(values, context.accept)

    def alone() -> Response:
        call = to_linear_call(
            values,
            context.settings,
            overflow=received.overflow,
            deadline=context.deadline,
            docs_url=context.docs_url,
        )
        return respond(linear_fields(call.run()), context.accept, context.deadline)

    return await run_admitted(entries, cost, context, alone)
