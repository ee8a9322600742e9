"""Request id, access log, metrics, readiness, security headers and CORS, in-process."""

import base64
import gc
import hashlib
import json
import re
from html.parser import HTMLParser

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi.openapi.docs import get_swagger_ui_html
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

from app.core.config import Settings
from app.core.logging import ACCESS_LOGGER, JsonFormatter
from app.core.middleware import SecurityHeadersMiddleware, html_content_security_policy
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
    response = await asgi_client.get("/healthz", headers={"X-Request-ID": request_id.encode()})
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
        async def parts():  # type: ignore[no-untyped-def]
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
