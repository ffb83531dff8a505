"""Every store call becomes a job; the jobs queued in one turn of the event loop commit
together.

``submit`` queues a job and, if none is pending, schedules a drain with ``call_soon``: it
runs after every coroutine that was ready in this turn has had its say, so the
checkpoints of concurrent runs pile up and share a single transaction and fsync (group
commit). The writes run in one transaction, each inside its own SAVEPOINT so that one
rejected checkpoint fails alone; callers' futures are resolved only after COMMIT, so
nobody learns of a checkpoint before it is durable.

Every job's caller hears back, whatever happens. Some errors — a full disk, an I/O error
— make SQLite roll the whole transaction back by itself: then every job of that
transaction fails with the error, not only the one that hit it, and the remaining jobs go
on in a fresh transaction. If the connection's state cannot be known any more, it is
closed and the next drain opens a new one.

A write whose caller does not need it on disk before hearing back (a claim, a lease
renewal: *lazy*) skips the fsync when its whole transaction is lazy: SQLite appends to the
WAL in order, so the next durable commit makes it durable too, and a power loss can lose it
only together with everything written after it (a claim that is lost was never acted on
durably). Only ``synchronous`` FULL or EXTRA has an fsync to skip.

The jobs run on the event loop's own thread. Handing them to a writer thread would cost a
thread wake-up and a loop wake-up per commit — more than the work itself for a small
checkpoint — and SQLite serialises writers anyway. sqlite3 releases the GIL while it
waits on the disk, so other threads (sync steps run in a thread pool) keep going.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cadenza.errors import StoreError, StoreFull, StoreUnavailable

T = TypeVar("T")

# What a job does: read, write, or write lazily (see above).
READ, WRITE, LAZY = 0, 1, 2
Job = tuple[Callable[[sqlite3.Connection], Any], int, asyncio.Future[Any]]


class SqliteWriter:
    def __init__(
        self, connect: Callable[[], sqlite3.Connection], path: Path, synchronous: str = "FULL"
    ) -> None:
        self._connect = connect
        self.path = path
        self.synchronous = synchronous
        # Whether the connection's synchronous setting is NORMAL for a lazy transaction.
        self.relaxed = False
        self._conn: sqlite3.Connection | None = None
        self._open = False
        self._pending: list[Job] = []
        self._scheduled = False
        # One connection, used by one drain at a time even if several loops share a store.
        self._lock = threading.Lock()

    def start(self) -> None:
        self._open = True
        if self._conn is None:
            try:
                self._conn = self._connect()
                self.relaxed = False
            except sqlite3.Error as exc:
                raise translate(exc, self.path) from exc

    def stop(self) -> None:
        if self._pending:
            self._drain()
        self._open = False
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def submit(
        self, fn: Callable[[sqlite3.Connection], T], *, write: bool, lazy: bool = False
    ) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, (LAZY if lazy else WRITE) if write else READ, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._drain)
        return future

    def _drain(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        with self._lock:
            try:
                conn = self._connection()
            except StoreError as failure:
                _settle([(job, False, failure) for job in batch])
                return
            drain = _Drain(self, conn, batch)
            try:
                drain.run()
            except BaseException as exc:  # never leave a caller waiting
                drain.fail_all(translate(exc, self.path))
                if not _rolled_back(conn):
                    self._reset()
                if not isinstance(exc, Exception):
                    raise

    def _connection(self) -> sqlite3.Connection:
        if not self._open:
            raise StoreError("the SQLite store is closed; open it before use")
        if self._conn is None:  # the last one was dropped after an error it could not undo
            try:
                self._conn = self._connect()
                self.relaxed = False
            except sqlite3.Error as exc:
                raise translate(exc, self.path) from exc
        return self._conn

    def _reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass  # closing a connection in an unknown state: nothing more to save


class _Drain:
    """One batch of jobs: writes grouped into transactions, reads in between."""

    def __init__(self, writer: SqliteWriter, conn: sqlite3.Connection, batch: list[Job]) -> None:
        self.writer = writer
        self.conn = conn
        self.path = writer.path
        self.batch = batch
        self.done = 0  # jobs taken from the batch so far
        self.held: list[tuple[Job, bool, Any]] = []  # settled once their transaction commits
        # A savepoint isolates one job's failure; a batch of one write needs none.
        self.isolate = sum(1 for _, write, _ in batch if write) > 1

    def run(self) -> None:
        conn = self.conn
        while self.done < len(self.batch):
            job = self.batch[self.done]
            self.done += 1
            fn, write, _ = job
            if not write:
                if conn.in_transaction:
                    self.commit()
                try:
                    _settle([(job, True, fn(conn))])
                except BaseException as exc:
                    _settle([(job, False, translate(exc, self.path))])
                continue
            if not conn.in_transaction:
                try:
                    self.relax(self.lazy_transaction())
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    _settle([(job, False, translate(exc, self.path))])
                    continue
            if self.isolate:
                conn.execute("SAVEPOINT checkpoint")
            try:
                value = fn(conn)
            except BaseException as exc:
                self.undo(job, exc)
                continue
            if self.isolate:
                conn.execute("RELEASE checkpoint")
            self.held.append((job, True, value))
        if conn.in_transaction:
            self.commit()

    def lazy_transaction(self) -> bool:
        """Whether the transaction about to begin holds lazy writes only: the writes from
        the current job up to the next read, which commits it."""
        batch = self.batch
        for i in range(self.done - 1, len(batch)):  # no copy of the rest of a long batch
            kind = batch[i][1]
            if kind == READ:
                return True
            if kind == WRITE:
                return False
        return True

    def relax(self, lazy: bool) -> None:
        """Set the connection's synchronous for the next transaction: NORMAL (no fsync) for
        a lazy one, as configured for any other."""
        writer = self.writer
        if writer.synchronous not in ("FULL", "EXTRA") or writer.relaxed == lazy:
            return
        self.conn.execute(f"PRAGMA synchronous={'NORMAL' if lazy else writer.synchronous}")
        writer.relaxed = lazy

    def undo(self, job: Job, exc: BaseException) -> None:
        """Take back what ``job`` wrote, and only that if SQLite let the rest stand."""
        failure = translate(exc, self.path)
        conn = self.conn
        if conn.in_transaction and self.isolate:
            conn.execute("ROLLBACK TO checkpoint")
            conn.execute("RELEASE checkpoint")
            _settle([(job, False, failure)])
            return
        if conn.in_transaction:  # the only write of the batch: undo the whole transaction
            conn.execute("ROLLBACK")
        else:
            # SQLite rolled the whole transaction back itself (a full disk, an I/O error):
            # the jobs held for its commit are gone with it and must hear so.
            self.fail_held(failure)
        _settle([(job, False, failure)])

    def commit(self) -> None:
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            self.fail_held(translate(exc, self.path))
            return
        held, self.held = self.held, []
        _settle(held)

    def fail_held(self, failure: BaseException) -> None:
        held, self.held = self.held, []
        _settle([(job, False, failure) for job, _, _ in held])

    def fail_all(self, failure: BaseException) -> None:
        """Fail every job whose caller has not heard back (the drain itself broke)."""
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the caller drops the connection: its transaction dies with it
        self.held = []
        self.done = len(self.batch)
        _settle([(job, False, failure) for job in self.batch])  # skips the settled ones


def translate(exc: BaseException, path: Path) -> BaseException:
    """A SQLite error as the store error the engine understands, most specific first.

    Anything else (a cadenza error a job raised on purpose) passes through unchanged.
    """
    if not isinstance(exc, sqlite3.Error):
        return exc
    code = _code(exc)
    brief = " ".join(str(exc).split()) or type(exc).__name__
    error: StoreError
    if code == sqlite3.SQLITE_FULL:
        error = StoreFull(
            f"the disk holding {path} is full: nothing of this write was stored. Free space"
            " there; workers resume by themselves once there is room"
        )
    elif isinstance(exc, sqlite3.IntegrityError):
        taken = _taken(exc)
        if taken is not None:
            error = StoreError(
                f"the {taken} is taken ({brief}); nothing of this write was stored",
                retryable=False,
            )
        else:
            error = StoreError(f"SQLite refused the write: {brief}", retryable=False)
    elif code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        error = StoreError(
            f"the SQLite store {path} is locked by another process ({brief}); try again",
            retryable=True,
        )
    elif code == sqlite3.SQLITE_READONLY:
        error = StoreError(
            f"the SQLite store {path} is read-only ({brief}); give this process write"
            " access to the file and its folder",
            retryable=False,
        )
    elif code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        error = StoreError(
            f"the SQLite store {path} is damaged or not a cadenza database ({brief});"
            " restore it from a backup",
            retryable=False,
        )
    elif code in (sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL):
        error = StoreUnavailable(
            f"the SQLite store {path} cannot be read or written ({brief}): nothing of this"
            " write was stored. Check the disk and the file's permissions; workers resume by"
            " themselves once it works again"
        )
    elif isinstance(exc, sqlite3.DataError):
        error = StoreError(f"SQLite cannot store this value: {brief}", retryable=False)
    else:
        error = StoreError(f"SQLite error: {brief}")
    error.__cause__ = exc
    return error


# Unique keys a write can collide with, by the column SQLite names in its message.
_KEYS = {
    "runs.run_id": "run id",
    "runs.idempotency_key": "idempotency key",
    "callbacks.callback_id": "callback id",
}


def run_id_taken(exc: sqlite3.IntegrityError) -> bool:
    """Whether the insert of a run failed because its id is taken (its primary key)."""
    extended = getattr(exc, "sqlite_errorcode", None)
    primary_key = extended == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
    return primary_key and "runs.run_id" in str(exc)


def _taken(exc: sqlite3.IntegrityError) -> str | None:
    """What key a unique-constraint violation collided with, if it is one cadenza keeps."""
    extended = getattr(exc, "sqlite_errorcode", None)
    if extended not in (sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE):
        return None
    text = str(exc)
    return next((what for column, what in _KEYS.items() if column in text), None)


def _code(exc: sqlite3.Error) -> int | None:
    """The primary result code (SQLITE_FULL, …) of an error, without its extended bits."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _rolled_back(conn: sqlite3.Connection) -> bool:
    try:
        return not conn.in_transaction
    except sqlite3.Error:
        return False


def _settle(results: list[tuple[Job, bool, Any]]) -> None:
    for (_, _, future), ok, value in results:
        if future.done():  # the caller was cancelled; the work is done all the same
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
