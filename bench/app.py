"""The product app plus two bare endpoints: the baselines of the small-request case.

The bare endpoints live only here, never in the product. The first goes through the same
middleware (request id, access log, metrics, security headers, compute timeout) and returns a
constant without reading the body, so the ratio against it measures what parsing, computing and
encoding a small request cost on top of the framework. The second returns the constant from a
worker thread: the ceiling of any endpoint that hands its work to a thread.
"""

from fastapi import Response
from starlette.concurrency import run_in_threadpool

from app.main import create_app
from bench.cases import CONSTANT_PATH, HOP_PATH

CONSTANT_BODY = b'{"ok":true}'

app = create_app()


@app.post(CONSTANT_PATH, include_in_schema=False)
async def constant() -> Response:
    """A constant JSON body: no parsing, no computation."""
    return Response(CONSTANT_BODY, media_type="application/json")


@app.post(HOP_PATH, include_in_schema=False)
async def constant_after_a_hop() -> Response:
    """The same constant, fetched from a worker thread: what one thread hop costs."""
    return Response(await run_in_threadpool(lambda: CONSTANT_BODY), media_type="application/json")
