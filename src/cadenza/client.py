"""The client: what an application that embeds cadenza uses to start runs and follow them.

``start_run`` stores a run and returns a :class:`RunHandle` at once; a worker executes it
(a :class:`~cadenza.Worker` in this process or a ``cadenza worker`` elsewhere on the same
store). ``execute_run`` executes the run in this process instead and returns its result.
A handle reads, waits for, completes the callbacks of, and recovers one run.

Waiting never spins. ``handle.result()`` sleeps until the engine commits a checkpoint
that ends or suspends that run (any worker of this process, any ``drive``), or the
client cancels it. What another process does on the same store is not seen here, so the
wait also reads the store every ``poll_interval`` (one second by default).
``execute_run`` sleeps on the engine's wake-up event, as a worker does: set when a
callback is completed or something becomes runnable in this process.

:class:`SyncClient` offers the same calls to code without an event loop (a script, a
notebook): it runs the client on an event loop of its own, in a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from cadenza import schedules
from cadenza.clock import Clock
from cadenza.config import open_engine
from cadenza.engine._recovery import KEEP_INPUT
from cadenza.engine.engine import Engine, PendingCallback
from cadenza.engine.worker import drive
from cadenza.errors import InvalidCallbackToken, InvalidInput, RunStateError
from cadenza.history import HistoryEvent
from cadenza.ports.artifact_store import ArtifactStore
from cadenza.ports.run_store import (
    CatchUp,
    Checkpoint,
    Overlap,
    RunRecord,
    RunStatus,
    RunStore,
    Schedule,
)
from cadenza.telemetry._costs import CostReport, cost_report
from cadenza.workflow import WorkflowDefinition

__all__ = ["Client", "RunHandle", "SyncClient", "SyncRunHandle"]

T = TypeVar("T")

_TOKEN_PREFIX = "cdz1."
#: ``result_type`` default: the output annotation of the run's workflow, when registered.
_FROM_WORKFLOW: Any = object()


class Client:
    """Starts runs and hands out their handles, over one engine.

    >>> async with await Client.open(store="sqlite:///app.db") as client:
    ...     handle = await client.start_run(refund, {"order_id": "A-1", "amount_eur": 30})
    ...     print(await handle.result())
    """

    def __init__(self, engine: Engine, *, poll_interval: timedelta = timedelta(seconds=1)) -> None:
        self.engine = engine
        self.poll_interval = poll_interval
        self._owns_engine = False
        # Handles waiting for a run, by run id: a checkpoint wakes the waiters of its run
        # only, so a thousand waiting handles do not all read the store at each one.
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._unsubscribe = engine.subscribe(self._committed)

    @classmethod
    async def open(
        cls,
        *,
        store: str | RunStore | None = None,
        artifacts: str | ArtifactStore | None = None,
        secret: bytes | None = None,
        clock: Clock | None = None,
        poll_interval: timedelta = timedelta(seconds=1),
        **options: Any,
    ) -> Client:
        """A client over a new engine (see :func:`cadenza.open_engine` for the arguments);
        closing the client closes the engine."""
        engine = await open_engine(
            store=store, artifacts=artifacts, secret=secret, clock=clock, **options
        )
        client = cls(engine, poll_interval=poll_interval)
        client._owns_engine = True
        return client

    async def close(self) -> None:
        """Close the engine if this client opened it (one passed in is the caller's)."""
        self._unsubscribe()
        if self._owns_engine:
            await self.engine.close()

    def _committed(self, run: RunRecord, checkpoint: Checkpoint) -> None:
        if checkpoint.releases:  # the run ended or suspended
            self._wake(checkpoint.run_id)

    def _wake(self, run_id: str) -> None:
        for event in self._waiters.get(run_id, ()):
            event.set()

    @contextlib.contextmanager
    def _watch(self, run_id: str) -> Iterator[asyncio.Event]:
        """An event set when ``run_id`` may have ended, by what this client sees."""
        event = asyncio.Event()
        self._waiters.setdefault(run_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters[run_id]
            waiters.discard(event)
            if not waiters:
                del self._waiters[run_id]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start_run(
        self,
        workflow: WorkflowDefinition,
        input: Any = None,
        *,
        run_id: str | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int = 0,
    ) -> RunHandle:
        """Store a new run of ``workflow`` and return its handle; a worker executes it.

        InvalidInput (and nothing stored) when ``input`` does not fit the workflow's input
        type. The same ``idempotency_key`` with the same input returns the run it started
        before; with another input it raises RunAlreadyExists.
        """
        run = await self.engine.start(
            workflow,
            input,
            run_id=run_id,
            idempotency_key=idempotency_key,
            queue=queue,
            priority=priority,
        )
        return RunHandle(self, run.run_id, result_type=workflow.output_type)

    async def execute_run(
        self,
        workflow: WorkflowDefinition,
        input: Any = None,
        *,
        run_id: str | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int = 0,
    ) -> Any:
        """Start a run, execute it in this process until it ends, and return its result
        (typed as the workflow's output); RunFailed when it fails or is cancelled.

        While the run waits on a callback, an event or a timer, this call waits too, and
        goes on executing the run when the wait is over: complete its callbacks from
        another task (``client.get_handle(run_id).succeed_callback(...)``) or process.
        """
        handle = await self.start_run(
            workflow,
            input,
            run_id=run_id,
            idempotency_key=idempotency_key,
            queue=queue,
            priority=priority,
        )
        await handle._execute()
        return await handle.result()

    def get_handle(self, run_id: str, *, result_type: Any = _FROM_WORKFLOW) -> RunHandle:
        """The handle of an existing run. Its result is decoded to ``result_type``, by
        default the output type of the run's workflow when this process registers it."""
        return RunHandle(self, run_id, result_type=result_type)

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: WorkflowDefinition | str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        """Runs in the store, newest first, optionally of one status or workflow."""
        name = workflow.name if isinstance(workflow, WorkflowDefinition) else workflow
        return await self.engine.store.list_runs(status=status, workflow=name, limit=limit)

    async def costs(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        workflow: WorkflowDefinition | str | None = None,
        tenant: str | None = None,
    ) -> CostReport:
        """Model spend of the runs created in [since, until), rolled up by workflow, model,
        tenant and UTC day, as ``cadenza costs`` prints it.

        >>> report = await client.costs(since=datetime(2026, 11, 1, tzinfo=UTC))
        >>> report.rows("model")  # [("openai:gpt-4o", {"cost_usd": 1.93, ...}), ...]
        """
        name = workflow.name if isinstance(workflow, WorkflowDefinition) else workflow
        return await cost_report(
            self.engine.store, since=since, until=until, workflow=name, tenant=tenant
        )

    async def succeed_callback(self, token: str, payload: Any = None) -> None:
        """Complete the callback ``token`` names, whichever run it belongs to."""
        await self.engine.succeed_callback(token, payload)

    async def fail_callback(
        self, token: str, *, error: str = "CallbackFailed", message: str = ""
    ) -> None:
        """Fail the callback ``token`` names: the workflow's wait raises CallbackFailed."""
        await self.engine.fail_callback(token, error=error, message=message)

    async def put_schedule(
        self,
        name: str,
        workflow: WorkflowDefinition,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        at: datetime | None = None,
        expression: str | None = None,
        input: Any = None,
        pin_version: bool = False,
        timezone: str = "UTC",
        window: timedelta = timedelta(0),
        catch_up: CatchUp = CatchUp.LATEST,
        catch_up_limit: int = 10,
        overlap: Overlap = Overlap.SKIP,
        paused: bool = False,
        start_at: datetime | None = None,
        end_at: datetime | None = None,
    ) -> Schedule:
        """Create or replace the schedule ``name``: workers start ``workflow`` with
        ``input`` at each tick of exactly one of ``cron`` (``"0 9 * * MON-FRI"``),
        ``every`` (whole minutes), ``at`` (one time, local to ``timezone``) or
        ``expression`` (``cron(...)``, ``rate(...)``, ``at(...)``). See docs/schedules.md.

        >>> await client.put_schedule("daily-digest", digest, cron="0 7 * * *",
        ...                           timezone="Europe/Lisbon", window=timedelta(minutes=10))
        """
        return await schedules.put_schedule(
            self.engine,
            name,
            workflow,
            schedules.expression_for(
                cron=cron, every=every, at=at, expression=expression, timezone=timezone
            ),
            input=input,
            pin_version=pin_version,
            timezone=timezone,
            window=window,
            catch_up=catch_up,
            catch_up_limit=catch_up_limit,
            overlap=overlap,
            paused=paused,
            start_at=start_at,
            end_at=end_at,
        )

    async def get_schedule(self, name: str) -> Schedule:
        """The schedule ``name`` with its next tick; ScheduleNotFound when there is none."""
        return await self.engine.store.get_schedule(name)

    async def list_schedules(self) -> list[Schedule]:
        """All schedules, by name."""
        return await self.engine.store.list_schedules()

    async def pause_schedule(self, name: str) -> Schedule:
        """Stop firing ``name`` until it is resumed."""
        return await schedules.set_paused(self.engine, name, paused=True)

    async def resume_schedule(self, name: str) -> Schedule:
        """Fire ``name`` again, from its next tick on: ticks missed while paused are dropped."""
        return await schedules.set_paused(self.engine, name, paused=False)

    async def delete_schedule(self, name: str) -> bool:
        """Delete the schedule ``name`` (the runs it started stay); False when there was none."""
        return await self.engine.store.delete_schedule(name)


class RunHandle:
    """One run: read it, wait for its result, complete its callbacks, recover it.

    A handle is cheap (a run id and a client); it holds no connection and no lock.
    """

    def __init__(self, client: Client, run_id: str, *, result_type: Any = _FROM_WORKFLOW) -> None:
        self.client = client
        self.run_id = run_id
        self._result_type = result_type

    def __repr__(self) -> str:
        return f"<RunHandle {self.run_id}>"

    @property
    def _engine(self) -> Engine:
        return self.client.engine

    async def describe(self) -> RunRecord:
        """The run's record: status, error, state, timestamps. RunNotFound if none."""
        return await self._engine.store.get_run(self.run_id)

    async def status(self) -> RunStatus:
        return (await self.describe()).status

    async def state(self) -> dict[str, Any]:
        """The agent state document the workflow writes (``ctx.state``)."""
        return (await self.describe()).state

    async def history(self) -> list[HistoryEvent]:
        return await self._engine.store.history(self.run_id)

    async def result(self, *, timeout: timedelta | None = None) -> Any:
        """Wait for the run to end and return its result, decoded to the workflow's output
        type (a claim-checked one fetched). RunFailed when it failed or was cancelled;
        RunStateError when ``timeout`` passes first (the run goes on).

        This waits; it does not execute the run: a worker does, or use
        :meth:`Client.execute_run`.
        """
        run = await self._wait(timeout)
        return await self._engine.result(self.run_id, self._output_type(run))

    async def drive(self, *, linger: timedelta = timedelta(seconds=5)) -> RunRecord:
        """Execute the run in this process until it ends or waits on something not due
        within ``linger`` (a callback, an event, a long timer); return its record. The
        child runs it invokes are executed too, never other runs: see
        :func:`cadenza.drive`. A worker holding the run meanwhile keeps it (leases)."""
        return await drive(self._engine, self.run_id, linger=linger)

    async def pending_callbacks(self) -> list[PendingCallback]:
        """What the run and its open child runs wait on from outside, each callback with
        the token that completes it; empty when the run waits on nothing or has ended."""
        return await self._engine.pending_callbacks(self.run_id)

    async def succeed_callback(self, callback: str, payload: Any = None) -> None:
        """Complete one of the run's callbacks, named by its token, its name or its
        operation id, with ``payload``."""
        await self._engine.succeed_callback(await self._token_for(callback), payload)

    async def fail_callback(
        self, callback: str, *, error: str = "CallbackFailed", message: str = ""
    ) -> None:
        """Fail one of the run's callbacks (by token, name or operation id)."""
        token = await self._token_for(callback)
        await self._engine.fail_callback(token, error=error, message=message)

    async def cancel(self) -> None:
        """Cancel the run (and its open child runs): at once when no worker holds it, else
        at its next checkpoint. RunStateError when it has already ended."""
        await self._engine.cancel(self.run_id)
        self.client._wake(self.run_id)  # a run no worker held ends without a checkpoint

    async def retry(self, *, version: str | None = None, by: str | None = None) -> Self:
        """Put a failed or cancelled run back to work from the operation that failed,
        keeping every recorded success; ``version`` lets another registered version of
        the workflow take it over, ``by`` says who asked (in the run's history). The run
        is PENDING afterwards, for a worker."""
        await self._engine.retry(self.run_id, version=version, by=by)
        return self

    async def fork(
        self,
        *,
        from_op: str,
        input: Any = KEEP_INPUT,
        state: dict[str, Any] | None = None,
        version: str | None = None,
    ) -> RunHandle:
        """A new run that replays this one's journal up to operation ``from_op`` and runs
        live from there, with ``input`` (default: the same) and ``state`` as its agent
        state document when given. Returns the new run's handle."""
        forked = await self._engine.fork(
            self.run_id, from_op=from_op, input=input, state=state, version=version
        )
        return RunHandle(self.client, forked.run_id, result_type=self._result_type)

    # --- internals ----------------------------------------------------------------------

    def _output_type(self, run: RunRecord) -> Any:
        if self._result_type is not _FROM_WORKFLOW:
            return self._result_type
        definition = self._engine.resolve(run)
        return definition.output_type if definition is not None else None

    async def _wait(self, timeout: timedelta | None) -> RunRecord:
        """The run's record once it has ended."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout.total_seconds()
        with self.client._watch(self.run_id) as changed:
            while True:
                changed.clear()  # before reading: a change after the read still wakes us
                run = await self.describe()
                if run.status.terminal:
                    return run
                pause = self.client.poll_interval.total_seconds()
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise RunStateError(
                            f"run {self.run_id} has not ended within {timeout} (it is"
                            f" {run.status}); it goes on: wait again, or see 'cadenza runs"
                            f" show {self.run_id}'"
                        )
                    pause = min(pause, left)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), pause)

    async def _execute(self) -> RunRecord:
        """Execute the run in this process until it ends, resuming it after each wait."""
        engine = self._engine
        changed = engine.wakeup_event()
        try:
            while True:
                changed.clear()
                run = await self.drive()
                if run.status.terminal:
                    return run
                pause = self.client.poll_interval.total_seconds()
                if run.wake_at is not None:
                    pause = min(pause, (run.wake_at - engine.clock.now()).total_seconds())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), max(pause, 0.0))
        finally:
            engine.drop_wakeup_event(changed)

    async def _token_for(self, callback: str) -> str:
        """The token of one of this run's callbacks; a token given is checked to belong to
        this run or one of its child runs, so a handle only ever completes its own run."""
        if callback.startswith(_TOKEN_PREFIX):
            record = await self._engine.callback_for(callback)
            run_id: str | None = record.run_id
            while run_id is not None and run_id != self.run_id:
                run_id = (await self._engine.store.get_run(run_id)).parent_run_id
            if run_id is None:
                raise InvalidCallbackToken(
                    f"the token completes a callback of run {record.run_id}, not of run"
                    f" {self.run_id}: use client.get_handle({record.run_id!r})"
                )
            return callback
        waits = await self.pending_callbacks()
        named = [w for w in waits if w.token is not None and callback in (w.name, w.op_id)]
        if len(named) == 1 and named[0].token is not None:
            return named[0].token
        if named:
            raise InvalidInput(
                f"run {self.run_id} waits on {len(named)} callbacks named {callback!r}"
                f" (operations {', '.join(w.op_id for w in named)}): name one by its"
                " operation id"
            )
        open_ones = ", ".join(sorted({w.name for w in waits if w.token is not None}))
        raise RunStateError(
            f"run {self.run_id} waits on no callback named {callback!r}"
            f" ({'it waits on: ' + open_ones if open_ones else 'it waits on none'});"
            f" see 'cadenza runs show {self.run_id}'"
        )


class _LoopThread:
    """An event loop running in a daemon thread, for calls made from synchronous code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="cadenza-sync-client", daemon=True
        )
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class SyncClient:
    """The :class:`Client` for synchronous code: each method blocks until the client's
    coroutine, run on the SyncClient's own event loop in a background thread, is done.
    It works inside a notebook whose event loop is already running.

    >>> with SyncClient.open(store="sqlite:///app.db") as client:
    ...     print(client.execute_run(refund, {"order_id": "A-1", "amount_eur": 30}))
    """

    def __init__(self, client: Client, loop: _LoopThread) -> None:
        self.client = client
        self._loop = loop

    @classmethod
    def open(cls, **options: Any) -> SyncClient:
        """Open a client as :meth:`Client.open` does, with the same arguments."""
        loop = _LoopThread()
        try:
            client = loop.call(Client.open(**options))
        except BaseException:
            loop.stop()
            raise
        return cls(client, loop)

    def close(self) -> None:
        try:
            self._loop.call(self.client.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start_run(
        self,
        workflow: WorkflowDefinition,
        input: Any = None,
        *,
        run_id: str | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int = 0,
    ) -> SyncRunHandle:
        """:meth:`Client.start_run`: store the run for a worker and return its handle."""
        started = self.client.start_run(
            workflow,
            input,
            run_id=run_id,
            idempotency_key=idempotency_key,
            queue=queue,
            priority=priority,
        )
        return SyncRunHandle(self._loop.call(started), self._loop)

    def execute_run(
        self,
        workflow: WorkflowDefinition,
        input: Any = None,
        *,
        run_id: str | None = None,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int = 0,
    ) -> Any:
        """:meth:`Client.execute_run`: execute the run here and return its result."""
        executed = self.client.execute_run(
            workflow,
            input,
            run_id=run_id,
            idempotency_key=idempotency_key,
            queue=queue,
            priority=priority,
        )
        return self._loop.call(executed)

    def get_handle(self, run_id: str, *, result_type: Any = _FROM_WORKFLOW) -> SyncRunHandle:
        return SyncRunHandle(self.client.get_handle(run_id, result_type=result_type), self._loop)

    def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: WorkflowDefinition | str | None = None,
        limit: int = 50,
    ) -> list[RunRecord]:
        return self._loop.call(self.client.list_runs(status=status, workflow=workflow, limit=limit))

    def costs(self, **options: Any) -> CostReport:
        return self._loop.call(self.client.costs(**options))

    def succeed_callback(self, token: str, payload: Any = None) -> None:
        self._loop.call(self.client.succeed_callback(token, payload))

    def fail_callback(
        self, token: str, *, error: str = "CallbackFailed", message: str = ""
    ) -> None:
        self._loop.call(self.client.fail_callback(token, error=error, message=message))

    def put_schedule(self, name: str, workflow: WorkflowDefinition, **options: Any) -> Schedule:
        return self._loop.call(self.client.put_schedule(name, workflow, **options))

    def get_schedule(self, name: str) -> Schedule:
        return self._loop.call(self.client.get_schedule(name))

    def list_schedules(self) -> list[Schedule]:
        return self._loop.call(self.client.list_schedules())

    def pause_schedule(self, name: str) -> Schedule:
        return self._loop.call(self.client.pause_schedule(name))

    def resume_schedule(self, name: str) -> Schedule:
        return self._loop.call(self.client.resume_schedule(name))

    def delete_schedule(self, name: str) -> bool:
        return self._loop.call(self.client.delete_schedule(name))


class SyncRunHandle:
    """A :class:`RunHandle` whose methods block: see :class:`SyncClient`."""

    def __init__(self, handle: RunHandle, loop: _LoopThread) -> None:
        self.handle = handle
        self.run_id = handle.run_id
        self._loop = loop

    def __repr__(self) -> str:
        return f"<SyncRunHandle {self.run_id}>"

    def describe(self) -> RunRecord:
        return self._loop.call(self.handle.describe())

    def status(self) -> RunStatus:
        return self._loop.call(self.handle.status())

    def state(self) -> dict[str, Any]:
        return self._loop.call(self.handle.state())

    def history(self) -> list[HistoryEvent]:
        return self._loop.call(self.handle.history())

    def result(self, *, timeout: timedelta | None = None) -> Any:
        return self._loop.call(self.handle.result(timeout=timeout))

    def drive(self, *, linger: timedelta = timedelta(seconds=5)) -> RunRecord:
        return self._loop.call(self.handle.drive(linger=linger))

    def pending_callbacks(self) -> list[PendingCallback]:
        return self._loop.call(self.handle.pending_callbacks())

    def succeed_callback(self, callback: str, payload: Any = None) -> None:
        self._loop.call(self.handle.succeed_callback(callback, payload))

    def fail_callback(
        self, callback: str, *, error: str = "CallbackFailed", message: str = ""
    ) -> None:
        self._loop.call(self.handle.fail_callback(callback, error=error, message=message))

    def cancel(self) -> None:
        self._loop.call(self.handle.cancel())

    def retry(self, *, version: str | None = None) -> Self:
        self._loop.call(self.handle.retry(version=version))
        return self

    def fork(
        self,
        *,
        from_op: str,
        input: Any = KEEP_INPUT,
        state: dict[str, Any] | None = None,
        version: str | None = None,
    ) -> SyncRunHandle:
        forked = self.handle.fork(from_op=from_op, input=input, state=state, version=version)
        return SyncRunHandle(self._loop.call(forked), self._loop)
