"""Hearing about new work: LISTEN on the store's channel over a connection of its own.

Every write that makes something runnable (a run created, a callback completed, a run
woken or handed back, an event put in the outbox, a slot freed in a capped queue) sends a
NOTIFY in its transaction, so it arrives only once the write is visible. An idle worker
waiting in :meth:`WorkListener.wait` returns as soon as one arrives, on any machine.

Notifications are a hint, never the source of truth: the worker still claims from the
tables, and still polls at its interval, so a lost connection only costs latency. While
the listener reconnects it counts as notified, since it may have missed something.

Outbox inserts notify with the payload ``outbox``. That lets every worker's relay skip
reading an outbox it last found empty, for as long as it has been listening and heard no
such notification since.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg
from psycopg import AsyncConnection, sql

log = logging.getLogger("cadenza.postgres")

#: The payload of notifications about new outbox entries (the others carry none): a relay
#: may skip reading an outbox it found empty until it hears one.
OUTBOX = "outbox"


class WorkListener:
    """``min_interval`` spaces out the returns of :meth:`wait`: in a burst of notifications
    (thousands of runs started at once) each idle worker wakes once per interval and claims
    a batch, instead of every worker querying the store once per notification."""

    def __init__(self, conninfo: str, channel: str, *, min_interval: float = 0.01) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._min_interval = min_interval
        self._task: asyncio.Task[None] | None = None
        self._notified: asyncio.Event | None = None
        self._returned_at = 0.0
        # Whether the outbox may hold entries nobody relayed yet: True unless a read found
        # it empty while we were listening and no outbox notification came since.
        self._outbox_dirty = True
        self._outbox_generation = 0
        self._read_generation = -1
        self.listening = asyncio.Event()

    async def wait(self, max_wait: float) -> None:
        """Return at the next notification (or one since the last call), or after
        ``max_wait`` seconds."""
        if self._task is None or self._task.done():
            self._notified = asyncio.Event()
            self.listening = asyncio.Event()
            self._task = asyncio.create_task(self._listen(), name="cadenza-postgres-listen")
        assert self._notified is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(max_wait, 0.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._notified.wait()
                pause = self._returned_at + self._min_interval - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
        self._notified.clear()
        self._returned_at = loop.time()

    def outbox_may_have_entries(self) -> bool:
        if not self.listening.is_set() or self._outbox_dirty:
            self._read_generation = self._outbox_generation
            return True
        return False

    def outbox_seen_empty(self) -> None:
        """A read (that started after ``outbox_may_have_entries``) found no entry."""
        if self.listening.is_set() and self._read_generation == self._outbox_generation:
            self._outbox_dirty = False

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            try:
                conn = await AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self.outbox_changed()
                    self._wake()  # anything may have happened while we were not listening
                    self.listening.set()
                    backoff = 0.5
                    async for note in conn.notifies():
                        if note.payload == OUTBOX:
                            self.outbox_changed()
                        self._wake()
            except psycopg.Error as exc:
                self.listening.clear()
                self.outbox_changed()
                log.warning("listening for work on PostgreSQL failed (%s); retrying", exc)
                self._wake()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def outbox_changed(self) -> None:
        """New entries may be in the outbox (heard of, or written by this process)."""
        self._outbox_dirty = True
        self._outbox_generation += 1

    def _wake(self) -> None:
        if self._notified is not None:
            self._notified.set()
