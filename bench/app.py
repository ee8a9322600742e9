"""The product app plus one bare endpoint: the baseline of the small-request case.

The bare endpoint lives only here, never in the product: it goes through the same middleware
(request id, access log, metrics, security headers, compute timeout) and returns a constant
without reading the body, so the ratio against it measures what parsing, computing and encoding
a small request cost on top of the framework.
"""

from fastapi import Response

from app.main import create_app

CONSTANT_PATH = "/bench/constant"
CONSTANT_BODY = b'{"ok":true}'

app = create_app()


@app.post(CONSTANT_PATH, include_in_schema=False)
async def constant() -> Response:
    """A constant JSON body: no parsing, no computation."""
    return Response(CONSTANT_BODY, media_type="application/json")
