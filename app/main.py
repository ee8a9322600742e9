"""The ASGI application: `app.main:app`, built by `create_app()`."""

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI

from app import __version__
from app.api.coalesce import Coalescer
from app.api.docs import document_request_bodies, install_docs
from app.api.errors import install_error_handlers
from app.api.links import install_guide
from app.api.routes import cross_entropy, grading, health, linear, ops, softmax, suites, web
from app.api.security import api_key_guard, is_api_router, problem_signing_key
from app.core.budget import MemoryBudget
from app.core.config import Settings, get_settings
from app.core.logging import configure_logging
from app.core.metrics import HttpMetrics, mark_worker_exited
from app.core.middleware import install_middleware
from app.numerics.softmax import softmax as softmax_of

DESCRIPTION = """
Softmax and cross-entropy, their Jacobian and gradient — analytic and numeric — and a verdict on
how well they agree.

* softmax: a_i = exp(z_i) / Σ_j exp(z_j), computed stably with the row's maximum subtracted
* Jacobian: ∂a_i/∂z_j = a_i(δ_ij − a_j)
* cross-entropy with effective targets q (weights, label smoothing, ignored samples folded in):
  L = −Σ_i q_i log a_i, and ∂L/∂z_j = a_j·Σ_i q_i − q_j, which is a − y only when Σ q = 1
* the check: |analytic − numeric| ≤ atol + rtol·|numeric| element-wise
"""

ROUTERS = [
    health.router,
    ops.router,
    softmax.router,
    cross_entropy.router,
    linear.router,
    grading.router,
    suites.router,
]


def numerics_work() -> bool:
    """Self-test: softmax([0, log 3]) = [1/4, 3/4]."""
    probabilities = softmax_of(np.array([[0.0, np.log(3.0)]])).probabilities
    return bool(np.allclose(probabilities, [[0.25, 0.75]], rtol=1e-15, atol=0))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Ready once started and self-tested; not ready (and gauges dropped) while stopping.

    At startup, what exists (the app, its routes and models, the imported libraries) lives as
    long as the process, so it is frozen out of the garbage collector's reach: full collections
    then scan only what requests made (they cost a small request about 40 µs otherwise, `make
    bench` case 3). Process-wide allocator tuning is the deployment's (MALLOC_* environment
    variables where the process starts), so importing the app changes nothing in a process.
    """
    app.state.ready = numerics_work()
    gc.collect()
    gc.freeze()
    yield
    app.state.ready = False
    mark_worker_exited()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service: settings, routers, middleware, error handlers, docs, OpenAPI."""
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
    app.state.budget = MemoryBudget.from_settings(settings, observer=app.state.metrics)
    install_middleware(app, settings, app.state.metrics)
    # No dependency_overrides: while any is set, FastAPI re-inspects every dependency of every
    # request. Routes read these from app.state (`app.api.deps`).
    app.state.signing_key = problem_signing_key(settings)
    api_keys = api_key_guard(settings)
    for router in ROUTERS:
        app.include_router(router, dependencies=api_keys if is_api_router(router) else None)
    app.include_router(web.router)
    install_docs(app)
    app.mount(web.STATIC_URL, web.static_files(), name="static")
    install_guide(app, settings)
    install_error_handlers(app)
    document_request_bodies(app)
    return app


app = create_app()
