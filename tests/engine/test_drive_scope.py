"""What ``drive`` — and so ``cadenza run`` — executes: the run it started and the runs that
run causes (a child it invokes, a run a rule starts from its event), never other runnable
runs in the store. Those stay exactly as they were, for a worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from cadenza import Event, RunStatus, drive, open_engine
from cadenza.engine.engine import Engine
from cadenza.testing import TestEnvironment
from tests.engine.scope_workflows import SHIP_ORDERS, bystander, root, sleeper

REPO_ROOT = Path(__file__).resolve().parents[2]
CADENZA = str(Path(sys.executable).with_name("cadenza"))


async def seed(engine: Engine) -> list[str]:
    """Runnable runs that have nothing to do with the run under test, and a rule."""
    await engine.store.put_rule(SHIP_ORDERS)
    waiting = await engine.start(bystander, 1)  # another workflow's PENDING run
    napping = await engine.start(sleeper)
    napping = await drive(engine, napping.run_id, linger=timedelta(0))
    assert napping.status == RunStatus.SUSPENDED and napping.wake_at is not None
    # An event of another trace: the relay delivers it, the run it starts is not ours.
    elsewhere = Event.new("order.placed", {"order": 99}, source="shop", trace_id="elsewhere")
    await engine.publish([elsewhere.to_dict()])
    await asyncio.sleep(0.1)  # the sleeper's wake time passes: it is due now
    return [waiting.run_id, napping.run_id]


async def snapshot(engine: Engine, run_id: str) -> dict[str, Any]:
    run = await engine.store.get_run(run_id)
    return {
        "status": run.status,
        "epoch": run.lease_epoch,
        "owner": run.lease_owner,
        "journal": sorted((op.op_id, op.status) for op in await engine.store.load_journal(run_id)),
        "history": [e.type for e in await engine.store.history(run_id)],
    }


async def check_scope(engine: Engine, run_id: str, others: list[str]) -> None:
    run = await engine.store.get_run(run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert await engine.result(run_id) == 42
    [child] = await engine.store.list_runs(parent_run_id=run_id)
    assert child.status == RunStatus.SUCCEEDED and child.trace_id == run.trace_id
    shippers = await engine.store.list_runs(workflow="t-scope-shipper")
    [mine] = [s for s in shippers if s.trace_id == run.trace_id]
    assert mine.status == RunStatus.SUCCEEDED
    assert await engine.result(mine.run_id) == "shipped 21"
    [theirs] = [s for s in shippers if s.trace_id == "elsewhere"]
    assert theirs.status == RunStatus.PENDING and theirs.lease_epoch == 0
    others.append(theirs.run_id)


async def test_drive_executes_its_run_and_what_it_causes_and_nothing_else(
    env: TestEnvironment,
) -> None:
    engine = env.engine
    others = await seed(engine)
    before = {run_id: await snapshot(engine, run_id) for run_id in others}

    run = await env.run(root, 21)

    await check_scope(engine, run.run_id, others)
    for run_id, seen in before.items():
        assert await snapshot(engine, run_id) == seen, run_id
    # They were runnable all along: driving each finishes it.
    for run_id in others:
        assert (await env.resume(run_id)).status == RunStatus.SUCCEEDED


async def test_cadenza_run_leaves_other_runs_alone(tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'cadenza.db'}"
    artifacts = f"file://{home / 'artifacts'}"
    engine = await open_engine(store=url, artifacts=artifacts, secret=b"scope-secret-0123456789ab")
    try:
        others = await seed(engine)
        before = {run_id: await snapshot(engine, run_id) for run_id in others}
    finally:
        await engine.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    env["CADENZA_HOME"] = str(home)
    proc = await asyncio.create_subprocess_exec(
        CADENZA,
        "run",
        "tests.engine.scope_workflows:root",
        "--input",
        "21",
        "--json",
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    shown = json.loads(out)
    assert shown["status"] == "SUCCEEDED"

    engine = await open_engine(store=url, artifacts=artifacts, secret=b"scope-secret-0123456789ab")
    try:
        await check_scope(engine, shown["run_id"], others)
        for run_id, seen in before.items():
            assert await snapshot(engine, run_id) == seen, run_id
    finally:
        await engine.close()
