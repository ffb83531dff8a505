"""Every store call becomes a job; the jobs queued in one turn of the event loop commit
together.

``submit`` queues a job and, if none is pending, schedules a drain with ``call_soon``: it
runs after every coroutine that was ready in this turn has had its say, so the
checkpoints of concurrent runs pile up and share a single transaction and fsync (group
commit). The writes run in one transaction, each inside its own SAVEPOINT so that one
rejected checkpoint fails alone; callers' futures are resolved only after COMMIT, so
nobody learns of a checkpoint before it is durable.

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
from typing import Any, TypeVar

from cadenza.errors import StoreError

T = TypeVar("T")

Job = tuple[Callable[[sqlite3.Connection], Any], bool, asyncio.Future[Any]]


class SqliteWriter:
    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._conn: sqlite3.Connection | None = None
        self._pending: list[Job] = []
        self._scheduled = False
        # One connection, used by one drain at a time even if several loops share a store.
        self._lock = threading.Lock()

    def start(self) -> None:
        if self._conn is None:
            self._conn = self._connect()

    def stop(self) -> None:
        if self._pending:
            self._drain()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def submit(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((fn, write, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._drain)
        return future

    def _drain(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self._conn is None:
            failure = StoreError("the SQLite store is closed; open it before use")
            _settle([(job, False, failure) for job in batch])
            return
        with self._lock:
            _process(self._conn, batch)


def _process(conn: sqlite3.Connection, batch: list[Job]) -> None:
    settled: list[tuple[Job, bool, Any]] = []  # held back until their transaction commits
    in_txn = False
    # A savepoint isolates one job's failure; a batch of one needs none.
    isolate = sum(1 for _, write, _ in batch if write) > 1

    def commit() -> None:
        nonlocal in_txn
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            failure = StoreError(f"SQLite commit failed: {exc}")
            settled[:] = [(job, False, failure) for job, _, _ in settled]
        in_txn = False
        _settle(settled)
        settled.clear()

    for job in batch:
        fn, write, _ = job
        if not write:
            if in_txn:
                commit()
            try:
                _settle([(job, True, fn(conn))])
            except BaseException as exc:
                _settle([(job, False, _translate(exc))])
            continue
        if not in_txn:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                _settle([(job, False, StoreError(f"SQLite is busy: {exc}", retryable=True))])
                continue
            in_txn = True
        if isolate:
            conn.execute("SAVEPOINT checkpoint")
        try:
            value = fn(conn)
        except BaseException as exc:
            if isolate:
                conn.execute("ROLLBACK TO checkpoint")
                conn.execute("RELEASE checkpoint")
                settled.append((job, False, _translate(exc)))
            else:  # the only write of the batch: undo the whole transaction
                conn.execute("ROLLBACK")
                in_txn = False
                _settle([(job, False, _translate(exc))])
            continue
        if isolate:
            conn.execute("RELEASE checkpoint")
        settled.append((job, True, value))
    if in_txn:
        commit()


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"SQLite error: {exc}")
    return exc


def _settle(results: list[tuple[Job, bool, Any]]) -> None:
    for (_, _, future), ok, value in results:
        if future.done():  # the caller was cancelled; the work is done all the same
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
