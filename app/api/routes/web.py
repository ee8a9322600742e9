"""The explorer page at / and its static files (HTML, JS, CSS; no CDN, no build step)."""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
STATIC_URL = "/static"

router = APIRouter(include_in_schema=False)


def static_files() -> StaticFiles:
    """The files of app/web, to be mounted at STATIC_URL."""
    return StaticFiles(directory=WEB_DIR)


@router.get("/")
async def explorer() -> FileResponse:
    """The explorer: edit logits and labels, see probabilities, Jacobian and gradient check."""
    return FileResponse(WEB_DIR / "index.html", media_type="text/html")


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    """The service's icon, for browsers that ask for /favicon.ico."""
    return FileResponse(WEB_DIR / "favicon.svg", media_type="image/svg+xml")
