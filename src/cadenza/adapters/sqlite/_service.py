"""What the service needs of the SQLite store: run listings with filters and a cursor,
tenant-aware rules, audit entries appended to a history, and API keys."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from cadenza.adapters.sqlite._rows import _dt, _run_from_row, _ts
from cadenza.errors import RunNotFound
from cadenza.history import HistoryEvent
from cadenza.ports.run_store import ApiKeyRecord, Rule, RunPage, RunRecord, RunStatus

T = TypeVar("T")

_KEY_COLUMNS = "key_id, name, tenant, scopes, secret_hash, created_at, revoked_at"


class SqliteServiceTables:
    """Mixed into :class:`SqliteRunStore`, which provides ``_read`` and ``_write``."""

    _read: Callable[..., Any]
    _write: Callable[..., Any]

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        parent_run_id: str | None = None,
        limit: int = 50,
        tenant: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        text: str | None = None,
        after: RunPage | None = None,
        trace_id: str | None = None,
    ) -> list[RunRecord]:
        where: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("status", status),
            ("workflow", workflow),
            ("parent_run_id", parent_run_id),
            ("tenant", tenant),
            ("trace_id", trace_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(str(value))
        if created_after is not None:
            where.append("created_at >= ?")
            args.append(_ts(created_after))
        if created_before is not None:
            where.append("created_at < ?")
            args.append(_ts(created_before))
        if after is not None:
            where.append("(created_at < ? OR (created_at = ? AND run_id < ?))")
            args += [_ts(after.created_at), _ts(after.created_at), after.run_id]
        if text:
            where.append("instr(lower(run_id || ' ' || workflow || ' ' || input), ?) > 0")
            args.append(text.lower())
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        args.append(max(limit, 0))
        rows: list[RunRecord] = await self._read(
            lambda conn: [_run_from_row(r) for r in conn.execute(sql, args).fetchall()]
        )
        return rows

    async def append_history(self, run_id: str, events: Sequence[HistoryEvent]) -> None:
        # Imported here: the store module imports this one to mix it in.
        from cadenza.adapters.sqlite._store import _insert_history

        def append(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise RunNotFound(run_id)
            _insert_history(conn, run_id, list(events))

        await self._write(append)

    # --- rules ----------------------------------------------------------------------------

    async def put_rule(self, rule: Rule) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT INTO rules (name, pattern, target, params, enabled, created_at, tenant)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " pattern = excluded.pattern, target = excluded.target,"
                " params = excluded.params, enabled = excluded.enabled,"
                " tenant = excluded.tenant",
                (
                    rule.name,
                    json.dumps(rule.pattern),
                    rule.target,
                    json.dumps(rule.params),
                    int(rule.enabled),
                    _ts(rule.created_at),
                    rule.tenant,
                ),
            )
        )

    async def list_rules(self) -> list[Rule]:
        rules: list[Rule] = await self._read(
            lambda conn: [
                Rule(
                    name=r["name"],
                    pattern=json.loads(r["pattern"]),
                    target=r["target"],
                    params=json.loads(r["params"]),
                    enabled=bool(r["enabled"]),
                    created_at=_dt(r["created_at"]),
                    tenant=r["tenant"],
                )
                for r in conn.execute(
                    "SELECT name, pattern, target, params, enabled, created_at, tenant"
                    " FROM rules ORDER BY name"
                ).fetchall()
            ]
        )
        return rules

    # --- API keys -------------------------------------------------------------------------

    async def put_api_key(self, key: ApiKeyRecord) -> None:
        await self._write(
            lambda conn: conn.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key.key_id,
                    key.name,
                    key.tenant,
                    json.dumps(list(key.scopes)),
                    key.secret_hash,
                    _ts(key.created_at),
                    _ts(key.revoked_at),
                ),
            )
        )

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        def get(conn: sqlite3.Connection) -> ApiKeyRecord | None:
            row = conn.execute(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,)
            ).fetchone()
            return None if row is None else _key_from_row(row)

        key: ApiKeyRecord | None = await self._read(get)
        return key

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        keys: list[ApiKeyRecord] = await self._read(
            lambda conn: [
                _key_from_row(r)
                for r in conn.execute(
                    f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, key_id"
                ).fetchall()
            ]
        )
        return keys

    async def revoke_api_key(self, key_id: str, *, now: datetime) -> bool:
        revoked: bool = await self._write(
            lambda conn: (
                conn.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                    (_ts(now), key_id),
                ).rowcount
                == 1
            )
        )
        return revoked


def _key_from_row(r: sqlite3.Row) -> ApiKeyRecord:
    created = _dt(r["created_at"])
    assert created is not None
    return ApiKeyRecord(
        key_id=r["key_id"],
        name=r["name"],
        tenant=r["tenant"],
        scopes=tuple(json.loads(r["scopes"])),
        secret_hash=r["secret_hash"],
        created_at=created,
        revoked_at=_dt(r["revoked_at"]),
    )
