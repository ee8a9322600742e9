"""POST /v1/softmax: probabilities, log-probabilities and the Jacobian of a batch of logits."""

from fastapi import APIRouter, Response

from app.api.admission import shape_entries, softmax_request_cost
from app.api.deps import SoftmaxBody
from app.api.encoding import respond, softmax_fields
from app.api.inputs import softmax_values, to_softmax_call
from app.api.offload import run_admitted
from app.api.routes import ACCEPT_PARAMETER, ERROR_RESPONSES, success_response
from app.api.schemas.compute import SoftmaxResponse

router = APIRouter(prefix="/v1", tags=["softmax"])


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
    context = received.context
    values = softmax_values(received.body)
    entries = shape_entries(values.shape, values.options.include)
    cost = softmax_request_cost(values, context.accept)

    def work() -> Response:
        call = to_softmax_call(
            values,
            context.settings,
            overflow=received.overflow,
            deadline=context.deadline,
            docs_url=context.docs_url,
        )
        return respond(softmax_fields(call.run(), call.layout), context.accept, context.deadline)

    return await run_admitted(entries, cost, context, work)
