"""The service on PostgreSQL: the cluster shape's start → approve → complete flow."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from cadenza.adapters.postgres import PostgresRunStore
from cadenza.client import Client
from cadenza.security.api_keys import create_key
from cadenza.service import create_app
from cadenza.testing import TestEnvironment
from tests.contract.pg import fresh_database
from tests.service.conftest import settings
from tests.service.test_runs_api import ORDER

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


async def test_start_approve_complete_on_postgres(postgres_url: str) -> None:
    store = PostgresRunStore.from_url(f"{postgres_url}?schema=s_{uuid.uuid4().hex[:10]}")
    async with TestEnvironment(store=store) as env:
        client = Client(env.engine)
        app = create_app(client, settings=settings())
        _, raw = await create_key(
            env.engine, name="ops", tenant="acme", scopes=["admin"], now=env.engine.clock.now()
        )
        key = {"Authorization": f"Bearer {raw}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
            started = await http.post(
                "/api/v1/runs", json={"workflow": "svc-approve", "input": ORDER}, headers=key
            )
            run_id = started.json()["run_id"]
            await client.get_handle(run_id).drive()
            [wait] = (await http.get(f"/api/v1/runs/{run_id}/callbacks", headers=key)).json()
            done = await http.post(
                f"/api/v1/callbacks/{wait['token']}/succeed",
                json={"payload": {"approved": True}},
                headers=key,
            )
            assert done.status_code == 200
            await client.get_handle(run_id).drive()
            result = await http.get(f"/api/v1/runs/{run_id}/result", headers=key)
            assert result.json()["result"] == "A-1: 12.0 approved"
            listed = (await http.get("/api/v1/runs?q=svc-APPROVE", headers=key)).json()
            assert [r["tenant"] for r in listed["runs"]] == ["acme"]
            history = (await http.get(f"/api/v1/runs/{run_id}/history", headers=key)).json()
            actions = [e["details"]["action"] for e in history if e["type"] == "ActionRequested"]
            assert actions == ["start", "callback.succeed"]
        await client.close()
