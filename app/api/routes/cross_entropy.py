"""POST /v1/cross-entropy: loss, analytic and numeric gradient, Jacobian and their agreement."""

from fastapi import APIRouter, Response

from app.api.admission import cross_entropy_request_cost, shape_entries
from app.api.deps import CrossEntropyBody, RequestContext
from app.api.encoding import cross_entropy_fields, respond
from app.api.inputs import LossCall, LossValues, loss_values, to_loss_call
from app.api.offload import run_in_worker, runs_inline
from app.api.routes import ACCEPT_PARAMETER, ERROR_RESPONSES, success_response
from app.api.schemas.compute import CrossEntropyResponse
from app.core.errors import LazyRefusal

router = APIRouter(prefix="/v1", tags=["cross-entropy"])


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
    context = received.context
    values = loss_values(received.body)
    entries = shape_entries(values.shape, values.options.include)
    if not runs_inline(entries, context):  # validated and computed off the event loop
        cost = cross_entropy_request_cost(values, context.settings, context.accept)

        def alone() -> Response:
            call = _call(values, context, received.overflow)
            return respond(
                cross_entropy_fields(call.run(), call.layout), context.accept, context.deadline
            )

        return await run_in_worker(cost, context, alone)
    call = _call(values, context, received.overflow)
    result = await call.run_on_loop(context.coalescer)
    return respond(cross_entropy_fields(result, call.layout), context.accept, context.deadline)


def _call(values: LossValues, context: RequestContext, overflow: LazyRefusal | None) -> LossCall:
    return to_loss_call(
        values,
        context.settings,
        overflow=overflow,
        deadline=context.deadline,
        docs_url=context.docs_url,
    )
