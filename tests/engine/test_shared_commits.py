"""A map's items share their commits: while one commit of the run is in flight, the items
that finish meanwhile go out together in the next, and each of them goes on only once its
own result is durable."""

from __future__ import annotations

from pathlib import Path

from cadenza import Context, RunStatus, drive, open_engine, workflow
from cadenza.journal import OpStatus, OpType
from cadenza.ports.run_store import Checkpoint, RunRecord


async def _payload(i: int) -> dict[str, int]:
    return {"i": i}


@workflow(name="test-shared-commits")
async def fan_out(ctx: Context, size: int) -> int:
    async def item(c: Context, i: int) -> dict[str, int]:
        return await c.step(_payload, i, name="item")  # type: ignore[no-any-return]

    result = await ctx.map(list(range(size)), item, max_concurrency=20)
    return result.success_count


async def test_map_items_share_commits(tmp_path: Path) -> None:
    engine = await open_engine(
        store=f"sqlite:///{tmp_path}/c.db", artifacts=f"file://{tmp_path}/a", secret=b"0" * 32
    )
    commits: list[Checkpoint] = []

    def committed(run: RunRecord, cp: Checkpoint) -> None:
        commits.append(cp)

    engine.subscribe(committed)
    try:
        run = await engine.start(fan_out, 200)
        done = await drive(engine, run.run_id)
        assert done.status == RunStatus.SUCCEEDED
        assert await engine.result(run.run_id) == 200
        journal = await engine.store.load_journal(run.run_id)
    finally:
        await engine.close()
    steps = [op for op in journal if op.type == OpType.STEP]
    assert len(steps) == 200 and all(op.status == OpStatus.SUCCEEDED for op in steps)
    # One commit per item would be 200; items finishing together share theirs.
    assert len(commits) <= 40, f"{len(commits)} commits for 200 items"
    # Every step result was committed before its item went on: no checkpoint holds an
    # item's end (its child context succeeding) without its step's result in it or before.
    seen: set[str] = set()
    for cp in commits:
        for op in cp.ops:
            if op.type == OpType.STEP and op.status == OpStatus.SUCCEEDED:
                seen.add(op.op_id.rsplit(".", 1)[0])
            if op.type == OpType.CONTEXT and op.status == OpStatus.SUCCEEDED:
                assert op.op_id in seen, f"item {op.op_id} ended before its step committed"
