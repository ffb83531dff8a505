"""Group commit: the checkpoints of concurrent runs in one process leave in one transaction.

``submit`` queues a checkpoint and, if no writer is about to start, starts one (up to
``max_writers`` at once); a writer first runs after every coroutine that was ready in this
turn of the event loop has had its say, so the checkpoints of concurrent runs pile up, and
those that arrive while groups are being written make up the next one. A group of one is
written as before (one statement in autocommit for the common checkpoint). A larger group
takes one connection and one transaction. The common checkpoint is one statement that
writes all of itself or, fenced off, nothing (it then fails with LeaseLost), so it needs
no savepoint and no answer before the next one goes: BEGIN, these statements and COMMIT
leave in one pipeline, one round trip for the whole group (a round trip costs both
processes more CPU than the SQL of a small checkpoint). One that resolves callbacks,
starts children or touches other runs can be rejected halfway, so it follows them inside
a SAVEPOINT and rolls back to it, failing alone. A statement PostgreSQL refuses (a value
it cannot store, a deadlock) aborts the whole transaction: then the group is rolled back
and each of its checkpoints written again on its own, so that only the refused one fails.

Callers hear back only after COMMIT, so nobody learns of a checkpoint before it is
durable, and notifications (``pg_notify``) of a rolled-back savepoint are never sent. If
the connection or the COMMIT fails, PostgreSQL keeps nothing of the group, and every
caller of the group gets the error. A checkpoint that PostgreSQL picked as a deadlock
victim is written again on its own once the group is done, as lone checkpoints always
were.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import psycopg
from psycopg import AsyncCursor, errors
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

from cadenza.adapters.postgres._writes import Conn, needs_transaction
from cadenza.errors import StoreError
from cadenza.ports.run_store import Checkpoint, CommitResult

# Each savepoint that writes takes a subtransaction id, and a backend caches only 64 of
# them; beyond that every other session checking row visibility pays for lookups in
# pg_subtrans. Groups stay below it.
MAX_GROUP = 48

Pending = tuple[Checkpoint, "asyncio.Future[CommitResult]"]


class CommitGroups:
    """Batches ``commit`` calls of one store; up to ``max_writers`` groups are written at
    once, each on its own connection."""

    def __init__(
        self,
        *,
        connection: Callable[[], AbstractAsyncContextManager[Conn]],
        send: Callable[[Conn, Checkpoint], Awaitable[AsyncCursor[TupleRow]]],
        result: Callable[[TupleRow | None], CommitResult | None],
        fenced: Callable[[Conn, Checkpoint], Awaitable[Exception]],
        write: Callable[[Conn, Checkpoint], Awaitable[CommitResult]],
        alone: Callable[[Checkpoint], Awaitable[CommitResult]],
        translate: Callable[[psycopg.Error], StoreError],
        max_writers: int = 1,
    ) -> None:
        self._connection = connection
        self._send = send
        self._result = result
        self._fenced = fenced
        self._write = write
        self._alone = alone
        self._translate = translate
        self._max_writers = max_writers
        self._pending: list[Pending] = []
        self._writers: set[asyncio.Task[None]] = set()
        self._starting = False  # a writer was started and has not taken its group yet

    def submit(self, checkpoint: Checkpoint) -> asyncio.Future[CommitResult]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CommitResult] = loop.create_future()
        self._pending.append((checkpoint, future))
        if not self._starting and len(self._writers) < self._max_writers:
            self._starting = True
            writer = loop.create_task(self._drain())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        return future

    async def _drain(self) -> None:
        self._starting = False
        try:
            while self._pending:
                batch = self._pending[:MAX_GROUP]
                del self._pending[:MAX_GROUP]
                if len(batch) == 1:
                    await self._one(*batch[0])
                else:
                    await self._group(batch)
        finally:
            # Leave the set of writers now, not in a done callback: a caller woken by
            # the last result may submit before that callback runs, and with every
            # writer still counted, its checkpoint would wait for someone else's.
            writer = asyncio.current_task()
            if writer is not None:
                self._writers.discard(writer)

    async def _one(self, checkpoint: Checkpoint, future: asyncio.Future[CommitResult]) -> None:
        try:
            result = await self._alone(checkpoint)
        except BaseException as exc:
            _settle(future, False, exc)
            if not isinstance(exc, Exception):
                raise
            return
        _settle(future, True, result)

    async def _group(self, batch: list[Pending]) -> None:
        held: list[tuple[asyncio.Future[CommitResult], bool, Any]] = []
        again: list[Pending] = []
        # One-statement checkpoints write all of themselves or, fenced off, nothing, so
        # they need no savepoint and no answer before the next is sent: they leave with
        # BEGIN (and COMMIT, when nothing else follows) in one pipeline, one round trip.
        # One that goes on to resolve callbacks, start children or touch other runs can
        # be rejected halfway: each has a savepoint, written after them.
        bare = [p for p in batch if not needs_transaction(p[0])]
        isolated = [p for p in batch if needs_transaction(p[0])]
        fenced: list[Pending] = []
        try:
            async with self._connection() as conn:
                try:
                    async with conn.pipeline() as pipeline:
                        await conn.execute("BEGIN")
                        sent = [(p, await self._send(conn, p[0])) for p in bare]
                        done = await conn.execute("COMMIT") if not isolated else None
                        await pipeline.sync()
                        for pending, cursor in sent:
                            result = self._result(await cursor.fetchone())
                            if result is None:
                                fenced.append(pending)
                            else:
                                held.append((pending[1], True, result))
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    raise  # the connection's failure, not a checkpoint's: all fail
                except psycopg.Error:
                    if conn.info.transaction_status != TransactionStatus.INERROR:
                        raise
                    # PostgreSQL refused a statement and with it the whole transaction
                    # (rare: a value it cannot store, a deadlock). Take it all back and
                    # write each checkpoint on its own, so that only the refused one fails.
                    await conn.execute("ROLLBACK")
                    again, held, fenced, isolated, done = list(batch), [], [], [], None
                else:
                    for n, (checkpoint, future) in enumerate(isolated):
                        await self._isolated(conn, n, checkpoint, future, held, again)
                    if isolated:
                        done = await conn.execute("COMMIT")
                if done is not None and done.statusmessage != "COMMIT":
                    # PostgreSQL answers COMMIT of an aborted transaction with ROLLBACK,
                    # not an error: never tell a caller of a commit that did not happen.
                    raise StoreError(
                        f"PostgreSQL rolled a group of checkpoints back"
                        f" ({done.statusmessage}); nothing of it was stored, try again",
                        retryable=True,
                    )
                for checkpoint, future in fenced:  # why: read after the group, it wrote nothing
                    held.append((future, False, await self._fenced(conn, checkpoint)))
        except BaseException as exc:
            # Nothing of the group is kept: an open transaction dies with its connection
            # (the pool rolls back one handed back in a transaction).
            failure: BaseException = exc
            if isinstance(exc, psycopg.Error):
                failure = self._translate(exc)
                failure.__cause__ = exc
            elif not isinstance(exc, Exception):
                failure = StoreError("the group commit was interrupted; nothing of it was stored")
            for _, future in batch:
                _settle(future, False, failure)
            if not isinstance(exc, Exception):
                raise
            return
        for future, ok, value in held:
            _settle(future, ok, value)
        for checkpoint, future in again:
            await self._one(checkpoint, future)

    async def _isolated(
        self,
        conn: Conn,
        n: int,
        checkpoint: Checkpoint,
        future: asyncio.Future[CommitResult],
        held: list[tuple[asyncio.Future[CommitResult], bool, Any]],
        again: list[Pending],
    ) -> None:
        """Write one checkpoint of the group inside a savepoint of its own; rejected, it
        rolls back to it and fails alone."""
        try:
            await conn.execute(f"SAVEPOINT checkpoint_{n}")
            result = await self._write(conn, checkpoint)
            await conn.execute(f"RELEASE SAVEPOINT checkpoint_{n}")
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise  # the connection's failure, not this checkpoint's: all fail
        except Exception as exc:
            await conn.execute(f"ROLLBACK TO SAVEPOINT checkpoint_{n}")
            if isinstance(exc, (errors.DeadlockDetected, errors.SerializationFailure)):
                again.append((checkpoint, future))
            elif isinstance(exc, psycopg.Error):
                rejected = self._translate(exc)
                rejected.__cause__ = exc
                held.append((future, False, rejected))
            else:
                held.append((future, False, exc))
            return
        held.append((future, True, result))


def _settle(future: asyncio.Future[CommitResult], ok: bool, value: Any) -> None:
    if future.done():  # the caller was cancelled; the work is done all the same
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
