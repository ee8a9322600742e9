"""Fixtures: the app in-process (httpx + ASGITransport) and a live uvicorn on 127.0.0.1.

Every test that starts a live server carries the `live` marker: collection stops with a usage
error naming any test that uses a live-server fixture (LIVE_FIXTURES, or the `live` parameter
of `client`) without it, and `start_uvicorn` refuses to start a server for an unmarked test.
"""

import os
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.core.config import Settings
from app.main import create_app
from tests.helpers import RUNNING, free_port, start_uvicorn

pytest_plugins = ["pytester"]  # tests/test_markers.py runs pytest on probe files

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]

LIVE_FIXTURES = frozenset({"live_url", "start_server"})
"""Fixtures that start (or reach) a live server: a test using one must be marked `live`."""


def unmarked_live_tests(items: Sequence[pytest.Item]) -> list[str]:
    """The ids of the tests that use a live-server fixture but lack the `live` marker."""
    return [
        item.nodeid
        for item in items
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("live") is None
    ]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stop before running anything if a test that starts a live server is not marked `live`
    (before `-m` deselects: a wrongly marked test is found whatever is selected)."""
    if unmarked := unmarked_live_tests(items):
        raise pytest.UsageError(
            "tests that start a live server must carry @pytest.mark.live (or a module-level "
            "pytestmark): " + ", ".join(unmarked)
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Remember the running test for `start_uvicorn`'s and `require_module`'s marker checks."""
    RUNNING.append(item)
    try:
        return (yield)
    finally:
        RUNNING.remove(item)


@asynccontextmanager
async def _asgi_client(**settings: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(**settings))  # type: ignore[arg-type]
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
def make_client() -> ClientFactory:
    """Build an in-process client of an app with the given settings overrides."""
    return _asgi_client


@pytest.fixture
async def asgi_client() -> AsyncIterator[httpx.AsyncClient]:
    """The app with default settings, in-process."""
    async with _asgi_client() as client:
        yield client


@pytest.fixture(scope="session")
def live_url() -> Iterator[str]:
    """Base URL of a live server for the whole session: a uvicorn started on 127.0.0.1, or the
    server at GRADCHECK_BASE_URL (the Docker tests point it at the running container)."""
    if base_url := os.environ.get("GRADCHECK_BASE_URL"):
        yield base_url
        return
    port = free_port()
    process = start_uvicorn(port)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(params=["asgi", pytest.param("live", marks=pytest.mark.live)])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """The API both in-process and through a live uvicorn on 127.0.0.1."""
    if request.param == "asgi":
        async with _asgi_client() as asgi:
            yield asgi
    else:
        url = request.getfixturevalue("live_url")
        async with httpx.AsyncClient(base_url=url, timeout=60) as live:
            yield live
