"""The product app plus three reference endpoints for the small-request case.

They live only here, never in the product, and go through the same middleware (request id,
access log, metrics, security headers, compute timeout):
- the bare endpoint returns a constant without reading the body, so the ratio against it
  measures what parsing, computing and encoding a small request cost on top of the framework;
- the hop endpoint returns the constant from a worker thread: the ceiling of any endpoint that
  hands its work to a thread;
- the no-numerics endpoint does the cross-entropy route's work except the numerics, whose
  report it computes once per distinct body: the ceiling that numerics costing nothing would
  reach.
"""

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import CrossEntropyBody
from app.api.encoding import cross_entropy_fields, respond
from app.api.inputs import to_loss_call
from app.main import create_app
from app.numerics.tasks import LossResult
from bench.cases import CONSTANT_PATH, HOP_PATH, NO_NUMERICS_PATH

CONSTANT_BODY = b'{"ok":true}'

app = create_app()
_ready_results: dict[bytes, LossResult] = {}


@app.post(CONSTANT_PATH, include_in_schema=False)
async def constant() -> Response:
    """A constant JSON body: no parsing, no computation."""
    return Response(CONSTANT_BODY, media_type="application/json")


@app.post(HOP_PATH, include_in_schema=False)
async def constant_after_a_hop() -> Response:
    """The same constant, fetched from a worker thread: what one thread hop costs."""
    return Response(await run_in_threadpool(lambda: CONSTANT_BODY), media_type="application/json")


@app.post(NO_NUMERICS_PATH, include_in_schema=False)
async def cross_entropy_without_numerics(received: CrossEntropyBody, request: Request) -> Response:
    """/v1/cross-entropy's work for a small request, the numerics aside: read, validate and
    convert the body, collect and encode the fields of its report (computed on first sight)."""
    context = received.context
    call = to_loss_call(received.body, context.settings, deadline=context.deadline)
    raw = await request.body()
    result = _ready_results.get(raw) or _ready_results.setdefault(raw, call.run())
    return respond(cross_entropy_fields(result, call.layout), context.accept, context.deadline)
