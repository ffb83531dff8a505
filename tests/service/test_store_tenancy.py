"""What the service needs of every run store: tenants, filtered and paged listings,
audit appends, API keys (SQLite, PostgreSQL, in-memory)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cadenza.adapters.sqlite import SqliteRunStore
from cadenza.errors import RunNotFound
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.ports.run_store import ApiKeyRecord, Rule, RunPage, RunRecord, RunStatus, RunStore
from cadenza.testing import InMemoryRunStore
from tests.contract.pg import fresh_database

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    if request.param == "memory":
        opened: RunStore = InMemoryRunStore()
    elif request.param == "sqlite":
        opened = SqliteRunStore(tmp_path / "cadenza.db")
    else:
        from cadenza.adapters.postgres import PostgresRunStore

        url = request.getfixturevalue("postgres_url")
        opened = PostgresRunStore.from_url(f"{url}?schema=t_{uuid.uuid4().hex[:10]}")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def run(run_id: str, minute: int, *, tenant: str = "default", workflow: str = "wf") -> RunRecord:
    at = T0 + timedelta(minutes=minute)
    return RunRecord(
        run_id=run_id,
        workflow=workflow,
        version="1",
        status=RunStatus.PENDING,
        input=f'{{"customer": "{run_id.upper()}-Ada"}}',
        created_at=at,
        updated_at=at,
        tenant=tenant,
    )


def started(minute: int = 0) -> HistoryEvent:
    return HistoryEvent(0, HistoryEventType.EXECUTION_STARTED, T0 + timedelta(minutes=minute))


async def test_runs_keep_their_tenant_and_list_by_it(store: RunStore) -> None:
    await store.create_run(run("a1", 1, tenant="acme"), started())
    await store.create_run(run("g1", 2, tenant="globex"), started())
    await store.create_run(run("d1", 3), started())
    assert (await store.get_run("a1")).tenant == "acme"
    assert [r.run_id for r in await store.list_runs(tenant="acme")] == ["a1"]
    assert [r.run_id for r in await store.list_runs(tenant="default")] == ["d1"]
    assert len(await store.list_runs()) == 3


async def test_time_range_text_and_cursor(store: RunStore) -> None:
    for minute in range(6):
        await store.create_run(run(f"r{minute}", minute, workflow=f"wf{minute % 2}"), started())
    window = await store.list_runs(
        created_after=T0 + timedelta(minutes=1), created_before=T0 + timedelta(minutes=4)
    )
    assert [r.run_id for r in window] == ["r3", "r2", "r1"]
    assert [r.run_id for r in await store.list_runs(text="R4-ADA")] == ["r4"]
    assert [r.run_id for r in await store.list_runs(text="WF1")] == ["r5", "r3", "r1"]
    first = await store.list_runs(limit=2)
    after = RunPage(first[-1].created_at, first[-1].run_id)
    second = await store.list_runs(limit=2, after=after)
    assert [r.run_id for r in [*first, *second]] == ["r5", "r4", "r3", "r2"]
    # Runs created in the same instant are ordered, and paged, by id.
    await store.create_run(run("s-b", 10), started())
    await store.create_run(run("s-a", 10), started())
    top = await store.list_runs(limit=1)
    rest = await store.list_runs(limit=1, after=RunPage(top[0].created_at, top[0].run_id))
    assert [top[0].run_id, rest[0].run_id] == ["s-b", "s-a"]


async def test_append_history_adds_to_the_end(store: RunStore) -> None:
    await store.create_run(run("a1", 1), started())
    audit = HistoryEvent(
        0, HistoryEventType.ACTION_REQUESTED, T0, details={"action": "cancel", "by": {"k": 1}}
    )
    await store.append_history("a1", [audit, audit])
    history = await store.history("a1")
    assert [e.seq for e in history] == [1, 2, 3]
    assert history[-1].type == HistoryEventType.ACTION_REQUESTED
    assert history[-1].details == {"action": "cancel", "by": {"k": 1}}
    with pytest.raises(RunNotFound):
        await store.append_history("nope", [audit])


async def test_rules_keep_their_tenant(store: RunStore) -> None:
    await store.put_rule(Rule("acme/r", {"source": ["x"]}, "start_workflow", tenant="acme"))
    await store.put_rule(Rule("r", {"source": ["x"]}, "start_workflow"))
    assert {r.name: r.tenant for r in await store.list_rules()} == {
        "acme/r": "acme",
        "r": "default",
    }


async def test_api_keys(store: RunStore) -> None:
    key = ApiKeyRecord("k1", "ci", "acme", ("read", "start"), "ab" * 32, T0)
    await store.put_api_key(key)
    await store.put_api_key(ApiKeyRecord("k0", "ops", "default", ("admin",), "cd" * 32, T0))
    assert await store.get_api_key("k1") == key
    assert await store.get_api_key("nope") is None
    assert [k.key_id for k in await store.list_api_keys()] == ["k0", "k1"]
    assert await store.revoke_api_key("k1", now=T0 + timedelta(hours=1))
    assert not await store.revoke_api_key("k1", now=T0 + timedelta(hours=2))
    assert not await store.revoke_api_key("nope", now=T0)
    revoked = await store.get_api_key("k1")
    assert revoked is not None and revoked.revoked_at == T0 + timedelta(hours=1)


def test_sqlite_runs_from_before_tenants_belong_to_default(tmp_path: Path) -> None:
    """A store created by an older cadenza gets the tenant column, "default" for all."""
    from cadenza.adapters.sqlite._schema import MIGRATIONS
    from cadenza.adapters.sqlite._store import _migrate

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    tenants = next(i for i, m in enumerate(MIGRATIONS) if any("tenant" in s for s in m))
    for version, statements in enumerate(MIGRATIONS[:tenants], start=1):
        for statement in statements:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?)", (version,))
    conn.execute(
        "INSERT INTO runs (run_id, workflow, version, status, input, created_at, updated_at)"
        " VALUES ('old', 'wf', '1', 'SUCCEEDED', 'null', 0, 0)"
    )
    conn.commit()
    conn.row_factory = sqlite3.Row
    _migrate(conn)
    assert conn.execute("SELECT tenant FROM runs").fetchone()["tenant"] == "default"
    conn.close()
