"""The worker loop: claim runnable runs, activate them, relay events, keep leases alive.

Runnable means PENDING, SUSPENDED with a due wake time (timers are just wake times), or
RUNNING under a lease that expired because its worker died: that run is replayed here from
its journal. Between claims the worker sleeps until the earliest wake time, a local
wake-up (a run it executed changed something), word from the store that there is new work
(``RunStore.wait_for_work``: LISTEN/NOTIFY on PostgreSQL), or the poll interval —
whichever is first.

Each round also fires the schedules that are due (``cadenza.schedules``): the runs their
ticks start are claimed like any other. Firing is conditional in the store, so any number
of workers may do it at once and each tick still starts one run.

Once an hour (``prune_every``) a round also prunes a bounded batch of ended runs whose
retention has passed (``Engine.prune``); the store re-checks each run in the transaction
that deletes it, so any number of workers may prune at once.

When a registered instrumentation observes queues (the OpenTelemetry queue gauges), a
task of the worker samples ``RunStore.queue_stats`` as often as it asks (every 15 s by
default) and hands it each sample; with none registered nothing is sampled.

Stopping is graceful: the worker stops claiming, lets in-flight activations finish for a
grace period while it keeps their leases alive, then cancels the rest and hands their runs
back, so another worker resumes them at once instead of after a lease expiry.

When the store stops taking writes (a full disk, a database that is down), an activation
whose checkpoint is refused ends without writing more; the worker stops renewing that run's
lease, hands the run back as soon as the store lets it, and pauses its claims with a
growing backoff until an activation gets through again. Nothing waits on the store forever.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import Any

from cadenza.clock import Clock
from cadenza.engine._instrumentation import QueueObserver
from cadenza.engine.activation import ActivationResult
from cadenza.engine.engine import Engine
from cadenza.errors import CadenzaError, LeaseLost, StoreError, StoreUnavailable
from cadenza.events.relay import relay_outbox
from cadenza.ports.run_store import RunRecord
from cadenza.schedules import fire_due_schedules

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
        trace_id: str | None = None,
        run_id: str | None = None,
        max_backoff: float = 30.0,
        schedules: bool = True,
        prune_every: timedelta | None = timedelta(hours=1),
        prune_batch: int = 100,
    ) -> None:
        self.engine = engine
        self.concurrency = concurrency
        self.queues = list(queues) if queues else None
        self.workflows = list(workflows) if workflows is not None else None
        self.poll_interval = poll_interval
        self.relay = relay
        # Claim only the runs of one trace (or one run): what ``drive`` executes.
        self.trace_id = trace_id
        self.run_id = run_id
        self.max_backoff = max_backoff
        self.active: dict[str, asyncio.Task[ActivationResult]] = {}
        self._epochs: dict[str, int] = {}
        self.on_result: Callable[[ActivationResult], None] | None = None
        # Called when the store refuses work because it is unavailable (full, down).
        self.on_store_unavailable: Callable[[StoreUnavailable], None] | None = None
        # Runs whose activation the store aborted, to hand back (run id -> lease epoch).
        self._releases: dict[str, int] = {}
        # Claims pause until this loop time after the store refused work; the pause doubles
        # while it keeps refusing, and ends at the first activation that gets through.
        self._backoff = 0.0
        self._resume_at: float | None = None
        # When the last claim that had room ran (None: it had no room). Wake times up to
        # then were due at that claim and still not taken: other queues, capped ones.
        self._claimed_at: datetime | None = None
        # Fire due schedules (``schedules``); look again at this time: the earliest due
        # time the store named, or one poll interval on, for schedules put elsewhere.
        self.schedules = schedules
        self._schedules_at: datetime | None = None
        # Retention: prune ended runs past their retention, ``prune_batch`` at a time, every
        # ``prune_every`` (None: never), at once again while a batch comes back full.
        self.prune_every = prune_every
        self.prune_batch = prune_batch
        self._prune_at: datetime | None = None

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
        # A worker scoped to one run or trace (``drive``) leaves the queues to the others.
        scoped = self.run_id is not None or self.trace_id is not None
        observers = [] if scoped else self.engine.instruments.queue_observers()
        sampler = asyncio.create_task(self._sample_queues(observers)) if observers else None
        try:
            while stop is None or not stop.is_set():
                wakeup.clear()
                await self._hand_back()
                if self._resume_at is not None:
                    await self._pause(stop)
                    continue
                try:
                    busy = await self.tick()
                except StoreError as exc:
                    if not exc.retryable:
                        raise
                    self._claimed_at = None
                    self._store_refused(exc)
                    continue
                if busy:
                    await asyncio.sleep(0)
                    continue
                if not self.active and until is not None and await until():
                    return
                await self._idle(wakeup, stop)
        finally:
            self.engine.drop_wakeup_event(wakeup)
            try:
                await self._shutdown(grace)  # leases stay renewed while runs finish
                await self._hand_back()
                for run_id in self._releases:
                    log.warning(
                        "run %s: the store would not take it back; another worker resumes"
                        " it once its lease runs out",
                        run_id,
                    )
            finally:
                renewer.cancel()
                if sampler is not None:
                    sampler.cancel()

    async def tick(self) -> bool:
        """One round: relay events, claim what there is room for. True if it did work."""
        engine = self.engine
        relayed = await relay_outbox(engine) if self.relay else 0
        fired = await self._fire_schedules() if self.schedules else 0
        if self.prune_every is not None:
            await self._prune(self.prune_every)
        free = self.concurrency - len(self.active)
        claimed: list[RunRecord] = []
        self._claimed_at = None
        if free > 0:
            now = self._claimed_at = engine.clock.now()
            claimed = await engine.store.claim_runs(
                owner=engine.owner,
                now=now,
                lease_until=now + engine.lease,
                limit=free,
                workflows=self.workflows,
                queues=self.queues,
                run_id=self.run_id,
                trace_id=self.trace_id,
            )
            for run in claimed:
                self._launch(run)
        # A claim that got fewer runs than it had room for took all there were: claiming
        # again at once would find nothing (what becomes runnable later wakes the worker).
        return bool(relayed or fired or (claimed and len(claimed) >= free))

    async def _fire_schedules(self) -> int:
        now = self.engine.clock.now()
        if self._schedules_at is not None and now < self._schedules_at:
            return 0
        later = now + timedelta(seconds=self.poll_interval)
        try:
            fired = await fire_due_schedules(self.engine)
            due = await self.engine.store.next_schedule_due_at()
        except StoreError as exc:
            if exc.retryable:
                raise  # the round backs off as for any refused work
            # Schedules failing must not stop the runs this worker executes.
            log.warning("schedules not fired: %s", exc)
            self._schedules_at = later
            return 0
        # One still due after firing failed (logged): try it again a poll later, not at once.
        self._schedules_at = later if due is None or due <= now else min(due, later)
        return fired

    async def _prune(self, every: timedelta) -> None:
        now = self.engine.clock.now()
        if self._prune_at is not None and now < self._prune_at:
            return
        self._prune_at = now + every
        try:
            report = await self.engine.prune(limit=self.prune_batch, batch=self.prune_batch)
        except StoreError as exc:  # pruning failing must not stop the runs executed here
            log.warning("ended runs not pruned (trying again in %s): %s", every, exc)
            return
        if report.runs:
            log.info(
                "pruned %d ended runs (%d artifact bytes freed)",
                report.runs,
                report.artifact_bytes,
            )
        if report.runs >= self.prune_batch:
            self._prune_at = now  # more are due: the next round prunes another batch

    async def _sample_queues(self, observers: Sequence[QueueObserver]) -> None:
        """Read the queues' statistics for ``observers`` (the queue metrics) as often as
        the most eager of them asks, for as long as the worker runs."""
        every = min(o.queue_sample_interval for o in observers).total_seconds()
        failing = False
        while True:
            now = self.engine.clock.now()
            try:
                stats = await self.engine.store.queue_stats(now=now)
            except StoreError as exc:  # metrics failing must not stop the runs executed here
                if not failing:
                    log.warning("queue statistics not sampled (trying again): %s", exc)
                failing = True
            else:
                failing = False
                for observer in observers:
                    try:
                        observer.queues_sampled(stats, now)
                    except Exception:
                        log.exception("%s.queues_sampled raised", type(observer).__name__)
            await asyncio.sleep(max(every, 0.01))

    def _launch(self, run: RunRecord) -> None:
        self._epochs[run.run_id] = run.lease_epoch
        task = asyncio.create_task(self.engine.activate(run), name=f"run {run.run_id}")
        self.active[run.run_id] = task
        task.add_done_callback(functools.partial(self._finished, run.run_id))

    def _finished(self, run_id: str, task: asyncio.Task[ActivationResult]) -> None:
        self.active.pop(run_id, None)
        epoch = self._epochs.pop(run_id, None)  # its lease is no longer renewed
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, StoreError) and exc.retryable:  # e.g. its journal would not load
            result = ActivationResult(run_id, None, aborted=exc)
        elif exc is not None:
            log.error("run %s: activation crashed", run_id, exc_info=exc)
            return
        else:
            result = task.result()
        refused = result.aborted
        if isinstance(refused, StoreError) and not isinstance(refused, LeaseLost):
            # The activation wrote nothing more after the refused checkpoint; the run is
            # ours only on paper. Hand it back rather than hold it through a lease.
            if epoch is not None:
                self._releases[run_id] = epoch
            if refused.retryable:
                self._store_refused(refused)
        elif result.status is not None:
            self._backoff = 0.0
        if self.on_result is not None:
            self.on_result(result)
        self.engine.poke()

    def _store_refused(self, exc: StoreError) -> None:
        self._backoff = min(max(self._backoff * 2, self.poll_interval), self.max_backoff)
        self._resume_at = asyncio.get_running_loop().time() + self._backoff
        log.warning("store refused work; claiming again in %.1fs: %s", self._backoff, exc)
        if isinstance(exc, StoreUnavailable) and self.on_store_unavailable is not None:
            self.on_store_unavailable(exc)

    async def _pause(self, stop: asyncio.Event | None) -> None:
        """Wait out the backoff (in real time: it waits for the world, not for runs)."""
        assert self._resume_at is not None
        delay = self._resume_at - asyncio.get_running_loop().time()
        if delay > 0:
            await _first_of(asyncio.sleep(delay), *([stop.wait()] if stop else []))
        self._resume_at = None

    async def _hand_back(self) -> None:
        """Release the runs whose activation the store aborted, as soon as it lets us.
        The release is fenced by the epoch: a run someone else took over is left alone."""
        for run_id, epoch in list(self._releases.items()):
            try:
                await self.engine.store.release_lease(run_id, owner=self.engine.owner, epoch=epoch)
            except StoreError as exc:
                if exc.retryable:
                    continue  # try again next round; meanwhile its lease runs out anyway
                log.warning("run %s: not handed back: %s", run_id, exc)
            else:
                log.info("run %s: handed back after the store refused its checkpoint", run_id)
            del self._releases[run_id]

    async def _idle(self, wakeup: asyncio.Event, stop: asyncio.Event | None) -> None:
        engine = self.engine
        timeout = self.poll_interval
        try:
            next_wake = await engine.store.next_wake_at(
                workflows=self.workflows, queues=self.queues
            )
        except StoreError as exc:
            if not exc.retryable:
                raise
            next_wake = None
        # A wake time already due at the last claim was not claimable by this worker (no
        # room, another worker's, a capped queue): waiting for it would spin. Wait for news.
        if next_wake is not None and self._claimed_at is not None and next_wake > self._claimed_at:
            timeout = min(timeout, max((next_wake - engine.clock.now()).total_seconds(), 0.0))
        if self.schedules and self._schedules_at is not None:
            until_due = (self._schedules_at - engine.clock.now()).total_seconds()
            timeout = min(timeout, max(until_due, 0.0))
        waits = [wakeup.wait(), engine.store.wait_for_work(timeout)]
        # The store's wait returns after ``timeout`` at the latest; the clock's sleep adds
        # something only when it is not the real clock's (a fake clock's, moved by a test).
        if type(engine.clock) is not Clock:
            waits.append(engine.clock.sleep(timeout))
        if stop is not None:
            waits.append(stop.wait())
        await _first_of(*waits)

    async def _renew_leases(self) -> None:
        engine = self.engine
        interval = max(engine.lease.total_seconds() / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            until = engine.clock.now() + engine.lease
            for run_id, epoch in list(self._epochs.items()):
                try:
                    renewed = await engine.store.renew_lease(
                        run_id, owner=engine.owner, epoch=epoch, lease_until=until
                    )
                except StoreError as exc:  # keep trying: the lease may outlive the outage
                    log.warning("run %s: lease not renewed: %s", run_id, exc)
                    continue
                if not renewed and await self._taken_over(run_id):
                    log.warning("run %s: lease lost to another worker", run_id)

    async def _taken_over(self, run_id: str) -> bool:
        """Whether a run whose lease would not renew is another worker's now (rather than
        just ended or suspended here, between the renewal and our noticing)."""
        try:
            run = await self.engine.store.get_run(run_id)
        except CadenzaError:
            return False
        return run.lease_owner not in (None, self.engine.owner)

    async def _shutdown(self, grace: float) -> None:
        """Let in-flight activations finish; hand back the ones that do not in time."""
        if not self.active:
            return
        tasks = dict(self.active)
        epochs = dict(self._epochs)
        log.info("stopping: waiting up to %ss for %d activations", grace, len(tasks))
        _, pending = await asyncio.wait(tasks.values(), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for run_id, task in tasks.items():
            if task not in pending:
                continue
            try:
                await self.engine.store.release_lease(
                    run_id, owner=self.engine.owner, epoch=epochs[run_id]
                )
                log.info("run %s: handed back", run_id)
            except StoreError as exc:  # its lease expires instead; another worker resumes it
                log.warning("run %s: not handed back: %s", run_id, exc)


def stop_on_signals(
    stop: asyncio.Event, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> Callable[[], None]:
    """Set ``stop`` when the process receives one of ``signals`` (a worker then shuts down
    gracefully); a second signal ends the process at once. Returns a function that removes
    the handlers. Call it from the running event loop.

    >>> stop = asyncio.Event()
    >>> remove = stop_on_signals(stop)
    >>> await Worker(engine).run(stop=stop)
    """
    loop = asyncio.get_running_loop()

    def handle(sig: signal.Signals) -> None:
        if stop.is_set():  # asked twice: do not wait for the grace period
            loop.remove_signal_handler(sig)
            signal.raise_signal(sig)
            return
        log.info("received %s: finishing in-flight runs, then stopping", sig.name)
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, handle, sig)

    def remove() -> None:
        for sig in signals:
            loop.remove_signal_handler(sig)

    return remove


async def _first_of(*waits: Coroutine[Any, Any, object]) -> None:
    """Return when the first of ``waits`` finishes; cancel the others."""
    tasks = [asyncio.create_task(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def drive(
    engine: Engine,
    run_id: str,
    *,
    linger: timedelta = timedelta(seconds=5),
    concurrency: int = 100,
) -> RunRecord:
    """Execute ``run_id`` and the runs it causes — the children it invokes, the runs that
    rules start from its events, all of one trace — until each ends or waits on something
    not due within ``linger`` (a callback, an event, a long timer). Returns the run.

    Other runs in the store are left to workers: ``cadenza run`` drives what it started.
    When the store stops taking writes (a full disk, a database that is down), raises
    :class:`StoreUnavailable`; the runs keep their last checkpoint and a worker resumes
    them once the store is back.
    """
    root = await engine.store.get_run(run_id)
    stop = asyncio.Event()
    refused: list[StoreUnavailable] = []
    others: set[str] = set()  # runs of the trace executed here besides the root

    def finished(result: ActivationResult) -> None:
        if result.run_id != run_id:
            others.add(result.run_id)

    def unavailable(exc: StoreUnavailable) -> None:
        refused.append(exc)
        stop.set()

    ended: list[RunRecord] = []  # the root as last read, once it has ended

    async def waits(some_run_id: str) -> bool:
        """Whether a run has ended or waits past the linger; False while it may go on."""
        run = await engine.store.get_run(some_run_id)
        if run.status.terminal and some_run_id == run_id:
            ended[:] = [run]
        if run.status.terminal:
            others.discard(some_run_id)
            return True
        if run.status.value != "SUSPENDED":
            return False
        if run.wake_at is None:
            return True
        return run.wake_at - engine.clock.now() > linger

    async def settled() -> bool:
        for some in (run_id, *sorted(others)):
            if not await waits(some):
                return False
        return True

    worker = Worker(
        engine,
        concurrency=concurrency,
        poll_interval=0.25,
        trace_id=root.trace_id,
        run_id=None if root.trace_id else run_id,
        schedules=False,  # the runs a schedule starts are another trace: a worker's work
        prune_every=None,  # so is retention
    )
    worker.on_result = finished
    worker.on_store_unavailable = unavailable
    await worker.run(stop=stop, until=settled, grace=5.0)
    if refused:
        cause = refused[0]
        when = "once the store is back"
        try:
            run = await engine.store.get_run(run_id)
        except StoreError:
            run = root
        if run.lease_owner == engine.owner and run.lease_expires_at is not None:
            # The store would not even take the run back: its lease has to run out first.
            when += f" and the run's lease has run out (at {run.lease_expires_at:%H:%M:%S} UTC)"
        raise type(cause)(
            f"run {run_id} stopped at its last checkpoint, nothing lost: {cause}. Then"
            f" 'cadenza worker' resumes it {when}"
        ) from cause
    if ended:  # an ended run stays as it ended: no need to read it again
        return ended[0]
    return await engine.store.get_run(run_id)
