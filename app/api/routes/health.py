"""Liveness: the process answers."""

from fastapi import APIRouter
from pydantic import BaseModel

from app import __version__

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The service is up."""

    status: str
    version: str


@router.get("/healthz", summary="Liveness probe")
async def healthz() -> Health:
    """200 while the process can answer requests; does no numerical work."""
    return Health(status="ok", version=__version__)
