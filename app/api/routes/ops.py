"""Operations: readiness (`/readyz`) and Prometheus metrics (`/metrics`)."""

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from app import __version__
from app.api.deps import MetricsDep, ReadyDep
from app.api.schemas.errors import MessageResponse

router = APIRouter(tags=["operations"])


class Readiness(BaseModel):
    """The service takes traffic."""

    status: str
    version: str


NOT_READY = (
    "Not ready: the service is starting or stopping, or its numerics self-test failed; "
    "send traffic to another replica."
)


@router.get(
    "/readyz",
    summary="Readiness probe",
    response_model=Readiness,
    responses={503: {"model": MessageResponse, "description": "Starting, stopping or broken."}},
)
async def readyz(ready: ReadyDep) -> JSONResponse:
    """200 once the app has started and its numerics self-test passed; 503 before and while it
    shuts down. Liveness (`/healthz`) stays 200 throughout."""
    if ready:
        return JSONResponse({"status": "ready", "version": __version__})
    return JSONResponse({"detail": NOT_READY}, status_code=503)


METRICS_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/plain": {"schema": {"type": "string"}}},
        "description": "Prometheus text exposition format.",
    }
}


@router.head("/metrics", include_in_schema=False)
@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses=METRICS_RESPONSE,
)
async def metrics(http_metrics: MetricsDep) -> Response:
    """Requests, latency and payload-size histograms by method, route template and status, and
    requests in progress (summed over workers when PROMETHEUS_MULTIPROC_DIR is set)."""
    body, media_type = http_metrics.exposition()
    return Response(body, media_type=media_type)
