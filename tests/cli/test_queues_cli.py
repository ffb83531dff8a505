"""``cadenza queues list``: each queue's limits, depth and the age of its oldest runnable
run, read from the store the CLI is pointed at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cadenza.adapters.sqlite import SqliteRunStore
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.ports.run_store import Checkpoint, QueueConfig, RunRecord, RunStatus
from tests.cli.test_cli import Cli


async def _fill(cli: Cli) -> datetime:
    """Two runnable runs of ``billing`` (the older waiting 90 s), one held, one waiting
    for a timer, and limits on ``llm``, which has nothing open."""
    now = datetime.now(UTC)
    store = SqliteRunStore(cli.home / "cadenza.db")
    await store.open()
    try:

        def run(run_id: str, age: float, **changes: object) -> RunRecord:
            at = now - timedelta(seconds=age)
            record = RunRecord(run_id, "wf", "1", RunStatus.PENDING, "null", at, at)
            return record.evolve(queue="billing", **changes)

        for record in (
            run("r-old", 90),
            run("r-new", 5),
            run("r-held", 1),
            run("r-timer", 1),
        ):
            started = HistoryEvent(0, HistoryEventType.EXECUTION_STARTED, record.created_at)
            await store.create_run(record, started)
        await store.claim_runs(
            owner="w", now=now, lease_until=now + timedelta(minutes=5), limit=1, run_id="r-held"
        )
        (timer,) = await store.claim_runs(
            owner="w", now=now, lease_until=now + timedelta(minutes=5), limit=1, run_id="r-timer"
        )
        await store.commit(
            Checkpoint(
                "r-timer",
                "w",
                timer.lease_epoch,
                now,
                suspend=True,
                wake_at=now + timedelta(hours=1),
            )
        )
        await store.put_queue(QueueConfig("llm", concurrency=4))
    finally:
        await store.close()
    return now


async def test_queues_list_shows_depth_and_the_oldest_age(cli: Cli) -> None:
    await _fill(cli)

    listed = cli("queues", "list", "--json").json()

    by_name = {q["name"]: q for q in listed}
    assert sorted(by_name) == ["billing", "default", "llm"]
    billing = by_name["billing"]
    assert (billing["runnable"], billing["running"], billing["waiting"]) == (2, 1, 1)
    assert 90 <= billing["oldest_age_s"] < 150
    assert billing["oldest_due_at"] is not None
    assert by_name["llm"] == {
        "name": "llm",
        "concurrency": 4,
        "rate_limit": None,
        "rate_period_s": 1.0,
        "runnable": 0,
        "running": 0,
        "waiting": 0,
        "oldest_due_at": None,
        "oldest_age_s": 0.0,
    }

    text = cli("queues", "list").out
    header, *rows = [line.split() for line in text.splitlines() if line.strip()]
    assert header == ["QUEUE", "RUNNABLE", "RUNNING", "WAITING", "OLDEST", "LIMITS"]
    billing_row = next(r for r in rows if r[0] == "billing")
    assert billing_row[1:4] == ["2", "1", "1"]
    assert billing_row[4] == "2m"  # 90 s and a little more
    llm_row = next(r for r in rows if r[0] == "llm")
    assert llm_row[1:5] == ["0", "0", "0", "-"] and "at most 4 at once" in " ".join(llm_row)
