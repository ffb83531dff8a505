"""SqliteRunStore: the embedded run store, one SQLite file in WAL mode.

Durability: ``synchronous=FULL`` by default, so a committed checkpoint survives a power
loss as well as a process crash; ``?synchronous=NORMAL`` in the URL trades the last
commits on power loss for speed. Several processes may share the file (a worker and the
CLI, say): writers take SQLite's write lock with BEGIN IMMEDIATE and wait for it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

from cadenza.adapters.sqlite import _claims
from cadenza.adapters.sqlite._retention import SqliteRetention
from cadenza.adapters.sqlite._rows import (
    NULL,
    _callback_from_row,
    _callback_row,
    _dt,
    _error_json,
    _op_from_row,
    _outbox_from_row,
    _req_dt,
    _run_from_row,
    _ts,
    upsert_ops,
)
from cadenza.adapters.sqlite._schedules import SqliteSchedules
from cadenza.adapters.sqlite._schema import MIGRATIONS
from cadenza.adapters.sqlite._service import SqliteServiceTables
from cadenza.adapters.sqlite._writer import SqliteWriter, run_id_taken
from cadenza.errors import (
    CallbackNotFound,
    CheckpointConflict,
    ConfigurationError,
    LeaseLost,
    RunAlreadyExists,
    RunNotFound,
    RunStateError,
)
from cadenza.history import HistoryEvent, HistoryEventType
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
    RunStatus,
    RunStore,
    WakeUp,
)

T = TypeVar("T")

_RUNNABLE = (
    "(status = 'PENDING' OR (status = 'SUSPENDED' AND wake_at <= :now)"
    " OR (status = 'RUNNING' AND lease_expires_at <= :now))"
)
_RUN_COLUMNS = (
    "run_id, workflow, version, module, status, input, result, error, parent_run_id,"
    " parent_op_id, queue, priority, wake_at, lease_owner, lease_epoch, lease_expires_at,"
    " cancel_requested, state, trace_id, idempotency_key, created_at, updated_at, origin,"
    " tenant"
)
# Where the run's history ends, read with the fence (the run row) in one statement.
_LAST_SEQ = "(SELECT COALESCE(MAX(seq), 0) FROM history WHERE run_id = :run_id)"
_CALLBACK_COLUMNS = (
    "callback_id, run_id, op_id, kind, status, created_at, expires_at, heartbeat_timeout_s,"
    " heartbeat_at, pattern, result, error, completed_at, payload_schema"
)


class SqliteRunStore(SqliteRetention, SqliteServiceTables, SqliteSchedules, RunStore):
    """Run store on one SQLite file: ``sqlite:///path/to/cadenza.db``."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "FULL",
        busy_timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ConfigurationError(
                f"synchronous={synchronous!r} is not a SQLite setting; use FULL or NORMAL"
            )
        self.path = Path(path)
        self.synchronous = synchronous.upper()
        # How long a write waits for another process's write lock before it fails with a
        # retryable StoreError ("database is locked").
        self.busy_timeout = busy_timeout
        self.url = f"sqlite:///{self.path}"
        self._writer = SqliteWriter(self._connect, self.path, self.synchronous)

    @classmethod
    def from_url(cls, url: str) -> SqliteRunStore:
        parsed = urlparse(url)
        path = parsed.path if parsed.netloc == "" else parsed.netloc + parsed.path
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        elif url.startswith("sqlite:///"):
            path = path[1:] if path.startswith("/") else path
        if not path:
            raise ConfigurationError(f"{url!r} names no file; use sqlite:///path/to/cadenza.db")
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        return cls(path, synchronous=options.get("synchronous", "FULL"))

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout.total_seconds() * 1000)}")
        conn.execute("PRAGMA foreign_keys=OFF")
        return conn

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._writer.submit(fn, write=True)

    async def _write_lazily(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A write its caller need not have on disk before going on (see _writer)."""
        return await self._writer.submit(fn, write=True, lazy=True)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._writer.submit(fn, write=False)

    async def open(self) -> None:
        self._writer.start()
        await self._write(_migrate)

    async def close(self) -> None:
        self._writer.stop()

    # --- runs ---------------------------------------------------------------------------

    async def create_run(self, run: RunRecord, started: HistoryEvent) -> RunRecord:
        def create(conn: sqlite3.Connection) -> RunRecord:
            if run.idempotency_key is not None:
                row = conn.execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE idempotency_key = ?",
                    (run.idempotency_key,),
                ).fetchone()
                if row is not None:
                    return _run_from_row(row)
            try:
                _insert_run(conn, run)
            except sqlite3.IntegrityError as exc:
                if not run_id_taken(exc):
                    raise
                raise RunAlreadyExists.id_taken(run.run_id) from exc
            _insert_history(conn, run.run_id, [started])
            return run

        return await self._write(create)

    async def get_run(self, run_id: str) -> RunRecord:
        def get(conn: sqlite3.Connection) -> RunRecord:
            row = conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            return _run_from_row(row)

        return await self._read(get)

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
        params: dict[str, Any] = {
            "now": _ts(now),
            "owner": owner,
            "until": _ts(lease_until),
            "limit": limit,
        }
        where = [_RUNNABLE]
        if not _claims.filters(where, params, workflows, queues):
            return []
        if run_id is not None:
            where.append("run_id = :run_id")
            params["run_id"] = run_id
        if trace_id is not None:
            where.append("trace_id = :trace_id")
            params["trace_id"] = trace_id
        probe = "SELECT 1 FROM runs WHERE " + " AND ".join(where) + " LIMIT 1"
        probe_params = {k: v for k, v in params.items() if k not in ("owner", "until", "limit")}
        # An idle poll must not cost a write transaction (and an fsync): look first.
        if not await self._read(lambda conn: conn.execute(probe, probe_params).fetchone()):
            return []
        # Lazily: whatever the claimant then commits durably makes the claim durable too.
        return await self._write_lazily(
            lambda conn: [
                _run_from_row(r)
                for r in _claims.claim(conn, where, params, now, columns=_RUN_COLUMNS)
            ]
        )

    async def renew_lease(
        self, run_id: str, *, owner: str, epoch: int, lease_until: datetime
    ) -> bool:
        def renew(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE runs SET lease_expires_at = ? WHERE run_id = ? AND lease_owner = ?"
                " AND lease_epoch = ?",
                (_ts(lease_until), run_id, owner, epoch),
            )
            return cur.rowcount == 1

        return await self._write_lazily(renew)

    async def release_lease(self, run_id: str, *, owner: str, epoch: int) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE runs SET status = 'PENDING', lease_owner = NULL,"
                " lease_expires_at = NULL WHERE run_id = ? AND lease_owner = ?"
                " AND lease_epoch = ? AND status = 'RUNNING'",
                (run_id, owner, epoch),
            )
        )

    async def next_wake_at(
        self,
        *,
        workflows: Sequence[tuple[str, str]] | None = None,
        queues: Sequence[str] | None = None,
    ) -> datetime | None:
        where = ["status IN ('PENDING', 'SUSPENDED', 'RUNNING')"]
        params: dict[str, Any] = {}
        if not _claims.filters(where, params, workflows, queues):
            return None
        sql = (
            "SELECT MIN(CASE status WHEN 'PENDING' THEN 0 WHEN 'SUSPENDED' THEN wake_at"
            " ELSE lease_expires_at END) FROM runs WHERE " + " AND ".join(where)
        )
        return await self._read(lambda conn: _dt(conn.execute(sql, params).fetchone()[0]))

    async def request_cancel(
        self, cancellations: Sequence[Cancellation], *, now: datetime
    ) -> RunRecord:
        if not cancellations:
            raise ValueError("request_cancel needs at least the run to cancel")
        run_id = cancellations[0].run_id

        def cancel(conn: sqlite3.Connection) -> RunRecord:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            if RunStatus(row["status"]).terminal:
                raise RunStateError(
                    f"run {run_id} already ended ({row['status']}); there is nothing to cancel"
                )
            for cancellation in cancellations:
                _cancel(conn, cancellation, now)
            return _run_from_row(
                conn.execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
            )

        return await self._write(cancel)

    async def redrive_runs(self, redrives: Sequence[Redrive], *, now: datetime) -> list[RunRecord]:
        return await self._write(lambda conn: [_redrive(conn, r, now) for r in redrives])

    async def fork_run(
        self, run: RunRecord, events: Sequence[HistoryEvent], journal: Sequence[OpRecord]
    ) -> RunRecord:
        def fork(conn: sqlite3.Connection) -> RunRecord:
            _insert_run(conn, run)
            _insert_history(conn, run.run_id, list(events))
            if journal:
                upsert_ops(conn, run.run_id, journal)
            return run

        return await self._write(fork)

    # --- queues -------------------------------------------------------------------------

    async def put_queue(self, config: QueueConfig) -> None:
        await self._write(lambda conn: _claims.put_queue(conn, config))

    async def list_queues(self) -> list[QueueConfig]:
        return await self._read(_claims.list_queues)

    async def queue_stats(self, *, now: datetime) -> list[QueueStats]:
        return await self._read(lambda conn: _claims.queue_stats(conn, _RUNNABLE, now))

    # --- activations --------------------------------------------------------------------

    async def load_activation(self, run_id: str) -> tuple[list[OpRecord], list[CallbackRecord]]:
        return await self._read(lambda conn: (_journal(conn, run_id), _callbacks_of(conn, run_id)))

    async def load_journal(self, run_id: str) -> list[OpRecord]:
        return await self._read(lambda conn: _journal(conn, run_id))

    async def load_callbacks(self, run_id: str) -> list[CallbackRecord]:
        return await self._read(lambda conn: _callbacks_of(conn, run_id))

    async def commit(self, checkpoint: Checkpoint) -> CommitResult:
        return await self._write(lambda conn: _commit(conn, checkpoint))

    async def history(self, run_id: str, *, after_seq: int = 0) -> list[HistoryEvent]:
        def read(conn: sqlite3.Connection) -> list[HistoryEvent]:
            rows = conn.execute(
                "SELECT seq, type, ts, op_id, parent_id, name, details FROM history"
                " WHERE run_id = ? AND seq > ? ORDER BY seq",
                (run_id, after_seq),
            ).fetchall()
            return [
                HistoryEvent(
                    seq=r["seq"],
                    type=HistoryEventType(r["type"]),
                    timestamp=_req_dt(r["ts"]),
                    op_id=r["op_id"],
                    parent_id=r["parent_id"],
                    name=r["name"],
                    details=json.loads(r["details"]) if r["details"] else {},
                )
                for r in rows
            ]

        return await self._read(read)

    # --- callbacks ----------------------------------------------------------------------

    async def get_callback(self, callback_id: str) -> CallbackRecord:
        def get(conn: sqlite3.Connection) -> CallbackRecord:
            row = conn.execute(
                f"SELECT {_CALLBACK_COLUMNS} FROM callbacks WHERE callback_id = ?",
                (callback_id,),
            ).fetchone()
            if row is None:
                raise CallbackNotFound(f"no callback {callback_id!r}")
            return _callback_from_row(row)

        return await self._read(get)

    async def complete_callback(self, resolution: CallbackResolution, *, now: datetime) -> bool:
        return await self._write(lambda conn: _resolve_callback(conn, resolution, now))

    async def heartbeat_callback(self, callback_id: str, *, now: datetime) -> bool:
        def beat(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE callbacks SET heartbeat_at = ? WHERE callback_id = ?"
                " AND status = 'PENDING'",
                (_ts(now), callback_id),
            )
            return cur.rowcount == 1

        return await self._write(beat)

    async def open_event_waiters(self) -> list[CallbackRecord]:
        return await self._read(
            lambda conn: [
                _callback_from_row(r)
                for r in conn.execute(
                    f"SELECT {_CALLBACK_COLUMNS} FROM callbacks"
                    " WHERE kind = 'event' AND status = 'PENDING' ORDER BY created_at"
                ).fetchall()
            ]
        )

    # --- events -------------------------------------------------------------------------

    async def publish(self, events: Sequence[dict[str, Any]], *, now: datetime) -> None:
        await self._write(lambda conn: _insert_events(conn, events, now))

    async def fetch_outbox(self, *, limit: int) -> list[OutboxEntry]:
        return await self._read(
            lambda conn: [
                _outbox_from_row(r)
                for r in conn.execute(
                    "SELECT seq, event, published_at, delivered_at FROM outbox"
                    " WHERE delivered_at IS NULL ORDER BY seq LIMIT ?",
                    (limit,),
                ).fetchall()
            ]
        )

    async def mark_delivered(self, seqs: Sequence[int], *, now: datetime) -> None:
        await self._write(
            lambda conn: conn.executemany(
                "UPDATE outbox SET delivered_at = ? WHERE seq = ?", [(_ts(now), s) for s in seqs]
            )
        )

    async def list_events(self, *, limit: int = 50) -> list[OutboxEntry]:
        return await self._read(
            lambda conn: [
                _outbox_from_row(r)
                for r in conn.execute(
                    "SELECT seq, event, published_at, delivered_at FROM outbox"
                    " ORDER BY seq DESC LIMIT ?",
                    (limit,),
                ).fetchall()
            ]
        )

    async def delete_rule(self, name: str) -> bool:
        return await self._write(
            lambda conn: conn.execute("DELETE FROM rules WHERE name = ?", (name,)).rowcount == 1
        )


# --- the work done on the writer thread ------------------------------------------------


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    current = row[0] or 0
    for version, statements in enumerate(MIGRATIONS, start=1):
        if version > current:
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))


def _journal(conn: sqlite3.Connection, run_id: str) -> list[OpRecord]:
    return [
        _op_from_row(r)
        for r in conn.execute(
            "SELECT op_id, parent_id, type, name, status, attempt, result, error,"
            " started_at, ended_at, data FROM ops WHERE run_id = ?",
            (run_id,),
        ).fetchall()
    ]


def _callbacks_of(conn: sqlite3.Connection, run_id: str) -> list[CallbackRecord]:
    return [
        _callback_from_row(r)
        for r in conn.execute(
            f"SELECT {_CALLBACK_COLUMNS} FROM callbacks WHERE run_id = ?", (run_id,)
        ).fetchall()
    ]


def _commit(conn: sqlite3.Connection, cp: Checkpoint) -> CommitResult:
    # The run update doubles as the fence check: it only matches while the lease is ours.
    # It also reads where the run's history ends, so the events append without a lookup.
    row = _update_run(conn, cp)
    if row is None:
        current = conn.execute(
            "SELECT lease_owner, lease_epoch FROM runs WHERE run_id = ?", (cp.run_id,)
        ).fetchone()
        if current is None:
            raise RunNotFound(cp.run_id)
        raise LeaseLost(
            f"run {cp.run_id}: lease epoch {cp.expected_epoch} of {cp.owner} is no longer"
            f" current (now {current['lease_epoch']} of {current['lease_owner']});"
            " checkpoint rejected"
        )
    for resolution in cp.resolutions:
        if not _set_callback(conn, resolution, cp.now):
            raise CheckpointConflict(
                f"run {cp.run_id}: callback {resolution.callback_id} was completed meanwhile"
            )
    if cp.ops:
        upsert_ops(conn, cp.run_id, cp.ops)
    if cp.history:
        _append_history(conn, cp.run_id, cp.history, row[1] + 1)
    if cp.callbacks:
        conn.executemany(
            f"INSERT INTO callbacks ({_CALLBACK_COLUMNS}) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_callback_row(cb) for cb in cp.callbacks],
        )
    for child in cp.children:
        _insert_run(conn, child.run)
        _insert_history(conn, child.run.run_id, [child.started])
    if cp.events:
        _insert_events(conn, cp.events, cp.now)
    for wake_up in cp.wake_ups:
        _apply_wake_up(conn, wake_up, cp.now)
    for cancellation in cp.cancels:
        _cancel(conn, cancellation, cp.now)
    return CommitResult(cancel_requested=bool(row[0]))


def _update_run(conn: sqlite3.Connection, cp: Checkpoint) -> sqlite3.Row | None:
    params: dict[str, Any] = {
        "now": _ts(cp.now),
        "run_id": cp.run_id,
        "owner": cp.owner,
        "epoch": cp.expected_epoch,
    }
    if cp.state is None and cp.outcome is None and not cp.suspend:
        # Nothing about the run itself changes (a step's result, say): check the fence with
        # a read and leave the row alone, sparing the commit a page write.
        fenced: sqlite3.Row | None = conn.execute(
            f"SELECT cancel_requested, {_LAST_SEQ} FROM runs WHERE run_id = :run_id"
            " AND lease_owner = :owner AND lease_epoch = :epoch",
            params,
        ).fetchone()
        return fenced
    sets = ["updated_at = :now"]
    if cp.state is not None:
        sets.append("state = :state")
        params["state"] = json.dumps(cp.state)
    if cp.outcome is not None:
        sets += [
            "status = :status",
            "result = :result",
            "error = :error",
            "lease_owner = NULL",
            "lease_expires_at = NULL",
            "wake_at = NULL",
        ]
        params.update(
            status=str(cp.outcome.status),
            result=cp.outcome.result,
            error=_error_json(cp.outcome.error),
        )
    elif cp.suspend:
        sets += [
            "status = CASE WHEN wake_requested = 1 THEN 'PENDING' ELSE 'SUSPENDED' END",
            "wake_at = :wake_at",
            "lease_owner = NULL",
            "lease_expires_at = NULL",
        ]
        params["wake_at"] = _ts(cp.wake_at)
    row: sqlite3.Row | None = conn.execute(
        f"UPDATE runs SET {', '.join(sets)} WHERE run_id = :run_id"
        " AND lease_owner = :owner AND lease_epoch = :epoch"
        f" RETURNING cancel_requested, {_LAST_SEQ}",
        params,
    ).fetchone()
    return row


def _set_callback(conn: sqlite3.Connection, res: CallbackResolution, now: datetime) -> bool:
    cur = conn.execute(
        "UPDATE callbacks SET status = ?, result = ?, error = ?, completed_at = ?"
        " WHERE callback_id = ? AND status = 'PENDING'",
        (str(res.status), res.result, _error_json(res.error), _ts(now), res.callback_id),
    )
    return cur.rowcount == 1


def _resolve_callback(conn: sqlite3.Connection, res: CallbackResolution, now: datetime) -> bool:
    """Resolve a callback from outside its run and wake the run, unless it already ended."""
    row = conn.execute(
        "SELECT c.run_id, r.status FROM callbacks c JOIN runs r ON r.run_id = c.run_id"
        " WHERE c.callback_id = ?",
        (res.callback_id,),
    ).fetchone()
    if row is None:
        raise CallbackNotFound(f"no callback {res.callback_id!r}")
    if RunStatus(row["status"]).terminal:
        raise RunStateError(
            f"run {row['run_id']} already ended ({row['status']}); its callbacks are closed"
        )
    if not _set_callback(conn, res, now):
        return False
    _wake(conn, row["run_id"], now)
    return True


def _apply_wake_up(conn: sqlite3.Connection, wake_up: WakeUp, now: datetime) -> None:
    """Resolve another run's callback and wake that run, if the run has not ended and the
    callback still waits; otherwise nothing (see :class:`WakeUp`)."""
    run = conn.execute("SELECT status FROM runs WHERE run_id = ?", (wake_up.run_id,)).fetchone()
    if run is None or RunStatus(run["status"]).terminal:
        return
    res = wake_up.resolution
    cur = conn.execute(
        "UPDATE callbacks SET status = ?, result = ?, error = ?, completed_at = ?"
        " WHERE callback_id = ? AND run_id = ? AND status = 'PENDING'",
        (
            str(res.status),
            res.result,
            _error_json(res.error),
            _ts(now),
            res.callback_id,
            wake_up.run_id,
        ),
    )
    if cur.rowcount == 1:
        _wake(conn, wake_up.run_id, now)
        return
    known = conn.execute(
        "SELECT 1 FROM callbacks WHERE callback_id = ? AND run_id = ?",
        (res.callback_id, wake_up.run_id),
    ).fetchone()
    if known is None:
        raise CallbackNotFound.to_wake(wake_up.run_id, res.callback_id)


def _wake(conn: sqlite3.Connection, run_id: str, now: datetime) -> None:
    conn.execute(
        "UPDATE runs SET wake_requested = 1, updated_at = ?,"
        " status = CASE status WHEN 'SUSPENDED' THEN 'PENDING' ELSE status END"
        " WHERE run_id = ?",
        (_ts(now), run_id),
    )


def _cancel(conn: sqlite3.Connection, cancellation: Cancellation, now: datetime) -> None:
    """Apply one planned cancellation to the run as it is now (see :class:`Cancellation`)."""
    ts = _ts(now)
    # A run held under a live lease is only flagged: its worker ends it at its next
    # checkpoint. The condition is read here, in the write, since claims race the plan.
    flagged = conn.execute(
        "UPDATE runs SET cancel_requested = 1, updated_at = ? WHERE run_id = ?"
        " AND status = 'RUNNING' AND lease_expires_at > ?",
        (ts, cancellation.run_id, ts),
    )
    if flagged.rowcount == 1:
        return
    ended = conn.execute(
        "UPDATE runs SET status = 'CANCELLED', cancel_requested = 1, error = ?,"
        " lease_owner = NULL, lease_expires_at = NULL, wake_at = NULL, updated_at = ?"
        " WHERE run_id = ? AND status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELLED')",
        (_error_json(cancellation.error), ts, cancellation.run_id),
    )
    if ended.rowcount != 1:
        return  # it ended meanwhile
    _insert_history(conn, cancellation.run_id, [cancellation.event])
    if cancellation.wake_up is not None:
        _apply_wake_up(conn, cancellation.wake_up, now)


def _redrive(conn: sqlite3.Connection, rd: Redrive, now: datetime) -> RunRecord:
    row = conn.execute(
        "SELECT status, lease_epoch FROM runs WHERE run_id = ?", (rd.run_id,)
    ).fetchone()
    if row is None:
        raise RunNotFound(rd.run_id)
    if row["status"] not in ("FAILED", "CANCELLED") or row["lease_epoch"] != rd.expected_epoch:
        raise RunStateError(
            f"run {rd.run_id} changed since the retry was planned (it is {row['status']} now);"
            f" see 'cadenza runs show {rd.run_id}'"
        )
    if rd.drop:
        conn.executemany(
            "DELETE FROM ops WHERE run_id = ? AND op_id = ?", [(rd.run_id, o) for o in rd.drop]
        )
    if rd.reset:
        upsert_ops(conn, rd.run_id, rd.reset)
    if rd.reopen:
        conn.executemany(
            "UPDATE callbacks SET status = 'PENDING', result = NULL, error = NULL,"
            " completed_at = NULL WHERE callback_id = ? AND run_id = ?",
            [(cb, rd.run_id) for cb in rd.reopen],
        )
    conn.execute(
        "UPDATE runs SET status = 'PENDING', result = NULL, error = NULL, wake_at = NULL,"
        " lease_owner = NULL, lease_expires_at = NULL, lease_epoch = lease_epoch + 1,"
        " cancel_requested = 0, wake_requested = 0, updated_at = ?,"
        " version = COALESCE(?, version), module = COALESCE(?, module),"
        " state = COALESCE(?, state) WHERE run_id = ?",
        (
            _ts(now),
            rd.version,
            rd.module,
            json.dumps(rd.state) if rd.state is not None else None,
            rd.run_id,
        ),
    )
    _insert_history(conn, rd.run_id, [rd.event])
    return _run_from_row(
        conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (rd.run_id,)).fetchone()
    )


def _insert_run(conn: sqlite3.Connection, run: RunRecord) -> None:
    conn.execute(
        f"INSERT INTO runs ({_RUN_COLUMNS}, wake_requested) VALUES"
        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
        (
            run.run_id,
            run.workflow,
            run.version,
            run.module,
            str(run.status),
            run.input,
            run.result,
            _error_json(run.error),
            run.parent_run_id,
            run.parent_op_id,
            run.queue,
            run.priority,
            _ts(run.wake_at),
            run.lease_owner,
            run.lease_epoch,
            _ts(run.lease_expires_at),
            int(run.cancel_requested),
            json.dumps(run.state),
            run.trace_id,
            run.idempotency_key,
            _ts(run.created_at),
            _ts(run.updated_at),
            json.dumps(run.origin.to_dict()) if run.origin is not None else None,
            run.tenant,
        ),
    )


def _insert_history(conn: sqlite3.Connection, run_id: str, events: list[HistoryEvent]) -> None:
    if events:
        last = conn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM history WHERE run_id = ?", (run_id,)
        ).fetchone()[0]
        _append_history(conn, run_id, events, last + 1)


def _append_history(
    conn: sqlite3.Connection, run_id: str, events: list[HistoryEvent], first_seq: int
) -> None:
    """Append ``events`` to the run's history as seqs ``first_seq``, ``first_seq + 1``, …
    (the caller read where the history ends inside this transaction)."""
    conn.executemany(
        "INSERT INTO history (run_id, seq, type, ts, op_id, parent_id, name, details)"
        " VALUES (?, ?, ?, ?, NULLIF(?, 0), NULLIF(?, 0), NULLIF(?, 0), NULLIF(?, 0))",
        [
            (
                run_id,
                seq,
                str(e.type),
                e.timestamp.timestamp(),
                NULL if e.op_id is None else e.op_id,
                NULL if e.parent_id is None else e.parent_id,
                NULL if e.name is None else e.name,
                _details_json(e.details) if e.details else NULL,
            )
            for seq, e in enumerate(events, first_seq)
        ],
    )


# The JSON of history details; one encoder, not one built per call as json.dumps does
# when given options.
_details_json = json.JSONEncoder(default=str).encode


def _insert_events(
    conn: sqlite3.Connection, events: Sequence[dict[str, Any]], now: datetime
) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO outbox (event_id, event, published_at) VALUES (?, ?, ?)",
        [(e["id"], json.dumps(e), _ts(now)) for e in events],
    )
