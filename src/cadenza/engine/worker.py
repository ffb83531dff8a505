"""The worker loop: claim runnable runs, activate them, relay events, keep leases alive.

Runnable means PENDING, SUSPENDED with a due wake time (timers are just wake times), or
RUNNING under a lease that expired because its worker died: that run is replayed here from
its journal. Between claims the worker sleeps until the earliest wake time, a local
wake-up (a run it executed changed something), or the poll interval — whichever is first.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from cadenza.engine.activation import ActivationResult
from cadenza.engine.engine import Engine
from cadenza.events.relay import relay_outbox
from cadenza.ports.run_store import RunRecord

log = logging.getLogger("cadenza.worker")


class Worker:
    def __init__(
        self,
        engine: Engine,
        *,
        concurrency: int = 100,
        queues: Sequence[str] | None = None,
        workflows: Sequence[tuple[str, str]] | None = None,
        poll_interval: float = 1.0,
        relay: bool = True,
    ) -> None:
        self.engine = engine
        self.concurrency = concurrency
        self.queues = list(queues) if queues else None
        self.workflows = list(workflows) if workflows is not None else None
        self.poll_interval = poll_interval
        self.relay = relay
        self.active: dict[str, asyncio.Task[ActivationResult]] = {}
        self._epochs: dict[str, int] = {}
        self.on_result: Callable[[ActivationResult], None] | None = None

    async def run(
        self,
        *,
        stop: asyncio.Event | None = None,
        until: Callable[[], Awaitable[bool]] | None = None,
        grace: float = 30.0,
    ) -> None:
        """Work until ``stop`` is set or ``until()`` holds when the worker is idle."""
        wakeup = self.engine.wakeup_event()
        renewer = asyncio.create_task(self._renew_leases())
        try:
            while stop is None or not stop.is_set():
                wakeup.clear()
                busy = await self.tick()
                if busy:
                    await asyncio.sleep(0)
                    continue
                if not self.active and until is not None and await until():
                    return
                await self._idle(wakeup, stop)
        finally:
            renewer.cancel()
            self.engine.drop_wakeup_event(wakeup)
            await self._shutdown(grace)

    async def tick(self) -> bool:
        """One round: relay events, claim what there is room for. True if it did work."""
        engine = self.engine
        relayed = await relay_outbox(engine) if self.relay else 0
        free = self.concurrency - len(self.active)
        claimed: list[RunRecord] = []
        if free > 0:
            now = engine.clock.now()
            claimed = await engine.store.claim_runs(
                owner=engine.owner,
                now=now,
                lease_until=now + engine.lease,
                limit=free,
                workflows=self.workflows,
                queues=self.queues,
            )
            for run in claimed:
                self._launch(run)
        return bool(relayed or claimed)

    def _launch(self, run: RunRecord) -> None:
        self._epochs[run.run_id] = run.lease_epoch
        task = asyncio.create_task(self.engine.activate(run), name=f"run {run.run_id}")
        self.active[run.run_id] = task
        task.add_done_callback(functools.partial(self._finished, run.run_id))

    def _finished(self, run_id: str, task: asyncio.Task[ActivationResult]) -> None:
        self.active.pop(run_id, None)
        self._epochs.pop(run_id, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("run %s: activation crashed", run_id, exc_info=exc)
            return
        if self.on_result is not None:
            self.on_result(task.result())
        self.engine.poke()

    async def _idle(self, wakeup: asyncio.Event, stop: asyncio.Event | None) -> None:
        engine = self.engine
        timeout = self.poll_interval
        next_wake = await engine.store.next_wake_at()
        if next_wake is not None:
            timeout = min(timeout, max((next_wake - engine.clock.now()).total_seconds(), 0.0))
        waiters = [
            asyncio.create_task(wakeup.wait()),
            asyncio.create_task(engine.clock.sleep(timeout)),
        ]
        if stop is not None:
            waiters.append(asyncio.create_task(stop.wait()))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _renew_leases(self) -> None:
        engine = self.engine
        interval = max(engine.lease.total_seconds() / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            until = engine.clock.now() + engine.lease
            for run_id, epoch in list(self._epochs.items()):
                if not await engine.store.renew_lease(
                    run_id, owner=engine.owner, epoch=epoch, lease_until=until
                ):
                    log.warning("run %s: lease lost to another worker", run_id)

    async def _shutdown(self, grace: float) -> None:
        """Let in-flight activations finish; hand back the ones that do not in time."""
        if not self.active:
            return
        tasks = list(self.active.values())
        epochs = dict(self._epochs)
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for run_id, epoch in epochs.items():
            if any(t.get_name() == f"run {run_id}" for t in pending):
                await self.engine.store.release_lease(run_id, owner=self.engine.owner, epoch=epoch)


async def drive(
    engine: Engine,
    run_id: str,
    *,
    linger: timedelta = timedelta(seconds=5),
    concurrency: int = 100,
) -> RunRecord:
    """Execute runs in this process until ``run_id`` ends or waits on something that is
    not due within ``linger`` (a callback, an event, a long timer). Returns the run."""

    async def settled() -> bool:
        run = await engine.store.get_run(run_id)
        if run.status.terminal:
            return True
        if run.status.value != "SUSPENDED":
            return False
        if run.wake_at is None:
            return True
        return run.wake_at - engine.clock.now() > linger

    worker = Worker(engine, concurrency=concurrency, poll_interval=0.25)
    await worker.run(until=settled)
    return await engine.store.get_run(run_id)
