"""The ASGI application: `app.main:app`, built by `create_app()`."""

from typing import Any

from fastapi import FastAPI

from app import __version__
from app.api.coalesce import Coalescer
from app.api.deps import REQUEST_BODY_MODELS
from app.api.docs import install_docs
from app.api.errors import install_error_handlers
from app.api.router import ROUTERS
from app.api.routes.ops import lifespan
from app.api.routes.web import STATIC_URL, static_files
from app.api.security import api_key_guard, is_api_router, signing_key
from app.core.config import Settings, get_settings
from app.core.logging import configure_logging
from app.core.metrics import HttpMetrics
from app.core.middleware import install_middleware

DESCRIPTION = """
Softmax and cross-entropy, their Jacobian and gradient — analytic and numeric — and a verdict on
how well they agree.

* softmax: a_i = exp(z_i) / Σ_j exp(z_j), computed stably with the row's maximum subtracted
* Jacobian: ∂a_i/∂z_j = a_i(δ_ij − a_j)
* cross-entropy with effective targets q (weights, label smoothing, ignored samples folded in):
  L = −Σ_i q_i log a_i, and ∂L/∂z_j = a_j·Σ_i q_i − q_j, which is a − y only when Σ q = 1
* the check: |analytic − numeric| ≤ atol + rtol·|numeric| element-wise
"""


def _openapi_with_body_models(app: FastAPI) -> dict[str, Any]:
    """FastAPI's OpenAPI document plus the schemas of bodies that routes parse themselves."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = FastAPI.openapi(app)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_BODY_MODELS:
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
    app.openapi_schema = schema
    return schema


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service: settings, routers, error handlers, OpenAPI."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    app = FastAPI(
        title="gradcheck",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = HttpMetrics()
    app.state.coalescer = Coalescer(app.state.metrics.coalesced.observe)
    install_middleware(app, settings, app.state.metrics)
    # No dependency_overrides: while any is set, FastAPI re-inspects every dependency of every
    # request. Routes read these settings from app.state (`app.api.deps.SettingsDep`).
    app.state.signing_key = signing_key(settings)
    api_keys = api_key_guard(settings)
    for router in ROUTERS:
        app.include_router(router, dependencies=api_keys if is_api_router(router) else None)
    install_docs(app)
    app.mount(STATIC_URL, static_files(), name="static")
    install_error_handlers(app)
    app.openapi = lambda: _openapi_with_body_models(app)  # type: ignore[method-assign]
    return app


app = create_app()
