"""Body size, rate limit per key, CORS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cadenza.service._limits import RateLimiter
from cadenza.service._problems import Problem
from cadenza.testing import TestEnvironment
from tests.service.conftest import Service, make_service
from tests.service.test_runs_api import ORDER, problem


@pytest.fixture
async def env() -> AsyncIterator[TestEnvironment]:
    async with TestEnvironment() as environment:
        yield environment


async def test_a_body_over_the_limit_is_413(env: TestEnvironment) -> None:
    service = await make_service(env, max_body_bytes=2_000)
    key = await service.key()
    big = {"workflow": "svc-price", "input": {**ORDER, "order_id": "x" * 5_000}}
    response = await service.http.post("/api/v1/runs", json=big, headers=key)
    assert problem(response, 413, 2)["error"] == "PayloadTooLarge"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(10):
            yield b" " * 500

    streamed = await service.http.post(
        "/api/v1/events", content=chunks(), headers={**key, "content-type": "application/json"}
    )
    problem(streamed, 413, 2)
    small = await service.http.post(
        "/api/v1/runs", json={"workflow": "svc-price", "input": ORDER}, headers=key
    )
    assert small.status_code == 201
    assert (await service.http.get("/api/v1/runs", headers=key)).json()["runs"]
    await service.http.aclose()


async def test_each_key_has_its_own_rate(env: TestEnvironment) -> None:
    service = await make_service(env, rate_limit=3, rate_period=60.0)
    busy = await service.key(name="busy")
    calm = await service.key(name="calm")
    for _ in range(3):
        assert (await service.http.get("/api/v1/runs", headers=busy)).status_code == 200
    limited = await service.http.get("/api/v1/runs", headers=busy)
    problem(limited, 429, 6)
    assert int(limited.headers["retry-after"]) == 20  # one token per 20 s
    assert (await service.http.get("/api/v1/runs", headers=calm)).status_code == 200
    await service.http.aclose()


def test_the_bucket_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(2, 10.0, clock=lambda: now[0])
    limiter.check("k")
    limiter.check("k")
    with pytest.raises(Problem) as refused:
        limiter.check("k")
    assert refused.value.headers["Retry-After"] == "5"
    now[0] = 5.0
    limiter.check("k")


async def test_cors_is_off_unless_origins_are_given(env: TestEnvironment) -> None:
    closed = await make_service(env)
    preflight = {
        "Origin": "https://ops.example.com",
        "Access-Control-Request-Method": "GET",
    }
    response = await closed.http.options("/api/v1/runs", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    opened: Service = await make_service(env, cors_origins=("https://ops.example.com",))
    response = await opened.http.options("/api/v1/runs", headers=preflight)
    assert response.headers["access-control-allow-origin"] == "https://ops.example.com"
    other = await opened.http.options(
        "/api/v1/runs", headers={**preflight, "Origin": "https://evil.example.com"}
    )
    assert "access-control-allow-origin" not in other.headers
    await closed.http.aclose()
    await opened.http.aclose()
