"""What the service needs of the PostgreSQL store: run listings with filters and a cursor,
tenant-aware rules, audit entries appended to a history, and API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from cadenza.adapters.postgres._rows import (
    RUN_COLUMNS,
    history_params,
    jsonb,
    rule_from_row,
    run_from_row,
    utc,
)
from cadenza.errors import RunNotFound
from cadenza.history import HistoryEvent
from cadenza.ports.run_store import ApiKeyRecord, Rule, RunPage, RunRecord, RunStatus

_KEY_COLUMNS = "key_id, name, tenant, scopes, secret_hash, created_at, revoked_at"


class PostgresServiceTables:
    """Mixed into :class:`PostgresRunStore`, which provides ``schema`` and the query
    helpers ``_all``, ``_one`` and ``_execute``."""

    schema: str

    if TYPE_CHECKING:  # provided by the store this is mixed into

        async def _all(self, query: str, params: Any = None) -> list[dict[str, Any]]: ...

        async def _one(self, query: str, params: Any = None) -> dict[str, Any] | None: ...

        async def _execute(self, query: str, params: Any = None) -> None: ...

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
                where.append(f"{column} = %s")
                args.append(str(value))
        if created_after is not None:
            where.append("created_at >= %s")
            args.append(created_after)
        if created_before is not None:
            where.append("created_at < %s")
            args.append(created_before)
        if after is not None:
            where.append("(created_at, run_id) < (%s, %s)")
            args += [after.created_at, after.run_id]
        if text:
            where.append("strpos(lower(run_id || ' ' || workflow || ' ' || input), %s) > 0")
            args.append(text.lower())
        query = f"SELECT {RUN_COLUMNS} FROM {self.schema}.runs"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY created_at DESC, run_id DESC LIMIT %s"
        args.append(max(limit, 0))
        return [run_from_row(r) for r in await self._all(query, args)]

    async def append_history(self, run_id: str, events: Sequence[HistoryEvent]) -> None:
        if not events:
            if await self._one(f"SELECT 1 FROM {self.schema}.runs WHERE run_id = %s", (run_id,)):
                return
            raise RunNotFound(run_id)
        # One statement per event, inserted only when the run exists: the history's seq
        # is a sequence, so appends never race checkpoints for a number.
        for event in events:
            row = await self._one(
                f"INSERT INTO {self.schema}.history (run_id, type, ts, op_id, parent_id, name,"
                " details) SELECT %s, %s, %s, %s, %s, %s, %s"
                f" WHERE EXISTS (SELECT 1 FROM {self.schema}.runs WHERE run_id = %s)"
                " RETURNING seq",
                (*history_params(run_id, event), run_id),
            )
            if row is None:
                raise RunNotFound(run_id)

    # --- rules ----------------------------------------------------------------------------

    async def put_rule(self, rule: Rule) -> None:
        await self._execute(
            f"INSERT INTO {self.schema}.rules (name, pattern, target, params, enabled,"
            " created_at, tenant) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name)"
            " DO UPDATE SET pattern = excluded.pattern, target = excluded.target,"
            " params = excluded.params, enabled = excluded.enabled, tenant = excluded.tenant",
            (
                rule.name,
                jsonb(rule.pattern),
                rule.target,
                jsonb(rule.params),
                rule.enabled,
                rule.created_at,
                rule.tenant,
            ),
        )

    async def list_rules(self) -> list[Rule]:
        rows = await self._all(
            "SELECT name, pattern, target, params, enabled, created_at, tenant"
            f" FROM {self.schema}.rules ORDER BY name"
        )
        return [rule_from_row(r) for r in rows]

    # --- API keys -------------------------------------------------------------------------

    async def put_api_key(self, key: ApiKeyRecord) -> None:
        await self._execute(
            f"INSERT INTO {self.schema}.api_keys ({_KEY_COLUMNS})"
            " VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                key.key_id,
                key.name,
                key.tenant,
                Jsonb(list(key.scopes)),
                key.secret_hash,
                key.created_at,
                key.revoked_at,
            ),
        )

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        row = await self._one(
            f"SELECT {_KEY_COLUMNS} FROM {self.schema}.api_keys WHERE key_id = %s", (key_id,)
        )
        return None if row is None else _key_from_row(row)

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        rows = await self._all(
            f"SELECT {_KEY_COLUMNS} FROM {self.schema}.api_keys ORDER BY created_at, key_id"
        )
        return [_key_from_row(r) for r in rows]

    async def revoke_api_key(self, key_id: str, *, now: datetime) -> bool:
        row = await self._one(
            f"UPDATE {self.schema}.api_keys SET revoked_at = %s"
            " WHERE key_id = %s AND revoked_at IS NULL RETURNING key_id",
            (now, key_id),
        )
        return row is not None


def _key_from_row(r: dict[str, Any]) -> ApiKeyRecord:
    created = utc(r["created_at"])
    assert created is not None
    return ApiKeyRecord(
        key_id=r["key_id"],
        name=r["name"],
        tenant=r["tenant"],
        scopes=tuple(r["scopes"]),
        secret_hash=r["secret_hash"],
        created_at=created,
        revoked_at=utc(r["revoked_at"]),
    )
