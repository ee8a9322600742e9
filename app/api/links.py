"""Where the links in messages point: the service's own guide, or a published docs site.

A diagnosis ends with a link to the section of the maths page that explains it. The link is
absolute, so a student reading it in Gradescope or PrairieLearn can open it:

- GRADCHECK_DOCS_URL set: that site (`<docs_url>/maths/#reductions`);
- else, when the service serves the built MkDocs site (GRADCHECK_GUIDE_DIR, as the container
  does): this service's `/guide/`, from the request's own base URL (`https://host/guide/maths/
  #reductions`). The base URL is the one the client asked for: its Host header, and the scheme
  and client address that uvicorn takes from X-Forwarded-Proto / X-Forwarded-For only when the
  connection comes from a proxy it trusts (`--forwarded-allow-ips`, FORWARDED_ALLOW_IPS;
  127.0.0.1 by default), under uvicorn's `--root-path`;
- else (`make run` from a clone, nothing built): the page in the repository,
  `docs/maths.md#reductions`.
"""

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles

from app.core.config import Settings

GUIDE_URL = "/guide"
"""Where the built MkDocs site is served, when GRADCHECK_GUIDE_DIR names one."""

logger = logging.getLogger("gradcheck.links")


def install_guide(app: FastAPI, settings: Settings) -> None:
    """Serve the built site of GRADCHECK_GUIDE_DIR at GUIDE_URL, when it holds one."""
    app.state.guide_served = False
    if settings.guide_dir is None:
        return
    index = Path(settings.guide_dir) / "index.html"
    if not index.is_file():
        logger.warning(
            "GRADCHECK_GUIDE_DIR=%s holds no built site (no index.html): %s/ is not served, and "
            "messages link to GRADCHECK_DOCS_URL or name docs/maths.md",
            settings.guide_dir,
            GUIDE_URL,
        )
        return
    app.mount(GUIDE_URL, StaticFiles(directory=settings.guide_dir, html=True), name="guide")
    app.state.guide_served = True


def docs_url(settings: Settings, guide_served: bool, request: Request) -> str | None:
    """The base URL of the docs that `request`'s messages link to (None: the repository's
    docs/ folder), as the module docstring says; `guide_served` as `install_guide` left it."""
    if settings.docs_url:
        return settings.docs_url
    if guide_served:
        return str(request.base_url).rstrip("/") + GUIDE_URL
    return None
