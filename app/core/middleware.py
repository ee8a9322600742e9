"""ASGI middleware: request id, access log and metrics; security headers; CORS; compute timeout.

Outermost first, as `install_middleware` stacks them:

0. `SendTimeoutMiddleware`: closes the connection of a client that does not read its response
   for GRADCHECK_SEND_TIMEOUT_SECONDS, freeing the response's memory.
1. `RequestObservabilityMiddleware`: accepts or generates `X-Request-ID`, echoes it, writes one
   access-log line and the Prometheus observations per request. A client that went away (a
   disconnect mid-body or during compute, a response not read) is logged at INFO and counted as
   status 499.
2. `SecurityHeadersMiddleware`: nosniff, no framing, no referrer on every response; on HTML
   pages a Content-Security-Policy that allows only same-origin resources plus the page's own
   inline scripts, by hash.
3. Starlette's `CORSMiddleware`, only if GRADCHECK_CORS_ORIGINS names origins.
4. `BodySizeLimitMiddleware`: 413 for bodies over GRADCHECK_MAX_BODY_BYTES.
5. `ComputeTimeoutMiddleware`: 504 once GRADCHECK_REQUEST_TIMEOUT_SECONDS have passed.
"""

import asyncio
import base64
import hashlib
import logging
import re
import time
import uuid

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.config import Settings
from app.core.errors import LimitExceeded
from app.core.logging import ACCESS_LOGGER, REQUEST_ID
from app.core.media import parse_content_type
from app.core.metrics import CLIENT_CLOSED_REQUEST, UNMATCHED_ROUTE, HttpMetrics
from app.numerics.deadline import Deadline, DeadlinePassed

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
"""Ids a client may choose: no spaces, quotes or control characters (they end up in logs)."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_LOGGED_PATH_LENGTH = 200

access_log = logging.getLogger(ACCESS_LOGGER)
timeout_log = logging.getLogger("gradcheck.timeout")


def request_id_for(headers: Headers) -> str:
    """The client's X-Request-ID if it is 1–128 characters of [A-Za-z0-9._:-], else a new one."""
    candidate = headers.get(REQUEST_ID_HEADER, "")
    return candidate if _VALID_REQUEST_ID.fullmatch(candidate) else uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request ("/v1/softmax"), never the raw
    path, so that metric labels stay few."""
    route = scope.get("route")
    path = getattr(route, "path", None) if isinstance(route, BaseRoute) else None
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def _declared_length(headers: Headers) -> int | None:
    value = headers.get("content-length", "")
    return int(value) if value.isdigit() else None


class RequestObservabilityMiddleware:
    """Request id in and out, one access-log line and one metrics observation per request.

    The access log holds method, path (without the query string), route, status, duration and
    sizes, never headers or bodies: API keys and tokens stay out of the logs.
    """

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with its id set, then log and count it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = request_id_for(headers)
        token = REQUEST_ID.set(request_id)
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        status = 500
        received = sent = 0
        started = time.perf_counter()

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        in_progress = self.metrics.in_progress.labels(method)
        in_progress.inc()
        client_gone: str | None = None
        try:
            await self.app(scope, counting_receive, send_with_id)
            if left_before_response(receive):
                client_gone = "the client disconnected before the response was sent"
                status = CLIENT_CLOSED_REQUEST
        except BaseException as error:
            client_gone = client_gone_reason(error)
            if client_gone is None:
                raise
            status = CLIENT_CLOSED_REQUEST
        finally:
            in_progress.dec()
            seconds = time.perf_counter() - started
            route = route_template(scope)
            request_bytes = _declared_length(headers) or received
            self.metrics.observe((method, route, str(status)), seconds, request_bytes, sent)
            access_log.log(
                logging.WARNING if status >= 500 else logging.INFO,
                "request" if client_gone is None else f"request: {client_gone}",
                extra={
                    "method": method,
                    "path": scope["path"][:_LOGGED_PATH_LENGTH],
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    "request_bytes": request_bytes,
                    "response_bytes": sent,
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )
            REQUEST_ID.reset(token)


class ResponseNotRead(ClientDisconnect):
    """The client did not read its response within the send timeout (its connection is closed)."""


def client_gone_reason(error: BaseException) -> str | None:
    """Why the client went away, if `error` (or every exception of a group) says it did."""
    if isinstance(error, BaseExceptionGroup):
        reasons = {client_gone_reason(inner) for inner in error.exceptions}
        return reasons.pop() if len(reasons) == 1 and None not in reasons else None
    if isinstance(error, ResponseNotRead):
        return "the client did not read the response in time; connection closed"
    if isinstance(error, ClientDisconnect):
        return "the client disconnected before the request was read"
    return None


def left_before_response(receive: Receive) -> bool:
    """Whether the client of uvicorn's `receive` disconnected before its response was written
    (uvicorn then drops what the app sends, silently: the app saw its own status, not the
    client's). False where the server is not uvicorn."""
    cycle = getattr(receive, "__self__", None)
    return bool(getattr(cycle, "disconnected", False)) and not getattr(
        cycle, "response_complete", True
    )


SEND_CHUNK_BYTES = 1 << 20
"""Response bodies are handed to the server in pieces of this size, each awaited with the send
timeout: uvicorn writes a whole piece into its buffer at once, then waits for the client to read
before it accepts the next, so a piece is what a client that stops reading can pin."""


class SendTimeoutMiddleware:
    """Close the connection of a client that does not read its response.

    uvicorn buffers whatever it is given and only waits (for the client to read) at its *next*
    send; a body given in one piece would sit in its buffer for as long as the client keeps the
    connection open. So bodies go down in SEND_CHUNK_BYTES pieces (memoryview slices of the
    body, not copies), each send awaited for at most `seconds` (a client that stops reading
    pins at most the last piece and its socket buffers). At the timeout the connection is
    aborted (its buffer dropped: a plain close would wait for the buffer to drain) and
    `ResponseNotRead` is raised into the app, which the observability middleware logs as the
    client's (status 499). The transport is found as uvicorn's `receive.__self__.transport`
    (this middleware must be the outermost, so that `receive` is uvicorn's own); elsewhere the
    response is only abandoned.
    """

    def __init__(self, app: ASGIApp, seconds: float, chunk_bytes: int = SEND_CHUNK_BYTES) -> None:
        self.app = app
        self.seconds = seconds
        self.chunk_bytes = chunk_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, sending its response under the timeout."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        aborted = False
        cycle: object | None = None

        async def send_or_abort(message: Message) -> None:
            nonlocal aborted, cycle
            if aborted:
                raise ResponseNotRead
            try:
                async with asyncio.timeout(self.seconds):
                    await send(message)
            except TimeoutError:
                aborted = True
                cycle = _abort_connection(receive)
                raise ResponseNotRead from None

        async def timed_send(message: Message) -> None:
            body = message.get("body", b"")
            if message["type"] != "http.response.body" or len(body) <= self.chunk_bytes:
                await send_or_abort(message)
                return
            more_body = message.get("more_body", False)
            body = memoryview(body)  # slices without copies
            last = (len(body) - 1) // self.chunk_bytes * self.chunk_bytes
            for start in range(0, len(body), self.chunk_bytes):
                await send_or_abort(
                    {
                        "type": "http.response.body",
                        "body": body[start : start + self.chunk_bytes],
                        "more_body": more_body or start < last,
                    }
                )

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if aborted:
                await _until_disconnected(cycle)


def _abort_connection(receive: Receive) -> object | None:
    """Drop the connection of uvicorn's `receive` (its transport's buffer too), if it has one
    (asyncio's and uvloop's transports both have `abort`); returns uvicorn's request cycle."""
    cycle = getattr(receive, "__self__", None)
    abort = getattr(getattr(cycle, "transport", None), "abort", None)
    if callable(abort):
        abort()
        return cycle
    return None


async def _until_disconnected(cycle: object | None) -> None:
    """Let the server's event loop deliver the connection's loss (a few iterations at most), so
    that it does not report the response as unfinished."""
    for _ in range(CONNECTION_LOST_ITERATIONS):
        if cycle is None or getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0)


CONNECTION_LOST_ITERATIONS = 20


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_INLINE_SCRIPT = re.compile(
    rb"<script\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL
)


def html_content_security_policy(page: bytes) -> str:
    """The CSP of an HTML page: same-origin resources only, and of inline scripts only those in
    this page (by their SHA-256, so the page's own Swagger UI bootstrap runs and injected ones
    do not). Inline styles are allowed: Swagger UI and ReDoc set them at run time."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return (
        "default-src 'self'; "
        f"script-src 'self'{hashes}; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "worker-src 'self' blob:; "
        "object-src 'none'; "
        "base-uri 'self'; "
        "form-action 'self'; "
        "frame-ancestors 'none'"
    )


class SecurityHeadersMiddleware:
    """`SECURITY_HEADERS` on every response; on HTML responses also a Content-Security-Policy.

    An HTML body is held back until complete (pages are small) so its inline scripts can be
    hashed into the policy before the headers go out.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, adding the headers to its response."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held_start: Message | None = None
        held_body: list[bytes] = []

        async def send_secured(message: Message) -> None:
            nonlocal held_start
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("text/html"):
                    held_start = message
                    return
            elif held_start is not None and message["type"] == "http.response.body":
                held_body.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                page = b"".join(held_body)
                MutableHeaders(scope=held_start)["Content-Security-Policy"] = (
                    html_content_security_policy(page)
                )
                await send(held_start)
                message = {"type": "http.response.body", "body": page, "more_body": False}
            await send(message)

        await self.app(scope, receive, send_secured)


def body_too_large(setting: str, limit: int) -> str:
    """The 413 message of a body size limit."""
    return (
        f"The request body is larger than {setting} = {limit} bytes: "
        "send fewer samples per request, or ask the operator to raise the limit."
    )


class BodySizeLimitMiddleware:
    """413 for a body over its limit, as JSON naming the limit: `max_bytes` for JSON bodies,
    `max_npz_bytes` for binary `.npz` ones (their own setting: they carry 8 bytes a number
    where JSON carries about 20).

    A Content-Length over the limit is answered before the body is read; a chunked body is
    counted as it is read and refused once it passes the limit (the route's read raises
    `LimitExceeded`, which the error handlers answer). Starlette's own limit is not used: for
    a Content-Length over it, it replaces whatever response the app sends by a plain-text 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_npz_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_npz_bytes = max_npz_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse or count the body, then serve the request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if parse_content_type(headers.get("content-type", "")).is_npz:
            setting, limit = "GRADCHECK_MAX_NPZ_BODY_BYTES", self.max_npz_bytes
        else:
            setting, limit = "GRADCHECK_MAX_BODY_BYTES", self.max_bytes
        declared = _declared_length(headers)
        if declared is not None and declared > limit:
            response = JSONResponse({"detail": body_too_large(setting, limit)}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise LimitExceeded(body_too_large(setting, limit))
            return message

        await self.app(scope, limited_receive, send)


DEADLINE_STATE = "deadline"
"""The key of the request's `Deadline` in its state (`request.state.deadline`)."""


class ComputeTimeoutMiddleware:
    """504 when a request has not started its response within `seconds`.

    The request runs as its own task. At the deadline the client gets the 504 and the task is
    abandoned: its later output is dropped. The request's `Deadline` is made here and handed to
    the app in the request's state (`request.state.deadline`, read by the body dependency,
    `app.api.deps`), which passes it down: numeric derivatives check it at each group of class
    columns, grading between parts, the routes before encoding, and `DeadlinePassed` stops the
    work. Work that never checks it runs to its end in its thread while the event loop keeps
    serving.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, or answer 504 at its deadline."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[DEADLINE_STATE] = Deadline.after(self.seconds)
        response_started = abandoned = False

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if abandoned:
                return
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        done, _ = await asyncio.wait({task}, timeout=self.seconds)
        if not done and response_started:
            await task
            return
        if done:
            # read the outcome without raising it here: a traceback through this frame, whose
            # locals hold the task that holds the exception, would be a reference cycle
            # keeping every array of the request's frames alive until a garbage collection
            error = task.exception()
            del task, done
            if error is None:
                return
            if not isinstance(error, DeadlinePassed) or response_started:
                try:
                    raise error
                finally:
                    del error
            del error
        else:
            abandoned = True
            task.add_done_callback(_drop_result)
            del task
        timeout_log.warning(
            "request stopped at the compute timeout",
            extra={"route": route_template(scope), "timeout_seconds": self.seconds},
        )
        await self.timeout_response()(scope, receive, send)

    def timeout_response(self) -> JSONResponse:
        """504 with a sentence saying which limit was hit and how to stay under it."""
        return JSONResponse(
            {
                "detail": f"The request took longer than GRADCHECK_REQUEST_TIMEOUT_SECONDS = "
                f"{self.seconds:g} s and was stopped: send fewer samples or classes per "
                "request, or leave the numeric outputs out of include."
            },
            status_code=504,
        )


def _drop_result(task: "asyncio.Task[None]") -> None:
    """Retrieve an abandoned request's outcome, so asyncio does not report it as unhandled."""
    if not task.cancelled():
        task.exception()


def install_middleware(app: FastAPI, settings: Settings, metrics: HttpMetrics) -> None:
    """Stack the middleware of the module docstring on `app` (the last added runs outermost)."""
    app.add_middleware(ComputeTimeoutMiddleware, seconds=settings.request_timeout_seconds)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        max_npz_bytes=settings.max_npz_body_bytes,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Accept", REQUEST_ID_HEADER, "X-API-Key"],
            expose_headers=[REQUEST_ID_HEADER],
        )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestObservabilityMiddleware, metrics=metrics)
    app.add_middleware(SendTimeoutMiddleware, seconds=settings.send_timeout_seconds)
