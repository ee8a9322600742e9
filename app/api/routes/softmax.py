"""POST /v1/softmax: probabilities, log-probabilities and the Jacobian of a batch of logits."""

from fastapi import APIRouter, Request, Response

from app.api.deps import read_json_body, request_body_openapi
from app.api.encoding import report_fields, respond
from app.api.examples import SOFTMAX_EXAMPLES
from app.api.offload import compute
from app.api.problems import check_output_size, parse_logits, request_entries, to_dtype
from app.api.routes import ACCEPT_HEADER, ERROR_RESPONSES, success_response
from app.api.schemas import SoftmaxRequest, SoftmaxResponse
from app.core.config import Settings
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import NumericOptions, Output, Tolerance, analyse_softmax

router = APIRouter(prefix="/v1", tags=["softmax"])


def softmax_fields(body: SoftmaxRequest, settings: Settings) -> dict[str, object]:
    """Validate, compute and collect the response fields of one softmax request."""
    logits, flat = parse_logits(body.logits, settings)
    include = frozenset(Output(item) for item in body.include)
    check_output_size(logits.shape, include, settings)
    report = analyse_softmax(
        to_dtype(logits, body.dtype, flat),
        include,
        NumericOptions(Method(body.numeric.method), body.numeric.step),
        Tolerance(body.tolerance.atol, body.tolerance.rtol),
    )
    return report_fields(report, include, body.dtype)


@router.post(
    "/softmax",
    summary="Softmax and its Jacobian",
    response_model=SoftmaxResponse,
    response_model_exclude_none=True,
    responses={**ERROR_RESPONSES, **success_response()},
    openapi_extra={
        **request_body_openapi(SoftmaxRequest, examples=SOFTMAX_EXAMPLES),
        "parameters": [ACCEPT_HEADER],
    },
)
async def softmax(request: Request) -> Response:
    """a = softmax(z) with a_i = exp(z_i − m) / Σ_j exp(z_j − m) (m = max z), log a, and the
    Jacobian ∂a_i/∂z_j = a_i(δ_ij − a_j) of every sample; with `numeric_jacobian`, a numeric
    Jacobian and its agreement with the analytic one."""
    body = await read_json_body(request, SoftmaxRequest)
    settings: Settings = request.app.state.settings
    accept = request.headers.get("accept")
    entries = request_entries(body.logits, body.include)
    return await compute(entries, settings, lambda: respond(softmax_fields(body, settings), accept))
