"""POST /v1/cross-entropy: loss, analytic and numeric gradient, Jacobian and their agreement."""

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.coalesce import Coalescer, LossCall
from app.api.deps import read_json_body, request_body_openapi
from app.api.encoding import report_fields, respond
from app.api.examples import CROSS_ENTROPY_EXAMPLES
from app.api.problems import (
    DTYPES,
    check_output_size,
    parse_logits,
    parse_targets,
    request_entries,
    to_dtype,
)
from app.api.routes import ACCEPT_HEADER, ERROR_RESPONSES, success_response
from app.api.schemas import CrossEntropyRequest, CrossEntropyResponse
from app.core.config import Settings
from app.numerics.finite_diff import Method
from app.numerics.gradcheck import LossProblem, NumericOptions, Output, Report, Tolerance

router = APIRouter(prefix="/v1", tags=["cross-entropy"])


def loss_call(body: CrossEntropyRequest, settings: Settings) -> LossCall:
    """Validate a cross-entropy request into the problem and options the numerics take."""
    logits, flat = parse_logits(body.logits, settings)
    include = frozenset(Output(item) for item in body.include)
    check_output_size(logits.shape, include, settings)
    targets = parse_targets(body, body.labels, logits.shape, flat, DTYPES[body.dtype])
    return LossCall(
        LossProblem(to_dtype(logits, body.dtype, flat), targets, body.reduction),
        include,
        NumericOptions(Method(body.numeric.method), body.numeric.step),
        Tolerance(body.tolerance.atol, body.tolerance.rtol),
    )


def cross_entropy_fields(body: CrossEntropyRequest, report: Report) -> dict[str, Any]:
    """The response fields of a cross-entropy report."""
    fields = report_fields(report, frozenset(body.include), body.dtype)
    fields["reduction"] = str(body.reduction)
    return fields


def computed_alone(body: CrossEntropyRequest, settings: Settings, accept: str | None) -> Response:
    """Validate, compute and encode one request by itself (in a worker thread)."""
    report = loss_call(body, settings).analyse()
    return respond(cross_entropy_fields(body, report), accept)


@router.post(
    "/cross-entropy",
    summary="Cross-entropy loss and a gradient check",
    response_model=CrossEntropyResponse,
    response_model_exclude_none=True,
    responses={**ERROR_RESPONSES, **success_response()},
    openapi_extra={
        **request_body_openapi(CrossEntropyRequest, examples=CROSS_ENTROPY_EXAMPLES),
        "parameters": [ACCEPT_HEADER],
    },
)
async def cross_entropy(request: Request) -> Response:
    """PyTorch `F.cross_entropy` (weight, ignore_index, label_smoothing, reduction, probability
    targets) with effective targets q: loss_n = −Σ_c q_nc log a_nc, and its gradient
    ∂loss_n/∂z_nj = a_nj·Σ_c q_nc − q_nj (a − y only when the target sums to 1), divided by the
    reduction's D; checked against a numeric gradient with |a − n| ≤ atol + rtol·|n|."""
    body = await read_json_body(request, CrossEntropyRequest)
    settings: Settings = request.app.state.settings
    accept = request.headers.get("accept")
    if request_entries(body.logits, body.include) > settings.inline_max_entries:
        return await run_in_threadpool(computed_alone, body, settings, accept)
    coalescer: Coalescer = request.app.state.coalescer
    report = await coalescer.analyse(loss_call(body, settings))
    return respond(cross_entropy_fields(body, report), accept)
