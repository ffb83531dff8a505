"""PostgresRunStore: the cluster run store, shared by any number of workers on any machines.

Workers claim runs with ``FOR UPDATE SKIP LOCKED`` (no two claim the same run, none waits
for another), fence every checkpoint with the run's lease epoch, and hear about new work
through LISTEN/NOTIFY. Durability is PostgreSQL's: a checkpoint is committed when its
transaction is, under the server's ``synchronous_commit`` setting.

``postgresql://user:password@host:5432/db?pool_max=10&schema=cadenza`` — ``pool_min`` and
``pool_max`` size the connection pool, ``schema`` names the PostgreSQL schema that holds
the tables (one deployment per schema); any other parameter goes to libpq as is
(``sslmode``, ``connect_timeout``, ``application_name``, …).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import AsyncConnection, errors
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from cadenza.adapters.postgres import _claims, _schema, _writes
from cadenza.adapters.postgres._group import CommitGroups
from cadenza.adapters.postgres._notify import OUTBOX, WorkListener
from cadenza.adapters.postgres._retention import PostgresRetention
from cadenza.adapters.postgres._rows import (
    CALLBACK_COLUMNS,
    OP_COLUMNS,
    QUEUE_COLUMNS,
    RUN_COLUMNS,
    callback_from_row,
    history_from_row,
    history_params,
    op_from_row,
    outbox_from_row,
    queue_from_row,
    run_from_row,
    run_params,
    utc,
)
from cadenza.adapters.postgres._schedules import PostgresSchedules
from cadenza.adapters.postgres._service import PostgresServiceTables
from cadenza.adapters.postgres._writes import Conn
from cadenza.errors import (
    CallbackNotFound,
    ConfigurationError,
    RunAlreadyExists,
    RunNotFound,
    RunStateError,
    StoreError,
    StoreFull,
    StoreUnavailable,
)
from cadenza.history import HistoryEvent
from cadenza.journal import OpRecord
from cadenza.ports.run_store import (
    CallbackRecord,
    CallbackResolution,
    Cancellation,
    Checkpoint,
    CommitResult,
    OutboxEntry,
    QueueConfig,
    QueueStats,
    Redrive,
    RunRecord,
    RunStore,
)

T = TypeVar("T")

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_RETRIES = 5
_QUEUES_TTL = 1.0  # seconds a worker trusts its list of limited queues


class PostgresRunStore(PostgresRetention, PostgresServiceTables, PostgresSchedules, RunStore):
    """Run store on PostgreSQL: ``postgresql://user@host/db?pool_max=10``."""

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "cadenza",
        pool_min: int = 1,
        pool_max: int = 10,
        url: str | None = None,
    ) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ConfigurationError(
                f"schema={schema!r} is not a plain PostgreSQL name; use lowercase letters,"
                " digits and underscores, e.g. schema=cadenza"
            )
        if not 1 <= pool_min <= pool_max:
            raise ConfigurationError(
                f"pool_min={pool_min}, pool_max={pool_max}: need 1 <= pool_min <= pool_max"
            )
        self.conninfo = conninfo
        self.schema = schema
        self.pool_min = pool_min
        self.pool_max = pool_max
        self.url = _redacted(url or conninfo)  # for display: never the password
        self.channel = "cadenza_work" if schema == "cadenza" else f"cadenza_work_{schema}"
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._listener = WorkListener(conninfo, self.channel)
        self._limited: tuple[float, list[str]] = (0.0, [])
        self._loaded = _claims.Prefetched()
        self._groups = CommitGroups(
            connection=self._connection,
            send=lambda conn, cp: _writes.send_checkpoint(
                conn, self.schema, cp, channel=self.channel
            ),
            result=_writes.commit_result,
            fenced=lambda conn, cp: _writes.fence_error(conn, self.schema, cp),
            write=self._checkpoint_in,
            alone=self._commit_alone,
            translate=_translate,
            # Groups in flight at once: one writer alone would leave the server's other
            # cores idle while it waits on a round trip; half the pool leaves the other
            # half for claims, reads and lease renewals.
            max_writers=max(1, pool_max // 2),
        )

    @classmethod
    def from_url(cls, url: str) -> PostgresRunStore:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigurationError(
                f"{url!r} is not a PostgreSQL URL; use postgresql://USER@HOST:5432/DB"
            )
        ours: dict[str, str] = {}
        passed: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key in ("pool_min", "pool_max", "schema"):
                ours[key] = value
            else:
                passed.append((key, value))
        if not any(key == "connect_timeout" for key, _ in passed):
            passed.append(("connect_timeout", "10"))
        conninfo = urlunsplit(parts._replace(query=urlencode(passed)))
        try:
            pool_min = int(ours.get("pool_min", "1"))
            pool_max = int(ours.get("pool_max", "10"))
        except ValueError as exc:
            raise ConfigurationError(f"{url!r}: pool_min and pool_max are numbers") from exc
        return cls(
            conninfo,
            schema=ours.get("schema", "cadenza"),
            pool_min=pool_min,
            pool_max=max(pool_max, pool_min),
            url=url,
        )

    # --- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        await self.upgrade()
        if self._pool is None:
            pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
                self.conninfo,
                min_size=self.pool_min,
                max_size=self.pool_max,
                kwargs={"autocommit": True, "row_factory": dict_row},
                connection_class=AsyncConnection[DictRow],
                open=False,
                name=f"cadenza-{self.schema}",
            )
            try:
                await pool.open(wait=True, timeout=30.0)
            except psycopg.Error as exc:
                await pool.close()
                raise StoreUnavailable(
                    f"cannot open connections to PostgreSQL ({_brief(exc)}); is the server"
                    f" running and accepting connections? ({self.url})"
                ) from exc
            self._pool = pool

    async def close(self) -> None:
        await self._listener.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def upgrade(self) -> list[int]:
        """Create or migrate the schema; the migration versions applied."""
        async with self._direct() as conn:
            return await _schema.migrate(conn, self.schema)

    async def schema_status(self) -> tuple[int, int]:
        """(version in the database, version this code expects)."""
        async with self._direct() as conn:
            return await _schema.current_version(conn, self.schema), _schema.LATEST

    async def wait_for_work(self, max_wait: float) -> None:
        await self._listener.wait(max_wait)

    # --- plumbing -----------------------------------------------------------------------

    @asynccontextmanager
    async def _direct(self) -> AsyncIterator[Conn]:
        """A connection outside the pool (schema work, before the pool exists)."""
        try:
            conn = await AsyncConnection.connect(
                self.conninfo, autocommit=True, row_factory=dict_row
            )
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL ({_brief(exc)}); is the server running, and"
                f" is the store URL right? ({self.url})"
            ) from exc
        try:
            async with conn:
                yield conn
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        if self._pool is None:
            raise StoreError("the PostgreSQL run store is not open; call open() first")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    async def _one(self, query: str, params: Any = None) -> dict[str, Any] | None:
        async with self._connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchone()

    async def _execute(self, query: str, params: Any = None) -> None:
        async with self._connection() as conn:
            await conn.execute(query, params)

    async def _all(self, query: str, params: Any = None) -> list[dict[str, Any]]:
        async with self._connection() as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall()

    async def _transaction(self, fn: Callable[[Conn], Awaitable[T]], *, atomic: bool = True) -> T:
        """Run ``fn`` in a transaction (or, not ``atomic``, as it is: one statement is its
        own transaction); retry it when PostgreSQL broke a deadlock."""
        for attempt in range(1, _RETRIES + 1):
            try:
                async with self._connection() as conn:
                    if not atomic:
                        return await fn(conn)
                    async with conn.transaction():
                        return await fn(conn)
            except StoreError as exc:
                transient = isinstance(
                    exc.__cause__, (errors.DeadlockDetected, errors.SerializationFailure)
                )
                if not transient or attempt == _RETRIES:
                    raise
                await asyncio.sleep(random.uniform(0.005, 0.05) * attempt)
        raise AssertionError("unreachable")

    # --- runs ---------------------------------------------------------------------------

    async def create_run(self, run: RunRecord, started: HistoryEvent) -> RunRecord:
        s = self.schema
        async with self._connection() as conn:
            # One statement: the run, its first history event, and word to idle workers.
            try:
                cur = await conn.execute(
                    f"WITH created AS (INSERT INTO {s}.runs ({RUN_COLUMNS})"
                    f" VALUES ({', '.join(['%s'] * len(RUN_COLUMNS.split(',')))})"
                    " ON CONFLICT (idempotency_key) DO NOTHING RETURNING run_id),"
                    f" started AS (INSERT INTO {s}.history (run_id, type, ts, op_id,"
                    " parent_id, name, details) SELECT run_id, %s, %s, %s, %s, %s, %s"
                    " FROM created), woken AS (SELECT pg_notify(%s, '') FROM created)"
                    " SELECT (SELECT count(*) FROM created) AS created,"
                    " (SELECT count(*) FROM woken) AS woken",
                    (*run_params(run), *history_params(run.run_id, started)[1:], self.channel),
                )
            except errors.UniqueViolation as exc:
                if exc.diag.constraint_name != "runs_pkey":
                    raise
                raise RunAlreadyExists.id_taken(run.run_id) from exc
            row = await cur.fetchone()
            if row is not None and row["created"]:
                return run
            # The idempotency key names an existing run: that run is the answer.
            cur = await conn.execute(
                f"SELECT {RUN_COLUMNS} FROM {s}.runs WHERE idempotency_key = %s",
                (run.idempotency_key,),
            )
            existing = await cur.fetchone()
        if existing is None:
            raise StoreError(f"run {run.run_id}: idempotency key vanished; try again")
        return run_from_row(existing)

    async def get_run(self, run_id: str) -> RunRecord:
        row = await self._one(
            f"SELECT {RUN_COLUMNS} FROM {self.schema}.runs WHERE run_id = %s", (run_id,)
        )
        if row is None:
            raise RunNotFound(run_id)
        return run_from_row(row)

    async def claim_runs(
        self,
        *,
        owner: str,
        now: datetime,
        lease_until: datetime,
        limit: int,
        workflows: Sequence[tuple[str, str]] | None = None,
        queues: Sequence[str] | None = None,
        run_id: str | None = None,
        trace_id: str | None = None,
    ) -> list[RunRecord]:
        if limit <= 0:
            return []
        params: dict[str, Any] = {"now": now, "owner": owner, "until": lease_until, "limit": limit}
        where = [_claims.RUNNABLE]
        if not _claims.filters(where, params, workflows, queues, run_id, trace_id):
            return []
        limited = await self._limited_queues()
        if queues is not None:
            limited = [q for q in limited if q in queues]
        if not limited:
            async with self._connection() as conn:
                rows, ops, callbacks = await _claims.claim_plain(conn, self.schema, where, params)
            self._loaded.put(rows, ops, callbacks)
        else:
            rows = await self._transaction(
                lambda conn: _claims.claim_limited(conn, self.schema, where, params, limited, now)
            )
        runs = [run_from_row(r) for r in rows]
        return sorted(runs, key=lambda r: (-r.priority, r.created_at))

    async def _limited_queues(self) -> list[str]:
        """Names of the queues with limits, re-read at most every second.

        A stale list is safe: the plain claim excludes limited queues in SQL, so staleness
        only delays claims from a newly limited queue, never lets one exceed its limits.
        """
        read_at, names = self._limited
        if time.monotonic() - read_at < _QUEUES_TTL:
            return names
        rows = await self._all(
            f"SELECT name FROM {self.schema}.queues"
            " WHERE concurrency IS NOT NULL OR rate_limit IS NOT NULL"
        )
        names = [r["name"] for r in rows]
        self._limited = (time.monotonic(), names)
        return names

    async def renew_lease(
        self, run_id: str, *, owner: str, epoch: int, lease_until: datetime
    ) -> bool:
        row = await self._one(
            f"UPDATE {self.schema}.runs SET lease_expires_at = %s WHERE run_id = %s"
            " AND lease_owner = %s AND lease_epoch = %s RETURNING run_id",
            (lease_until, run_id, owner, epoch),
        )
        return row is not None

    async def release_lease(self, run_id: str, *, owner: str, epoch: int) -> None:
        await self._one(
            f"WITH released AS (UPDATE {self.schema}.runs SET status = 'PENDING',"
            " lease_owner = NULL, lease_expires_at = NULL WHERE run_id = %s"
            " AND lease_owner = %s AND lease_epoch = %s AND status = 'RUNNING'"
            " RETURNING run_id) SELECT pg_notify(%s, '') FROM released",
            (run_id, owner, epoch, self.channel),
        )

    async def next_wake_at(
        self,
        *,
        workflows: Sequence[tuple[str, str]] | None = None,
        queues: Sequence[str] | None = None,
    ) -> datetime | None:
        where: list[str] = []
        params: dict[str, Any] = {}
        if not _claims.filters(where, params, workflows, queues):
            return None
        extra = "".join(f" AND {w}" for w in where)
        s = self.schema
        row = await self._one(
            "SELECT least("
            f"(SELECT 'epoch'::timestamptz FROM {s}.runs WHERE status = 'PENDING'{extra}"
            " LIMIT 1),"
            f" (SELECT min(wake_at) FROM {s}.runs WHERE status = 'SUSPENDED'{extra}),"
            f" (SELECT min(lease_expires_at) FROM {s}.runs WHERE status = 'RUNNING'{extra})"
            ") AS t",
            params,
        )
        return utc(row["t"]) if row is not None else None

    async def request_cancel(
        self, cancellations: Sequence[Cancellation], *, now: datetime
    ) -> RunRecord:
        s = self.schema
        if not cancellations:
            raise ValueError("request_cancel needs at least the run to cancel")
        run_id = cancellations[0].run_id

        async def cancel(conn: Conn) -> RunRecord:
            query = f"SELECT {RUN_COLUMNS} FROM {s}.runs WHERE run_id = %s"
            cur = await conn.execute(query + " FOR UPDATE", (run_id,))
            row = await cur.fetchone()
            if row is None:
                raise RunNotFound(run_id)
            run = run_from_row(row)
            if run.status.terminal:
                raise RunStateError(
                    f"run {run_id} already ended ({run.status}); there is nothing to cancel"
                )
            for cancellation in cancellations:
                await _writes.cancel(conn, s, cancellation, now, channel=self.channel)
            await _writes.notify(conn, self.channel)
            cur = await conn.execute(query, (run_id,))
            row = await cur.fetchone()
            assert row is not None
            return run_from_row(row)

        return await self._transaction(cancel)

    async def redrive_runs(self, redrives: Sequence[Redrive], *, now: datetime) -> list[RunRecord]:
        s = self.schema

        async def redrive(conn: Conn) -> list[RunRecord]:
            runs = [await _writes.redrive(conn, s, rd, now) for rd in redrives]
            await _writes.notify(conn, self.channel)
            return runs

        return await self._transaction(redrive)

    async def fork_run(
        self, run: RunRecord, events: Sequence[HistoryEvent], journal: Sequence[OpRecord]
    ) -> RunRecord:
        s = self.schema

        async def fork(conn: Conn) -> RunRecord:
            await _writes.insert_run(conn, s, run)
            await _writes.insert_history(conn, s, run.run_id, events)
            if journal:
                await _writes.upsert_ops(conn, s, run.run_id, journal)
            await _writes.notify(conn, self.channel)
            return run

        return await self._transaction(fork)

    # --- queues -------------------------------------------------------------------------

    async def put_queue(self, config: QueueConfig) -> None:
        await self._one(
            f"WITH q AS (INSERT INTO {self.schema}.queues (name, concurrency, rate_limit,"
            " rate_period_s) VALUES (%s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
            " concurrency = excluded.concurrency, rate_limit = excluded.rate_limit,"
            " rate_period_s = excluded.rate_period_s RETURNING name)"
            " SELECT pg_notify(%s, '') FROM q",
            (
                config.name,
                config.concurrency,
                config.rate_limit,
                config.rate_period.total_seconds(),
                self.channel,
            ),
        )
        self._limited = (0.0, [])

    async def list_queues(self) -> list[QueueConfig]:
        rows = await self._all(f"SELECT {QUEUE_COLUMNS} FROM {self.schema}.queues ORDER BY name")
        return [queue_from_row(r) for r in rows]

    async def queue_stats(self, *, now: datetime) -> list[QueueStats]:
        rows = await self._all(_claims.queue_stats_query(self.schema), {"now": now})
        stats = {"default": QueueStats("default")}
        for r in rows:
            stats[r["queue"]] = QueueStats(
                r["queue"],
                runnable=int(r["runnable"] or 0),
                running=int(r["running"] or 0),
                waiting=int(r["waiting"] or 0),
                oldest_due_at=utc(r["due"]),
            )
        return [stats[name] for name in sorted(stats)]

    # --- activations --------------------------------------------------------------------

    async def load_journal(self, run_id: str) -> list[OpRecord]:
        rows = await self._all(
            f"SELECT {OP_COLUMNS} FROM {self.schema}.ops WHERE run_id = %s", (run_id,)
        )
        return [op_from_row(r) for r in rows]

    async def load_callbacks(self, run_id: str) -> list[CallbackRecord]:
        rows = await self._all(
            f"SELECT {CALLBACK_COLUMNS} FROM {self.schema}.callbacks WHERE run_id = %s",
            (run_id,),
        )
        return [callback_from_row(r) for r in rows]

    async def load_activation(self, run_id: str) -> tuple[list[OpRecord], list[CallbackRecord]]:
        loaded = self._loaded.take(run_id)  # read with the claim a moment ago
        if loaded is not None:
            return loaded
        s = self.schema
        async with self._connection() as conn, conn.pipeline():  # one round trip
            ops = await conn.execute(
                f"SELECT {OP_COLUMNS} FROM {s}.ops WHERE run_id = %s", (run_id,)
            )
            callbacks = await conn.execute(
                f"SELECT {CALLBACK_COLUMNS} FROM {s}.callbacks WHERE run_id = %s", (run_id,)
            )
            return (
                [op_from_row(r) for r in await ops.fetchall()],
                [callback_from_row(r) for r in await callbacks.fetchall()],
            )

    async def commit(self, checkpoint: Checkpoint) -> CommitResult:
        self._loaded.drop(checkpoint.run_id)  # what the claim read is no longer the journal
        if checkpoint.events:  # our own relay need not wait for the notification
            self._listener.outbox_changed()
        # Concurrent checkpoints share one transaction (see _group).
        return await self._groups.submit(checkpoint)

    async def _checkpoint_in(self, conn: Conn, cp: Checkpoint) -> CommitResult:
        """One checkpoint of a group, inside the group's transaction."""
        result = await _writes.apply_checkpoint(conn, self.schema, cp, channel=self.channel)
        if result is None:
            raise await _writes.fence_error(conn, self.schema, cp)
        return await _writes.finish_checkpoint(conn, self.schema, cp, result, channel=self.channel)

    async def _commit_alone(self, cp: Checkpoint) -> CommitResult:
        """One checkpoint in its own transaction (one statement when it can be)."""
        s = self.schema
        if not _writes.needs_transaction(cp):
            async with self._connection() as conn:
                result = await _writes.apply_checkpoint(conn, s, cp, channel=self.channel)
                if result is not None:
                    return result
                raise await _writes.fence_error(conn, s, cp)
        return await self._transaction(lambda conn: self._checkpoint_in(conn, cp))

    async def history(self, run_id: str, *, after_seq: int = 0) -> list[HistoryEvent]:
        rows = await self._all(
            "SELECT seq, type, ts, op_id, parent_id, name, details"
            f" FROM {self.schema}.history WHERE run_id = %s AND seq > %s ORDER BY seq",
            (run_id, after_seq),
        )
        return [history_from_row(r) for r in rows]

    # --- callbacks ----------------------------------------------------------------------

    async def get_callback(self, callback_id: str) -> CallbackRecord:
        row = await self._one(
            f"SELECT {CALLBACK_COLUMNS} FROM {self.schema}.callbacks WHERE callback_id = %s",
            (callback_id,),
        )
        if row is None:
            raise CallbackNotFound(f"no callback {callback_id!r}")
        return callback_from_row(row)

    async def complete_callback(self, resolution: CallbackResolution, *, now: datetime) -> bool:
        return await self._transaction(
            lambda conn: _writes.resolve_callback(
                conn, self.schema, resolution, now, channel=self.channel
            ),
            atomic=False,
        )

    async def heartbeat_callback(self, callback_id: str, *, now: datetime) -> bool:
        row = await self._one(
            f"UPDATE {self.schema}.callbacks SET heartbeat_at = %s WHERE callback_id = %s"
            " AND status = 'PENDING' RETURNING callback_id",
            (now, callback_id),
        )
        return row is not None

    async def open_event_waiters(self) -> list[CallbackRecord]:
        rows = await self._all(
            f"SELECT {CALLBACK_COLUMNS} FROM {self.schema}.callbacks"
            " WHERE kind = 'event' AND status = 'PENDING' ORDER BY created_at"
        )
        return [callback_from_row(r) for r in rows]

    # --- events -------------------------------------------------------------------------

    async def publish(self, events: Sequence[dict[str, Any]], *, now: datetime) -> None:
        async def publish(conn: Conn) -> None:
            await _writes.insert_events(conn, self.schema, events, now)
            await _writes.notify(conn, self.channel, OUTBOX)

        if events:
            await self._transaction(publish)
            self._listener.outbox_changed()

    async def fetch_outbox(self, *, limit: int) -> list[OutboxEntry]:
        # Every worker relays on every round; while this process listens, an outbox found
        # empty stays empty until a notification says otherwise, so skip the query.
        if not self._listener.outbox_may_have_entries():
            return []
        rows = await self._all(
            f"SELECT seq, event, published_at, delivered_at FROM {self.schema}.outbox"
            " WHERE delivered_at IS NULL ORDER BY seq LIMIT %s",
            (limit,),
        )
        if not rows:
            self._listener.outbox_seen_empty()
        return [outbox_from_row(r) for r in rows]

    async def mark_delivered(self, seqs: Sequence[int], *, now: datetime) -> None:
        if seqs:
            await self._execute(
                f"UPDATE {self.schema}.outbox SET delivered_at = %s WHERE seq = ANY(%s)",
                (now, list(seqs)),
            )

    async def list_events(self, *, limit: int = 50) -> list[OutboxEntry]:
        rows = await self._all(
            f"SELECT seq, event, published_at, delivered_at FROM {self.schema}.outbox"
            " ORDER BY seq DESC LIMIT %s",
            (limit,),
        )
        return [outbox_from_row(r) for r in rows]

    async def delete_rule(self, name: str) -> bool:
        row = await self._one(
            f"DELETE FROM {self.schema}.rules WHERE name = %s RETURNING name", (name,)
        )
        return row is not None


def _translate(exc: psycopg.Error) -> StoreError:
    """A PostgreSQL error as the store error the engine understands, most specific first."""
    if isinstance(exc, errors.IntegrityError):
        return StoreError(f"PostgreSQL refused the write: {_brief(exc)}", retryable=False)
    if isinstance(exc, errors.DataError):
        return StoreError(f"PostgreSQL cannot store this value: {_brief(exc)}", retryable=False)
    if isinstance(exc, (errors.DeadlockDetected, errors.SerializationFailure)):
        return StoreError(f"PostgreSQL transaction conflict: {_brief(exc)}", retryable=True)
    if isinstance(exc, errors.UndefinedTable):
        return StoreError(
            f"PostgreSQL has no cadenza tables here ({_brief(exc)}); run 'cadenza db upgrade'",
            retryable=False,
        )
    if isinstance(exc, errors.DiskFull):
        return StoreFull(
            f"the disk of the PostgreSQL server is full ({_brief(exc)}): nothing of this write"
            " was stored. Free space there; workers resume by themselves once there is room"
        )
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return StoreUnavailable(f"PostgreSQL is unavailable: {_brief(exc)}")
    return StoreError(f"PostgreSQL error: {_brief(exc)}")


def _brief(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url
