"""Offline API documentation: Swagger UI at /docs and ReDoc at /redoc, every asset served here.

FastAPI's own pages load their scripts, styles and favicon from CDNs, so on a cluster without
internet they are blank. Here the bundles come from the `fastapi-offline` package (served under
/docs-assets), the favicon and the Swagger UI start-up script from the explorer's static folder,
and no page has an inline script. ReDoc's bundle asks for one outside file, the Redocly logo in
its side menu (cdn.redoc.ly); it is served with that address pointed at the local favicon.
"""

from functools import lru_cache
from html import escape
from pathlib import Path
from typing import Any, cast

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.staticfiles import StaticFiles

from app.api.deps import BodyReader
from app.api.routes.web import STATIC_URL

DOCS_ASSETS_URL = "/docs-assets"
OFFLINE_ASSETS = Path(fastapi_offline.__file__).parent / "static"
REDOC_BUNDLE = "redoc.standalone.js"
REDOC_LOGO_URL = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
# Relative to the /redoc page, so that it also resolves under a proxy's root path.
LOCAL_LOGO_URL = f"{STATIC_URL.lstrip('/')}/favicon.svg".encode()


@lru_cache(maxsize=1)
def redoc_bundle() -> bytes:
    """ReDoc's standalone bundle with the Redocly logo's CDN address replaced by the favicon's."""
    return (OFFLINE_ASSETS / REDOC_BUNDLE).read_bytes().replace(REDOC_LOGO_URL, LOCAL_LOGO_URL)


def _head(title: str, root: str, stylesheet: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n"
        f'<link rel="icon" type="image/svg+xml" href="{escape(root)}{STATIC_URL}/favicon.svg">\n'
        f'<link rel="stylesheet" href="{escape(root + stylesheet)}">\n</head>\n'
    )


def swagger_ui_page(title: str, root: str, openapi_url: str) -> str:
    """Swagger UI from local assets; `swagger-init.js` reads the spec URL from a data attribute."""
    return (
        _head(f"{title} – Swagger UI", root, f"{DOCS_ASSETS_URL}/swagger-ui.css")
        + f'<body>\n<div id="swagger-ui" data-openapi-url="{escape(root + openapi_url)}"></div>\n'
        f'<script src="{escape(root)}{DOCS_ASSETS_URL}/swagger-ui-bundle.js"></script>\n'
        f'<script src="{escape(root)}{STATIC_URL}/swagger-init.js"></script>\n</body>\n</html>\n'
    )


def redoc_page(title: str, root: str, openapi_url: str) -> str:
    """ReDoc from the patched local bundle, without Google Fonts."""
    return (
        _head(f"{title} – ReDoc", root, f"{STATIC_URL}/docs.css")
        + f'<body>\n<redoc spec-url="{escape(root + openapi_url)}"></redoc>\n'
        f'<script src="{escape(root)}{DOCS_ASSETS_URL}/{REDOC_BUNDLE}"></script>\n'
        "</body>\n</html>\n"
    )


def install_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve Swagger UI at `docs_url` and ReDoc at `redoc_url` from assets of this service.

    The app must be built with `docs_url=None, redoc_url=None` so that FastAPI's CDN pages
    do not take these paths first.
    """
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return HTMLResponse(
            swagger_ui_page(app.title, request.scope.get("root_path", ""), openapi_url)
        )

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return HTMLResponse(redoc_page(app.title, request.scope.get("root_path", ""), openapi_url))

    # Declared before the mount below, so that it shadows the unpatched file.
    @app.get(f"{DOCS_ASSETS_URL}/{REDOC_BUNDLE}", include_in_schema=False)
    async def redoc_script() -> Response:
        return Response(redoc_bundle(), media_type="text/javascript")

    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=OFFLINE_ASSETS), name="docs-assets")


def _request_bodies(route: APIRoute) -> list[BodyReader[Any]]:
    """The body dependencies (`BodyReader`) of a route (the bodies it reads itself)."""
    return [
        cast(BodyReader[Any], dependency.call)
        for dependency in route.dependant.dependencies
        if isinstance(dependency.call, BodyReader)
    ]


def document_request_bodies(app: FastAPI) -> None:
    """Make the OpenAPI document describe the bodies that routes read through their body dependency:
    each operation's requestBody (schema and named examples) and the models' schemas.

    FastAPI documents only the bodies it parses itself; these are found on the routes, so a new
    route with a body alias from `app.api.deps` is documented with nothing else to declare.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = FastAPI.openapi(app)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for context in iter_route_contexts(app.routes):
            route = context.original_route
            if not isinstance(route, APIRoute) or context.path_format is None:
                continue
            for body in _request_bodies(route):
                model_schema = body.model.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
                components.update(model_schema.pop("$defs", {}))
                components[body.model.__name__] = model_schema
                for method in route.methods or ():
                    operation = schema["paths"][context.path_format][method.lower()]
                    operation["requestBody"] = body.openapi()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
