"""One thread owns the SQLite connection and commits whatever is queued together.

Every store call becomes a job on a queue. The thread takes all jobs waiting at that moment,
runs the writes in one transaction (each inside its own SAVEPOINT, so one rejected
checkpoint fails alone), commits once, and only then resolves the callers' futures. Under
load, the checkpoints of many concurrent runs share a single fsync (group commit); alone, a
checkpoint costs one commit as it would without the queue.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from cadenza.errors import StoreError

T = TypeVar("T")

Job = tuple[
    Callable[[sqlite3.Connection], Any], bool, asyncio.AbstractEventLoop, asyncio.Future[Any]
]

_MAX_BATCH = 1024


class SqliteWriter:
    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="cadenza-sqlite", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self) -> None:
        if self._started:
            self._jobs.put(None)
            self._thread.join()
            self._started = False

    def submit(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, write, loop, future))
        return future

    def _run(self) -> None:
        conn = self._connect()
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                batch = [job]
                stop = False
                while len(batch) < _MAX_BATCH:
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                self._process(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _process(self, conn: sqlite3.Connection, batch: list[Job]) -> None:
        settled: list[tuple[Job, bool, Any]] = []  # held back until their transaction commits
        in_txn = False

        def commit() -> None:
            nonlocal in_txn
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                failure = StoreError(f"SQLite commit failed: {exc}")
                settled[:] = [(job, False, failure) for job, _, _ in settled]
            in_txn = False
            _resolve(settled)
            settled.clear()

        for job in batch:
            fn, write, _, _ = job
            if not write:
                if in_txn:
                    commit()
                try:
                    _resolve([(job, True, fn(conn))])
                except BaseException as exc:
                    _resolve([(job, False, _translate(exc))])
                continue
            if not in_txn:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    _resolve([(job, False, StoreError(f"SQLite is busy: {exc}", retryable=True))])
                    continue
                in_txn = True
            conn.execute("SAVEPOINT checkpoint")
            try:
                value = fn(conn)
            except BaseException as exc:
                conn.execute("ROLLBACK TO checkpoint")
                conn.execute("RELEASE checkpoint")
                settled.append((job, False, _translate(exc)))
            else:
                conn.execute("RELEASE checkpoint")
                settled.append((job, True, value))
        if in_txn:
            commit()


def _translate(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        return StoreError(f"SQLite error: {exc}")
    return exc


def _resolve(results: list[tuple[Job, bool, Any]]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for (_, _, loop, future), ok, value in results:
        by_loop.setdefault(loop, []).append((future, ok, value))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # the loop closed while we worked; nobody is waiting
            pass


def _settle(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
