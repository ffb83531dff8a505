"""docs/deploy.md is real: its workflow runs on two workers, its SQL runs on the store."""

from __future__ import annotations

import asyncio
import re
import types
import uuid
from pathlib import Path

import psycopg
import pytest

from cadenza import RunStatus
from cadenza.config import open_engine
from cadenza.engine.worker import Worker
from cadenza.history import HistoryEventType as H

pytestmark = pytest.mark.postgres

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
SECRET = b"deploy-docs-secret-0123456789abcdef"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


async def test_the_walkthrough_workflow_runs_across_two_workers(
    postgres_url: str, tmp_path: Path
) -> None:
    [source] = blocks("python")
    module = types.ModuleType("hello_cluster")
    exec(compile(source, str(DOC), "exec"), module.__dict__)
    url = f"{postgres_url}?schema=d_{uuid.uuid4().hex[:10]}"
    artifacts = f"file://{tmp_path / 'artifacts'}"
    engines = [
        await open_engine(store=url, artifacts=artifacts, secret=SECRET, owner=f"worker-{i}")
        for i in range(2)
    ]
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(Worker(e, concurrency=4, poll_interval=0.2).run(stop=stop))
        for e in engines
    ]
    try:
        run = await engines[0].start(module.hello_cluster, ["ada", "grace", "edsger"])
        for _ in range(300):
            if (await engines[0].store.get_run(run.run_id)).status.terminal:
                break
            await asyncio.sleep(0.1)
        assert await engines[0].result(run.run_id) == [
            "hello, ada",
            "hello, grace",
            "hello, edsger",
        ]
        history = await engines[0].store.history(run.run_id)
        owners = [e.details["worker"] for e in history if e.type == H.STEP_STARTED]
        assert len(owners) == 3 and set(owners) <= {"worker-0", "worker-1"}
        assert (await engines[0].store.get_run(run.run_id)).status == RunStatus.SUCCEEDED
    finally:
        stop.set()
        await asyncio.gather(*workers)
        for engine in engines:
            await engine.close()


async def test_every_monitoring_query_runs(postgres_url: str) -> None:
    from cadenza.adapters.postgres import PostgresRunStore

    store = PostgresRunStore.from_url(postgres_url)  # the default schema, as in the doc
    await store.open()
    await store.close()
    statements = [b for b in blocks("sql") if "CREATE ROLE" not in b]
    assert len(statements) >= 5
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        for sql in statements:
            if sql.lstrip().startswith("BEGIN"):  # the retention script, statement by statement
                for statement in filter(str.strip, sql.split(";")):
                    await conn.execute(statement)  # type: ignore[call-overload]
            else:
                await conn.execute(sql)  # type: ignore[call-overload]
