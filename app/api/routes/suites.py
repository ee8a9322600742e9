"""GET /v1/suites: the named hard cases (`app.numerics.suites`) a tested function is run on.

The checking itself is the case's endpoint's (`/v1/cross-entropy`, `/v1/linear-cross-entropy`
for `lm_head`: a case's request with the function's outputs as `candidate`); these routes only
serve the cases, small ones inline and each one alone at its own URL (as `.npz` with
`Accept: application/x-npz`, ready to be posted).
"""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, Response

from app import __version__
from app.api.encoding import encode_json, encode_npz_request, wants_npz
from app.api.routes import ACCEPT_PARAMETER
from app.api.schemas.errors import MessageResponse
from app.api.schemas.suites import SuiteList, SuiteResponse
from app.core.media import JSON_MEDIA_TYPE, NPZ_MEDIA_TYPE
from app.numerics.suites import BUILDERS, Suite, SuiteCase, suite

router = APIRouter(prefix="/v1", tags=["suites"])

SuiteName = Annotated[
    str, Path(description="The suite: basics, torch, kernel or lm_head.", examples=["basics"])
]
CaseName = Annotated[str, Path(description="A case of the suite.", examples=["spread_800"])]

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": MessageResponse, "description": "No such suite or case; names the known ones."}
}


def _suite(name: str) -> Suite:
    found = suite(name)
    if found is None:
        raise HTTPException(404, f"no suite {name!r}: the suites are {', '.join(BUILDERS)}")
    return found


def _case_url(suite_name: str, case: SuiteCase) -> str:
    return f"{router.prefix}/suites/{suite_name}/cases/{case.name}"


def case_fields(suite_name: str, case: SuiteCase) -> dict[str, Any]:
    """A case as the response lists it: its request inline unless it is large."""
    atol, rtol = case.tolerance
    return {
        "name": case.name,
        "endpoint": case.endpoint,
        "reason": case.reason,
        "dtype": case.dtype,
        "tolerance": {"atol": atol, "rtol": rtol},
        "options": list(case.options),
        "features": sorted(case.features),
        "request": None if case.large else case.request(),
        "request_url": _case_url(suite_name, case),
    }


@router.get("/suites", summary="The suites of hard cases", response_model=SuiteList)
async def list_suites() -> Response:
    """Every suite: its name, version, what it is about and how many cases it has."""
    suites = [_suite(name) for name in BUILDERS]
    fields = {
        "service_version": __version__,
        "suites": [
            {
                "name": found.name,
                "version": found.version,
                "description": found.description,
                "cases": len(found.cases),
                "url": f"{router.prefix}/suites/{found.name}",
            }
            for found in suites
        ],
    }
    return Response(encode_json(fields), media_type=JSON_MEDIA_TYPE)


@router.get(
    "/suites/{name}",
    summary="A suite's cases",
    response_model=SuiteResponse,
    responses=NOT_FOUND,
)
async def get_suite(name: SuiteName) -> Response:
    """The suite's cases, each a ready request for its `endpoint` with its dtype, tolerance,
    reason, and the options and input features it needs. A large case's `request` is null:
    fetch it from its `request_url`."""
    found = _suite(name)
    fields = {
        "name": found.name,
        "version": found.version,
        "service_version": __version__,
        "description": found.description,
        "cases": [case_fields(found.name, case) for case in found.cases],
    }
    return Response(encode_json(fields), media_type=JSON_MEDIA_TYPE)


@router.get(
    "/suites/{name}/cases/{case}",
    summary="One case's request",
    responses={
        **NOT_FOUND,
        200: {
            "content": {
                NPZ_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
            },
            "description": "The request body for the case's endpoint: JSON, or with "
            "`Accept: application/x-npz` an .npz body (one float64 or int64 .npy member per "
            "array, request.json for the other fields) that can be posted as it is.",
        },
    },
    openapi_extra={"parameters": [ACCEPT_PARAMETER]},
)
async def get_case(name: SuiteName, case: CaseName, request: Request) -> Response:
    """The request of one case, the large ones included."""
    found = _suite(name)
    chosen = found.case(case)
    if chosen is None:
        names = ", ".join(c.name for c in found.cases)
        raise HTTPException(404, f"suite {name!r} has no case {case!r}: its cases are {names}")
    fields = chosen.request()
    if wants_npz(request.headers.get("accept")):
        return Response(encode_npz_request(fields), media_type=NPZ_MEDIA_TYPE)
    return Response(encode_json(fields), media_type=JSON_MEDIA_TYPE)
