"""Several worker processes over one PostgreSQL store: the guarantees of the cluster shape.

* Workers are SIGKILLed at random and restarted: every run still succeeds; a step runs again
  only if a kill caught it between its effect and its checkpoint (at most once per kill
  per run in flight), never after its outcome was committed; each durable timer fires once.
* A queue's concurrency cap holds across processes.
* SIGTERM stops a worker gracefully: it claims nothing new, finishes what it runs (or hands
  it back when the grace period runs out), and nothing runs twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cadenza import RunStatus
from cadenza.config import open_engine
from cadenza.engine.engine import Engine
from cadenza.history import HistoryEventType as H
from cadenza.journal import OpStatus, OpType
from cadenza.ports.run_store import QueueConfig, RunRecord
from tests.cluster.cluster_workflows import (
    CRASH_STEPS,
    TIMER,
    Effect,
    capped_job,
    crash_flow,
    graceful_flow,
    read_effects,
)

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "cluster-test-secret-0123456789abcdef"


class WorkerProcess:
    """``python -m tests.cluster.worker_main`` with its stderr in a file."""

    def __init__(self, cluster: Cluster, label: str, options: dict[str, object]) -> None:
        self.cluster = cluster
        self.label = label
        self.options = options
        self.log = cluster.home / f"worker-{label}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> WorkerProcess:
        args = [sys.executable, "-m", "tests.cluster.worker_main", "--store", self.cluster.url]
        for key, value in self.options.items():
            args += [f"--{key}", str(value)]
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *args, cwd=REPO_ROOT, env=self.cluster.env, stdout=log, stderr=log
            )
        async with asyncio.timeout(60):
            while "ready" not in self.output:
                assert self.proc.returncode is None, f"worker {self.label} died:\n{self.output}"
                await asyncio.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            return await self.proc.wait()


@dataclass
class Cluster:
    url: str
    home: Path
    engine: Engine
    workers: list[WorkerProcess] = field(default_factory=list)

    @property
    def effects_path(self) -> Path:
        return self.home / "effects.log"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
        env.update(
            CADENZA_HOME=str(self.home),
            CADENZA_SECRET=SECRET,
            CLUSTER_EFFECTS=str(self.effects_path),
            PYTHONPATH=str(REPO_ROOT),
        )
        return env

    async def worker(self, label: str, **options: object) -> WorkerProcess:
        process = await WorkerProcess(self, label, options).start()
        self.workers.append(process)
        return process

    def effects(self) -> list[Effect]:
        return read_effects(self.effects_path)

    async def wait_until_ended(self, run_ids: set[str], timeout: float) -> list[RunRecord]:
        deadline = time.monotonic() + timeout
        while True:
            runs = [await self.engine.store.get_run(r) for r in sorted(run_ids)]
            if all(r.status.terminal for r in runs):
                return runs
            if time.monotonic() > deadline:
                states = sorted({str(r.status) for r in runs})
                logs = "\n".join(f"--- {w.label}\n{w.output[-3000:]}" for w in self.workers)
                pytest.fail(f"runs not ended after {timeout}s ({states}); worker logs:\n{logs}")
            await asyncio.sleep(0.2)


@pytest.fixture
async def cluster(postgres_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    url = f"{postgres_url}?schema=c_{uuid.uuid4().hex[:10]}&pool_max=4"
    home = tmp_path / "home"
    home.mkdir()
    engine = await open_engine(
        store=url, artifacts=f"file://{home / 'artifacts'}", secret=SECRET.encode()
    )
    cluster = Cluster(url, home, engine)
    try:
        yield cluster
    finally:
        for worker in cluster.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                worker.signal(signal.SIGKILL)
                await worker.wait()
        await engine.close()


def committed_tokens(journal: list[object]) -> dict[str, str]:
    return {
        op.op_id: json.loads(op.result)  # type: ignore[attr-defined]
        for op in journal
        if op.type == OpType.STEP and op.status == OpStatus.SUCCEEDED  # type: ignore[attr-defined]
    }


# --- (a) crashes ---------------------------------------------------------------------------

RUNS = 60
KILLS = 6


async def test_killed_workers_lose_nothing_and_repeat_only_uncommitted_steps(
    cluster: Cluster,
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    started = {(await cluster.engine.start(crash_flow, n)).run_id: n for n in range(RUNS)}
    options = {"concurrency": 4, "lease": 1.0, "poll": 0.2}
    workers = list(await asyncio.gather(*(cluster.worker(f"w{i}", **options) for i in range(3))))
    killed: set[int] = set()
    for k in range(KILLS):
        await asyncio.sleep(rng.uniform(0.3, 1.0))
        slot = rng.randrange(len(workers))
        victim = workers[slot]
        victim.signal(signal.SIGKILL)
        assert await victim.wait() == -signal.SIGKILL
        killed.add(victim.pid)
        workers[slot] = await cluster.worker(f"w{slot}-{k}", **options)

    runs = await cluster.wait_until_ended(set(started), timeout=90)
    context = f"(seed {seed}, logs in {cluster.home})"
    assert {r.run_id: (r.status, r.result) for r in runs} == {
        run_id: (RunStatus.SUCCEEDED, str(n)) for run_id, n in started.items()
    }, context

    by_op: dict[tuple[str, str], list[Effect]] = defaultdict(list)
    for e in cluster.effects():
        by_op[(e.run_id, e.op_id)].append(e)
    moved = 0
    for run in runs:
        journal = await cluster.engine.store.load_journal(run.run_id)
        tokens = committed_tokens(journal)
        assert len(tokens) == CRASH_STEPS, context
        retried_by: list[int] = []
        for op_id, token in tokens.items():
            executions = by_op[(run.run_id, op_id)]
            # The committed execution left its effect, and nothing ran after it.
            assert executions and executions[-1].token == token, (run.run_id, op_id, context)
            # Any other execution died with its worker before it could commit.
            for lost in executions[:-1]:
                assert lost.pid in killed, (run.run_id, op_id, lost, context)
                retried_by.append(lost.pid)
        # A kill interrupts at most one step of a run (its steps run one at a time).
        assert len(retried_by) == len(set(retried_by)), (run.run_id, retried_by, context)
        history = await cluster.engine.store.history(run.run_id)
        succeeded = [e.op_id for e in history if e.type == H.STEP_SUCCEEDED]
        assert sorted(succeeded) == sorted(tokens), context
        timer = [e.type for e in history if e.name == TIMER]
        assert timer == [H.WAIT_STARTED, H.WAIT_SUCCEEDED], (run.run_id, timer, context)
        if len({e.pid for (r, _), es in by_op.items() if r == run.run_id for e in es}) > 1:
            moved += 1
    assert moved > 0, f"no run moved between workers: the kills hit nothing {context}"
    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [await w.wait() for w in workers] == [0, 0, 0]


# --- (b) queue caps ------------------------------------------------------------------------


async def test_a_queue_cap_holds_across_worker_processes(cluster: Cluster) -> None:
    await cluster.engine.store.put_queue(QueueConfig("capped", concurrency=2))
    started = {(await cluster.engine.start(capped_job)).run_id for _ in range(12)}
    workers = await asyncio.gather(
        *(cluster.worker(f"w{i}", concurrency=5, lease=10, poll=1.0) for i in range(3))
    )
    runs = await cluster.wait_until_ended(started, timeout=60)
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    effects = cluster.effects()
    assert len(effects) == 12
    edges = sorted([(e.started, 1) for e in effects] + [(e.ended, -1) for e in effects])
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    assert peak == 2  # never more than the cap, and the cap was used
    assert len({e.pid for e in effects}) >= 2  # the work really was spread out
    for worker in workers:
        worker.signal(signal.SIGTERM)
    assert [await w.wait() for w in workers] == [0, 0, 0]


# --- (c) graceful shutdown -----------------------------------------------------------------


async def wait_for_effects(cluster: Cluster, predicate: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate(cluster.effects()):  # type: ignore[operator]
        assert time.monotonic() < deadline, "the workers never got going"
        await asyncio.sleep(0.05)


async def test_sigterm_lets_in_flight_runs_finish_and_claims_nothing_new(
    cluster: Cluster,
) -> None:
    started = {(await cluster.engine.start(graceful_flow, 4)).run_id for _ in range(6)}
    first = await cluster.worker("first", concurrency=3, lease=30, poll=0.2)
    await wait_for_effects(cluster, lambda es: len({e.run_id for e in es}) >= 3)
    stopped_at = time.time()
    first.signal(signal.SIGTERM)
    second = await cluster.worker("second", concurrency=3, lease=30, poll=0.2)
    assert await first.wait(timeout=30) == 0
    assert "stopped" in first.output

    runs = await cluster.wait_until_ended(started, timeout=60)
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    effects = cluster.effects()
    ops = [(e.run_id, e.op_id) for e in effects]
    assert len(ops) == len(set(ops)) == 6 * 4  # no step ran twice
    by_run: dict[str, list[Effect]] = defaultdict(list)
    for e in effects:
        by_run[e.run_id].append(e)
    finished_by_first = {r for r, es in by_run.items() if all(e.pid == first.pid for e in es)}
    finished_by_second = {r for r, es in by_run.items() if all(e.pid == second.pid for e in es)}
    assert len(finished_by_first) == 3  # it finished what it had started...
    assert all(by_run[r][0].started < stopped_at for r in finished_by_first)  # ...took no more
    assert finished_by_second == started - finished_by_first
    second.signal(signal.SIGTERM)
    assert await second.wait() == 0


async def test_runs_still_in_flight_after_the_grace_period_are_handed_back(
    cluster: Cluster,
) -> None:
    started = {(await cluster.engine.start(graceful_flow, 8)).run_id for _ in range(2)}
    # Leases of a minute: if the runs were not handed back, nobody could resume them now.
    first = await cluster.worker("first", concurrency=2, lease=60, poll=0.2, grace=0.3)
    await wait_for_effects(cluster, lambda es: len({e.run_id for e in es}) == 2)
    first.signal(signal.SIGTERM)
    assert await first.wait(timeout=20) == 0
    assert first.output.count("handed back") == 2
    for run_id in started:
        assert (await cluster.engine.store.get_run(run_id)).status == RunStatus.PENDING

    began = time.monotonic()
    second = await cluster.worker("second", concurrency=2, lease=60, poll=0.2)
    runs = await cluster.wait_until_ended(started, timeout=40)
    assert time.monotonic() - began < 40
    assert {r.status for r in runs} == {RunStatus.SUCCEEDED}
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for e in cluster.effects():
        counts[(e.run_id, e.op_id)] += 1
    assert len(counts) == 2 * 8
    # Only a step cut off by the hand-back may have run twice: at most one per run.
    repeated = [key for key, n in counts.items() if n > 1]
    assert all(counts[k] == 2 for k in repeated) and len({r for r, _ in repeated}) == len(repeated)
    for run in runs:
        tokens = committed_tokens(await cluster.engine.store.load_journal(run.run_id))
        assert len(tokens) == 8
    second.signal(signal.SIGTERM)
    assert await second.wait() == 0
