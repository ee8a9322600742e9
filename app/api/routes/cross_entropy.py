"""POST /v1/cross-entropy: loss, analytic and numeric gradient, Jacobian and their agreement."""

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Response

from app.api.deps import SettingsDep, json_body, request_body_openapi
from app.api.encoding import report_fields, respond
from app.api.examples import CROSS_ENTROPY_EXAMPLES
from app.api.offload import compute
from app.api.problems import (
    DTYPES,
    check_output_size,
    parse_logits,
    parse_targets,
    request_entries,
    to_dtype,
)
from app.api.routes import ERROR_RESPONSES, success_response
from app.api.schemas import CrossEntropyRequest, CrossEntropyResponse
from app.core.config import Settings
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import NumericOptions, Output, Tolerance, analyse_cross_entropy

router = APIRouter(prefix="/v1", tags=["cross-entropy"])

CrossEntropyBody = Annotated[CrossEntropyRequest, Depends(json_body(CrossEntropyRequest))]


def cross_entropy_fields(body: CrossEntropyRequest, settings: Settings) -> dict[str, object]:
    """Validate, compute and collect the response fields of one cross-entropy request."""
    logits, flat = parse_logits(body.logits, settings)
    include = frozenset(Output(item) for item in body.include)
    check_output_size(logits.shape, include, settings)
    dtype = DTYPES[body.dtype]
    targets = parse_targets(body, body.labels, logits.shape, flat, dtype)
    report = analyse_cross_entropy(
        to_dtype(logits, body.dtype, flat),
        targets,
        body.reduction,
        include,
        NumericOptions(Method(body.numeric.method), body.numeric.step),
        Tolerance(body.tolerance.atol, body.tolerance.rtol),
    )
    fields = report_fields(report, include, body.dtype)
    fields["reduction"] = str(body.reduction)
    return fields


@router.post(
    "/cross-entropy",
    summary="Cross-entropy loss and a gradient check",
    response_model=CrossEntropyResponse,
    response_model_exclude_none=True,
    responses={**ERROR_RESPONSES, **success_response()},
    openapi_extra=request_body_openapi(CrossEntropyRequest, examples=CROSS_ENTROPY_EXAMPLES),
)
async def cross_entropy(
    body: CrossEntropyBody,
    settings: SettingsDep,
    accept: Annotated[str | None, Header(description="application/x-npz for .npz")] = None,
) -> Response:
    """PyTorch `F.cross_entropy` (weight, ignore_index, label_smoothing, reduction, probability
    targets) with effective targets q: loss_n = −Σ_c q_nc log a_nc, and its gradient
    ∂loss_n/∂z_nj = a_nj·Σ_c q_nc − q_nj (a − y only when the target sums to 1), divided by the
    reduction's D; checked against a numeric gradient with |a − n| ≤ atol + rtol·|n|."""
    entries = request_entries(body.logits, body.include)
    return await compute(
        entries, settings, lambda: respond(cross_entropy_fields(body, settings), accept)
    )
