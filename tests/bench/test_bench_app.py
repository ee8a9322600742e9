"""The reference endpoints of the small-request case (bench/app.py) do what they stand for."""

from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager

from bench import cases
from bench.app import CONSTANT_BODY, app


@pytest.fixture
async def bench_client() -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def test_no_numerics_endpoint_answers_exactly_what_the_service_answers(
    bench_client: httpx.AsyncClient,
) -> None:
    """Its ratio is a ceiling of the service's only if it sends the same bytes."""
    body = orjson.dumps(cases.problem(8, 10, seed=3), option=orjson.OPT_SERIALIZE_NUMPY)
    service = await bench_client.post(
        cases.CROSS_ENTROPY_PATH, content=body, headers=cases.JSON_HEADERS
    )
    for _ in range(2):  # the first computes the report, the second reuses it
        ceiling = await bench_client.post(
            cases.NO_NUMERICS_PATH, content=body, headers=cases.JSON_HEADERS
        )
        assert ceiling.status_code == service.status_code == 200
        assert ceiling.content == service.content


async def test_no_numerics_endpoint_refuses_bad_input_as_the_service_does(
    bench_client: httpx.AsyncClient,
) -> None:
    body = b'{"logits": [[1.0, 2.0], [3.0]], "labels": [0, 1]}'
    service = await bench_client.post(
        cases.CROSS_ENTROPY_PATH, content=body, headers=cases.JSON_HEADERS
    )
    ceiling = await bench_client.post(
        cases.NO_NUMERICS_PATH, content=body, headers=cases.JSON_HEADERS
    )
    assert ceiling.status_code == service.status_code == 422
    assert ceiling.json() == service.json()


@pytest.mark.parametrize("path", [cases.CONSTANT_PATH, cases.HOP_PATH])
async def test_bare_endpoints_return_the_constant(
    bench_client: httpx.AsyncClient, path: str
) -> None:
    response = await bench_client.post(path, content=b"{}", headers=cases.JSON_HEADERS)
    assert response.status_code == 200
    assert response.content == CONSTANT_BODY
