"""A service over a fresh store (SQLite and in-memory), and keys to call it with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI

from cadenza.client import Client
from cadenza.security.api_keys import create_key
from cadenza.service import ServiceSettings, create_app
from cadenza.testing import InMemoryRunStore, TestEnvironment
from tests.service import service_workflows  # noqa: F401 - registers the workflows


@dataclass
class Service:
    client: Client
    http: httpx.AsyncClient
    app: FastAPI

    async def key(
        self, scopes: Sequence[str] = ("admin",), *, tenant: str = "default", name: str = "test"
    ) -> dict[str, str]:
        """Headers with a new key of ``tenant`` holding ``scopes``."""
        _, key = await create_key(
            self.client.engine,
            name=name,
            tenant=tenant,
            scopes=scopes,
            now=self.client.engine.clock.now(),
        )
        return {"Authorization": f"Bearer {key}"}

    async def drive(self, run_id: str) -> None:
        """Execute the run here, as the service's worker would."""
        await self.client.get_handle(run_id).drive()


def settings(**changes: object) -> ServiceSettings:
    return ServiceSettings(**{"rate_limit": None, **changes})  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "memory"])
async def service(request: pytest.FixtureRequest) -> AsyncIterator[Service]:
    store = InMemoryRunStore() if request.param == "memory" else None
    async with TestEnvironment(store=store) as env:
        client = Client(env.engine)
        app = create_app(client, settings=getattr(request, "service_settings", settings()))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
            yield Service(client, http, app)
        await client.close()


async def make_service(env: TestEnvironment, **changes: object) -> Service:
    client = Client(env.engine)
    app = create_app(client, settings=settings(**changes))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc")
    return Service(client, http, app)
