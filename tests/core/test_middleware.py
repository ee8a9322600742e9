"""Request id, access log, metrics, readiness, security headers and CORS, in-process."""

import asyncio
import base64
import gc
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi.openapi.docs import get_swagger_ui_html
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, Router
from starlette.types import Message

from app.core.config import Settings
from app.core.logging import ACCESS_LOGGER, JsonFormatter
from app.core.metrics import HttpMetrics
from app.core.middleware import (
    SEND_CHUNK_BYTES,
    RequestObservabilityMiddleware,
    SecurityHeadersMiddleware,
    SendTimeoutMiddleware,
    client_gone_reason,
    html_content_security_policy,
)
from app.main import create_app
from tests.conftest import ClientFactory

SOFTMAX = {"logits": [[1.0, 2.0, 3.0]]}
SECRET = "sk-live-0123456789abcdef"


def access_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """The access-log lines captured so far, as their JSON objects."""
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == ACCESS_LOGGER]


# ---------------------------------------------------------------- request id


async def test_request_id_is_generated_when_absent(asgi_client: httpx.AsyncClient) -> None:
    first = await asgi_client.get("/healthz")
    second = await asgi_client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


@pytest.mark.parametrize("request_id", ["abc", "trace-1.2:3_x", "0" * 128])
async def test_valid_request_id_is_echoed(asgi_client: httpx.AsyncClient, request_id: str) -> None:
    response = await asgi_client.post(
        "/v1/softmax", json=SOFTMAX, headers={"X-Request-ID": request_id}
    )
    assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize("request_id", ["has space", "0" * 129, 'quote"d', "-leading", "é"])
async def test_unsafe_request_id_is_replaced(
    asgi_client: httpx.AsyncClient, request_id: str
) -> None:
    response = await asgi_client.get("/healthz", headers=[(b"X-Request-ID", request_id.encode())])
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


# ---------------------------------------------------------------- access log


async def test_one_access_log_line_per_request(
    asgi_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=ACCESS_LOGGER)
    body = json.dumps(SOFTMAX).encode()
    response = await asgi_client.post(
        "/v1/softmax?verbose=1",
        content=body,
        headers={"Content-Type": "application/json", "X-Request-ID": "log-test-1"},
    )
    (entry,) = access_records(caplog)
    assert entry["request_id"] == "log-test-1"
    assert entry["method"] == "POST"
    assert entry["path"] == "/v1/softmax"
    assert entry["route"] == "/v1/softmax"
    assert entry["status"] == response.status_code == 200
    assert entry["request_bytes"] == len(body)
    assert entry["response_bytes"] == len(response.content)
    assert isinstance(entry["duration_ms"], float)


@pytest.mark.parametrize(
    ("method", "path", "body", "settings"),
    [
        ("POST", "/v1/softmax", SOFTMAX, {}),
        ("POST", "/v1/softmax", {"logits": [[1.0, SECRET]]}, {}),
        ("POST", "/v1/cross-entropy", {"logits": [[1.0, 2.0]], "labels": [5]}, {}),
        ("POST", "/v1/softmax", {"logits": [[0.0] * 600]}, {"max_body_bytes": 1024}),
        ("GET", "/no/such/page", None, {}),
        ("GET", "/healthz", None, {}),
        ("POST", "/v1/softmax", SOFTMAX, {"api_keys": ["another-key-42"]}),
        ("POST", "/v1/softmax", SOFTMAX, {"api_keys": [SECRET]}),
    ],
)
async def test_secrets_stay_out_of_logs_and_error_bodies(
    make_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: object,
    settings: dict[str, object],
) -> None:
    """API keys, bearer tokens, query parameters and bodies are never logged or echoed."""
    caplog.set_level("DEBUG")
    async with make_client(**settings) as client:
        response = await client.request(
            method,
            path,
            params={"api_key": SECRET},
            json=body,
            headers={"X-API-Key": SECRET, "Authorization": f"Bearer {SECRET}"},
        )
    formatter = JsonFormatter()
    logged = "\n".join(formatter.format(r) for r in caplog.records if r.name != "httpx")
    assert any(r.name == ACCESS_LOGGER for r in caplog.records)
    assert SECRET not in logged
    assert SECRET not in response.text
    assert SECRET not in str(response.headers)


# ---------------------------------------------------------------- metrics


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Values of the samples called `name`, keyed by their sorted labels."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_metrics_count_requests_by_route_template_and_status(
    asgi_client: httpx.AsyncClient,
) -> None:
    bodies = [json.dumps({"logits": [[0.0] * c]}).encode() for c in (2, 3, 40)]
    for body in bodies:
        await asgi_client.post(
            "/v1/softmax", content=body, headers={"Content-Type": "application/json"}
        )
    await asgi_client.post("/v1/softmax", json={"logits": [[1.0]]})
    await asgi_client.get("/no/such/page-7f3a")
    text = (await asgi_client.get("/metrics")).text

    def key(route: str, status: str, method: str = "POST") -> tuple[tuple[str, str], ...]:
        return (("method", method), ("route", route), ("status", status))

    counts = samples(text, "gradcheck_http_requests_total")
    assert counts[key("/v1/softmax", "200")] == 3
    assert counts[key("/v1/softmax", "422")] == 1
    assert counts[key("<unmatched>", "404", "GET")] == 1
    assert "page-7f3a" not in text
    sizes = samples(text, "gradcheck_http_request_size_bytes_sum")
    assert sizes[key("/v1/softmax", "200")] == sum(len(b) for b in bodies)
    latency = samples(text, "gradcheck_http_request_duration_seconds_count")
    assert latency[key("/v1/softmax", "200")] == 3
    responses = samples(text, "gradcheck_http_response_size_bytes_sum")
    assert responses[key("/v1/softmax", "200")] > 0
    in_progress = samples(text, "gradcheck_http_requests_in_progress")
    assert in_progress[(("method", "POST"),)] == 0
    assert in_progress[(("method", "GET"),)] == 1  # the /metrics request itself


# ---------------------------------------------------------------- readiness


async def test_readyz_after_startup(asgi_client: httpx.AsyncClient) -> None:
    response = await asgi_client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_startup_freezes_what_exists_out_of_the_garbage_collector() -> None:
    """Full collections then skip the app and everything imported (case 3 of `make bench`)."""
    app = create_app(Settings())

    def collector_tracks_app() -> bool:
        return any(tracked is app for tracked in gc.get_objects())

    assert collector_tracks_app()
    async with LifespanManager(app):
        assert not collector_tracks_app()
        assert gc.get_freeze_count() > 0


async def test_readyz_is_503_before_startup() -> None:
    """Without the lifespan's startup (self-test not run) the app is alive but not ready."""
    transport = httpx.ASGITransport(app=create_app(Settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        not_ready = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert not_ready.status_code == 503
    assert "Not ready" in not_ready.json()["detail"]
    assert alive.status_code == 200


# ---------------------------------------------------------------- security headers


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
async def test_html_pages_get_a_content_security_policy(
    asgi_client: httpx.AsyncClient, path: str
) -> None:
    response = await asgi_client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "object-src 'none'" in policy
    assert "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";", 1)[0]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_json_responses_get_nosniff_but_no_page_policy(
    asgi_client: httpx.AsyncClient,
) -> None:
    response = await asgi_client.post("/v1/softmax", json=SOFTMAX)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in response.headers


class InlineScripts(HTMLParser):
    """Collects the text of every <script> without a src attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self._inline = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._inline = tag == "script" and "src" not in dict(attrs)
        if self._inline:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._inline = False

    def handle_data(self, data: str) -> None:
        if self._inline:
            self.scripts[-1] += data


def test_policy_allows_exactly_the_pages_own_inline_scripts() -> None:
    """FastAPI's stock Swagger UI page boots from an inline script: its hash is allowed."""
    page = bytes(get_swagger_ui_html(openapi_url="/openapi.json", title="t").body)
    parser = InlineScripts()
    parser.feed(page.decode())
    (script,) = parser.scripts
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    script_src = html_content_security_policy(page).split("script-src", 1)[1].split(";", 1)[0]
    assert script_src.split() == ["'self'", f"'sha256-{digest}'"]


async def test_streamed_html_is_hashed_whole_and_delivered_intact() -> None:
    chunks = [b"<html><body><scr", b"ipt>boot()</script>", b"</body></html>"]

    async def page(_: object) -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return StreamingResponse(parts(), media_type="text/html")

    app = SecurityHeadersMiddleware(Starlette(routes=[Route("/", page)]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/")
    digest = base64.b64encode(hashlib.sha256(b"boot()").digest()).decode()
    assert response.content == b"".join(chunks)
    assert f"'sha256-{digest}'" in response.headers["content-security-policy"]


# ---------------------------------------------------------------- CORS

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


async def test_cors_is_closed_by_default(asgi_client: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    preflight = await asgi_client.options("/v1/softmax", headers={**origin, **PREFLIGHT})
    simple = await asgi_client.post("/v1/softmax", json=SOFTMAX, headers=origin)
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in simple.headers


async def test_cors_allows_only_configured_origins(make_client: ClientFactory) -> None:
    allowed, other = "https://course.example.org", "https://elsewhere.example"
    async with make_client(cors_origins=[allowed]) as client:
        preflight = await client.options("/v1/softmax", headers={"Origin": allowed, **PREFLIGHT})
        simple = await client.post("/v1/softmax", json=SOFTMAX, headers={"Origin": allowed})
        refused = await client.options("/v1/softmax", headers={"Origin": other, **PREFLIGHT})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == allowed
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert simple.headers["access-control-allow-origin"] == allowed
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in refused.headers


def test_cors_origins_read_comma_separated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRADCHECK_CORS_ORIGINS", "https://a.example, https://b.example,")
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]


# ---------------------------------------------------------------- clients that go away


def echo_body_app() -> Router:
    """An app whose route reads the whole body (as every POST route does); a router, as in
    FastAPI's stack below the user middleware (Starlette's 500 handler sits outside it)."""

    async def echo(request: Request) -> Response:
        return Response(await request.body())

    return Router(routes=[Route("/echo", echo, methods=["POST"])])


def http_scope(path: str = "/echo", method: str = "POST") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def test_a_client_disconnecting_mid_body_is_a_499_logged_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Starlette raises ClientDisconnect in the route: not a 500, no traceback, no error."""
    caplog.set_level("DEBUG")
    metrics = HttpMetrics()
    app = RequestObservabilityMiddleware(echo_body_app(), metrics)
    messages: Iterator[Message] = iter(
        [
            {"type": "http.request", "body": b'{"logits": [', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[Message] = []

    async def receive() -> Message:
        return next(messages)

    async def send(message: Message) -> None:
        sent.append(message)

    await app(http_scope(), receive, send)  # does not raise
    assert sent == []
    counts = samples(generate_latest(metrics.registry).decode(), "gradcheck_http_requests_total")
    assert set(counts) == {(("method", "POST"), ("route", "/echo"), ("status", "499"))}
    (entry,) = access_records(caplog)
    assert entry["status"] == 499
    assert entry["level"] == "INFO"
    assert "disconnected" in str(entry["message"])
    assert all(record.levelno < logging.WARNING for record in caplog.records)
    assert all(record.exc_info is None for record in caplog.records)


class _Cycle:
    """uvicorn's request cycle as the middleware sees it: `receive` is its bound method, and a
    client that left during compute leaves it `disconnected` with no response written."""

    def __init__(self) -> None:
        self.disconnected = False
        self.response_complete = False
        self.messages: Iterator[Message] = iter([{"type": "http.request", "body": b"{}"}])

    async def receive(self) -> Message:
        message = next(self.messages)
        self.disconnected = True  # the client goes away while the route computes
        return message


async def test_a_client_disconnecting_during_compute_is_a_499(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    metrics = HttpMetrics()
    app = RequestObservabilityMiddleware(echo_body_app(), metrics)
    cycle = _Cycle()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)  # uvicorn drops these silently once disconnected

    await app(http_scope(), cycle.receive, send)
    assert sent[0]["status"] == 200  # what the app answered, never written
    counts = samples(generate_latest(metrics.registry).decode(), "gradcheck_http_requests_total")
    assert set(counts) == {(("method", "POST"), ("route", "/echo"), ("status", "499"))}
    (entry,) = access_records(caplog)
    assert entry["status"] == 499
    assert "before the response was sent" in str(entry["message"])
    cycle = _Cycle()
    cycle.response_complete = True  # a client that read its response, then left: 200
    await RequestObservabilityMiddleware(echo_body_app(), metrics)(
        http_scope(), cycle.receive, send
    )
    assert access_records(caplog)[-1]["status"] == 200


async def test_other_errors_still_propagate_as_500() -> None:
    async def broken(_: Request) -> Response:
        raise RuntimeError("bug")

    metrics = HttpMetrics()
    app = RequestObservabilityMiddleware(Router(routes=[Route("/echo", broken)]), metrics)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Message) -> None:
        pass

    with pytest.raises(RuntimeError, match="bug"):
        await app(http_scope(method="GET"), receive, send)
    counts = samples(generate_latest(metrics.registry).decode(), "gradcheck_http_requests_total")
    assert set(counts) == {(("method", "GET"), ("route", "/echo"), ("status", "500"))}


def test_client_gone_reason_sees_through_exception_groups() -> None:
    assert client_gone_reason(ClientDisconnect()) is not None
    assert client_gone_reason(BaseExceptionGroup("g", [ClientDisconnect()])) is not None
    assert client_gone_reason(ExceptionGroup("g", [ClientDisconnect(), ValueError()])) is None
    assert client_gone_reason(ValueError()) is None


class RecordingTransport(asyncio.Transport):
    """Stands in for uvicorn's transport: records abort()."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class Cycle:
    """Stands in for uvicorn's RequestResponseCycle: `receive` is its bound method."""

    def __init__(self) -> None:
        self.transport = RecordingTransport()

    async def receive(self) -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}


def big_body_app(size: int) -> Router:
    async def big(_: Request) -> Response:
        return Response(b"x" * size, media_type="application/octet-stream")

    return Router(routes=[Route("/big", big)])


async def test_a_response_not_read_in_time_aborts_the_connection_and_is_a_499(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    metrics = HttpMetrics()
    inner = RequestObservabilityMiddleware(big_body_app(3 * SEND_CHUNK_BYTES), metrics)
    app = SendTimeoutMiddleware(inner, seconds=0.05)
    cycle = Cycle()
    sent: list[Message] = []

    async def send(message: Message) -> None:  # the client reads the head and one piece only
        if len(sent) >= 2:
            await asyncio.Event().wait()
        sent.append(message)

    async with asyncio.timeout(5):
        await app(http_scope("/big", "GET"), cycle.receive, send)
    assert cycle.transport.aborted
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert len(sent[1]["body"]) == SEND_CHUNK_BYTES
    counts = samples(generate_latest(metrics.registry).decode(), "gradcheck_http_requests_total")
    assert set(counts) == {(("method", "GET"), ("route", "/big"), ("status", "499"))}
    (entry,) = access_records(caplog)
    assert entry["level"] == "INFO"
    assert "did not read" in str(entry["message"])


@pytest.mark.parametrize("size", [0, 10, SEND_CHUNK_BYTES, 2 * SEND_CHUNK_BYTES + 5])
async def test_bodies_are_sent_in_pieces_intact(size: int) -> None:
    app = SendTimeoutMiddleware(big_body_app(size), seconds=5)
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(http_scope("/big", "GET"), Cycle().receive, send)
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in bodies) == b"x" * size
    assert all(len(m["body"]) <= SEND_CHUNK_BYTES for m in bodies)
    assert [m.get("more_body", False) for m in bodies] == [True] * (len(bodies) - 1) + [False]
    assert len(bodies) == max(1, -(-size // SEND_CHUNK_BYTES))


async def test_the_app_stack_has_the_send_timeout_outermost(
    asgi_client: httpx.AsyncClient,
) -> None:
    """Outermost, so that `receive` is the server's own (it leads to the transport)."""
    response = await asgi_client.get("/healthz")
    assert response.status_code == 200
    app = create_app(Settings(send_timeout_seconds=7))
    outermost = app.user_middleware[0]
    assert outermost.cls is SendTimeoutMiddleware  # type: ignore[comparison-overlap]  # starlette types cls as a factory protocol, not the class
    assert outermost.kwargs == {"seconds": 7}
