"""API keys on every /v1 endpoint, and the secret that signs problem ids."""

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.api.security import MISSING_KEY, WRONG_KEY
from app.core.config import Settings
from app.main import create_app

KEYS = ["course-key-0123456789abcdef", "second-key-fedcba9876543210"]
WRONG = "wrong-key-but-same-length-xx"
SECRET = "signing-secret-0123456789abcdefghij"


@pytest.fixture
def locked_app(caplog: pytest.LogCaptureFixture) -> FastAPI:
    caplog.set_level(logging.INFO)
    return create_app(Settings(api_keys=KEYS, secret_key=SECRET))


@pytest.fixture
async def locked(locked_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(locked_app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def v1_operations(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    """(method, path) of every documented operation under /v1."""
    schema = (await client.get("/openapi.json")).json()
    return [
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if path.startswith("/v1")
        for method in operations
    ]


async def test_every_v1_route_needs_a_key(locked: httpx.AsyncClient) -> None:
    routes = await v1_operations(locked)
    paths = {path for _, path in routes}
    assert {
        "/v1/softmax",
        "/v1/cross-entropy",
        "/v1/problems",
        "/v1/grade",
        "/v1/grade/batch",
    } <= paths
    for method, path in routes:
        missing = await locked.request(method, path, json={})
        assert missing.status_code == 401, path
        assert missing.json() == {"detail": MISSING_KEY}
        assert missing.headers["www-authenticate"] == "APIKey"
        wrong = await locked.request(method, path, json={}, headers={"X-API-Key": WRONG})
        assert wrong.status_code == 401, path
        assert wrong.json() == {"detail": WRONG_KEY}
        for key in KEYS:
            allowed = await locked.request(method, path, json={}, headers={"X-API-Key": key})
            assert allowed.status_code != 401, path


async def test_keys_open_the_endpoints(locked: httpx.AsyncClient) -> None:
    body = {"logits": [[1.0, 2.0]], "include": ["probabilities"]}
    for key in KEYS:
        response = await locked.post("/v1/softmax", json=body, headers={"X-API-Key": key})
        assert response.status_code == 200
    problem = await locked.post("/v1/problems", json={"seed": 1}, headers={"X-API-Key": KEYS[1]})
    assert problem.status_code == 200


async def test_health_and_docs_stay_open(locked: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await locked.get(path)).status_code == 200, path


async def test_an_empty_key_header_is_a_missing_key(locked: httpx.AsyncClient) -> None:
    response = await locked.post("/v1/softmax", json={}, headers={"X-API-Key": ""})
    assert response.status_code == 401
    assert response.json() == {"detail": MISSING_KEY}


async def test_swagger_ui_gets_the_scheme(locked: httpx.AsyncClient) -> None:
    schema = (await locked.get("/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["APIKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "One of the keys in GRADCHECK_API_KEYS (needed only when that is set).",
    }
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            needs_key = operation.get("security") == [{"APIKey": []}]
            assert needs_key == path.startswith("/v1"), path


async def test_keys_never_reach_logs_or_bodies(
    locked: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    responses = [
        await locked.post("/v1/softmax", json={"logits": [[1.0, 2.0]]}, headers={"X-API-Key": k})
        for k in [*KEYS, WRONG]
    ]
    assert [r.status_code for r in responses] == [200, 200, 401]
    logged = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)
    assert "/v1/softmax" in logged  # the access log did record the requests
    for secret in [*KEYS, WRONG, SECRET]:
        assert secret not in logged
        assert all(secret not in r.text for r in responses)
    started = "\n".join(record.getMessage() for record in caplog.get_records("setup"))
    assert "API keys required on the /v1 endpoints (2 key(s) configured)" in started


def test_without_keys_the_service_is_open_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    create_app(Settings())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("GRADCHECK_API_KEYS is not set" in message for message in warnings)


async def test_without_keys_v1_answers_without_one(asgi_client: httpx.AsyncClient) -> None:
    response = await asgi_client.post("/v1/softmax", json={"logits": [[1.0, 2.0]]})
    assert response.status_code == 200


def test_keys_and_secret_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADCHECK_API_KEYS", f" {KEYS[0]} ,{KEYS[1]},, ")
    monkeypatch.setenv("GRADCHECK_SECRET_KEY", SECRET)
    settings = Settings()
    assert [key.get_secret_value() for key in settings.api_keys] == KEYS
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == SECRET
    for secret in [*KEYS, SECRET]:
        assert secret not in repr(settings)


def test_without_a_secret_each_process_makes_one(caplog: pytest.LogCaptureFixture) -> None:
    first, second = create_app(Settings()), create_app(Settings())
    assert len(first.state.signing_key) == 32
    assert first.state.signing_key != second.state.signing_key
    assert "GRADCHECK_SECRET_KEY is not set" in caplog.text
    configured = create_app(Settings(secret_key=SECRET))
    assert configured.state.signing_key == SECRET.encode()


def test_a_short_secret_is_warned_about_without_showing_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    create_app(Settings(secret_key="short-secret"))
    assert "shorter than 32 characters" in caplog.text
    assert "short-secret" not in caplog.text
