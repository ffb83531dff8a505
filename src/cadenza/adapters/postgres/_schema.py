"""Versioned schema of the PostgreSQL run store, in its own schema (``cadenza`` by default).

Append a list to MIGRATIONS to change it; never edit a migration that has shipped.
``{schema}`` in a statement stands for the store's schema name. Migrations run in one
transaction under an advisory lock, so any number of workers may start at once: the first
upgrades, the others wait for it and then find nothing left to do.
"""

from __future__ import annotations

import hashlib
from typing import Any

from psycopg import AsyncConnection

MIGRATIONS: list[list[str]] = [
    [
        # fillfactor leaves room on each page for the frequent updates of a run row that
        # change no indexed column (a checkpoint's updated_at and state): HOT updates.
        """CREATE TABLE {schema}.runs (
            run_id text PRIMARY KEY,
            workflow text NOT NULL,
            version text NOT NULL,
            module text,
            status text NOT NULL,
            input text NOT NULL,
            result text,
            error jsonb,
            parent_run_id text,
            parent_op_id text,
            queue text NOT NULL DEFAULT 'default',
            priority integer NOT NULL DEFAULT 0,
            wake_at timestamptz,
            lease_owner text,
            lease_epoch bigint NOT NULL DEFAULT 0,
            lease_expires_at timestamptz,
            wake_requested boolean NOT NULL DEFAULT false,
            cancel_requested boolean NOT NULL DEFAULT false,
            state jsonb NOT NULL DEFAULT '{}'::jsonb,
            trace_id text,
            idempotency_key text UNIQUE,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        ) WITH (fillfactor = 80)""",
        # What claim_runs and next_wake_at look for: one partial index per way of being
        # runnable, so finished and parked runs never slow a claim down.
        "CREATE INDEX runs_pending ON {schema}.runs (priority DESC, created_at)"
        " WHERE status = 'PENDING'",
        "CREATE INDEX runs_due ON {schema}.runs (wake_at) WHERE status = 'SUSPENDED'",
        "CREATE INDEX runs_leases ON {schema}.runs (lease_expires_at) WHERE status = 'RUNNING'",
        "CREATE INDEX runs_queue_leases ON {schema}.runs (queue, lease_expires_at)"
        " WHERE status = 'RUNNING'",
        "CREATE INDEX runs_parent ON {schema}.runs (parent_run_id) WHERE parent_run_id IS NOT NULL",
        "CREATE INDEX runs_created ON {schema}.runs (created_at DESC, run_id DESC)",
        """CREATE TABLE {schema}.ops (
            run_id text NOT NULL,
            op_id text NOT NULL,
            parent_id text,
            type text NOT NULL,
            name text NOT NULL,
            status text NOT NULL,
            attempt integer NOT NULL DEFAULT 0,
            result text,
            error jsonb,
            started_at timestamptz,
            ended_at timestamptz,
            data jsonb,
            PRIMARY KEY (run_id, op_id)
        )""",
        """CREATE TABLE {schema}.history (
            seq bigserial PRIMARY KEY,
            run_id text NOT NULL,
            type text NOT NULL,
            ts timestamptz NOT NULL,
            op_id text,
            parent_id text,
            name text,
            details jsonb
        )""",
        "CREATE INDEX history_run ON {schema}.history (run_id, seq)",
        """CREATE TABLE {schema}.callbacks (
            callback_id text PRIMARY KEY,
            run_id text NOT NULL,
            op_id text NOT NULL,
            kind text NOT NULL,
            status text NOT NULL,
            created_at timestamptz NOT NULL,
            expires_at timestamptz,
            heartbeat_timeout_s double precision,
            heartbeat_at timestamptz,
            pattern jsonb,
            result text,
            error jsonb,
            completed_at timestamptz
        )""",
        "CREATE INDEX callbacks_run ON {schema}.callbacks (run_id)",
        "CREATE INDEX callbacks_open_events ON {schema}.callbacks (created_at)"
        " WHERE kind = 'event' AND status = 'PENDING'",
        """CREATE TABLE {schema}.outbox (
            seq bigserial PRIMARY KEY,
            event_id text NOT NULL UNIQUE,
            event jsonb NOT NULL,
            published_at timestamptz NOT NULL,
            delivered_at timestamptz
        )""",
        "CREATE INDEX outbox_undelivered ON {schema}.outbox (seq) WHERE delivered_at IS NULL",
        """CREATE TABLE {schema}.rules (
            name text PRIMARY KEY,
            pattern jsonb NOT NULL,
            target text NOT NULL,
            params jsonb NOT NULL,
            enabled boolean NOT NULL DEFAULT true,
            created_at timestamptz
        )""",
        """CREATE TABLE {schema}.queues (
            name text PRIMARY KEY,
            concurrency integer,
            rate_limit integer,
            rate_period_s double precision NOT NULL DEFAULT 1,
            tokens double precision,
            refilled_at timestamptz
        )""",
    ],
    # 2: forks remember their origin; callbacks the JSON Schema of their payload
    [
        "ALTER TABLE {schema}.runs ADD COLUMN origin jsonb",
        "ALTER TABLE {schema}.callbacks ADD COLUMN payload_schema jsonb",
    ],
    # tenants: every run and rule belongs to one; the service's API keys (hashes only)
    [
        "ALTER TABLE {schema}.runs ADD COLUMN tenant text NOT NULL DEFAULT 'default'",
        "CREATE INDEX runs_tenant_created ON {schema}.runs (tenant, created_at)",
        "ALTER TABLE {schema}.rules ADD COLUMN tenant text NOT NULL DEFAULT 'default'",
        """CREATE TABLE {schema}.api_keys (
            key_id text PRIMARY KEY,
            name text NOT NULL,
            tenant text NOT NULL,
            scopes jsonb NOT NULL,
            secret_hash text NOT NULL,
            created_at timestamptz NOT NULL,
            revoked_at timestamptz
        )""",
    ],
    # schedules: durable "start this workflow at these times" (cron, rate, at)
    [
        """CREATE TABLE {schema}.schedules (
            name text PRIMARY KEY,
            workflow text NOT NULL,
            version text,
            module text,
            expression text NOT NULL,
            input text NOT NULL,
            timezone text NOT NULL,
            window_s double precision NOT NULL DEFAULT 0,
            catch_up text NOT NULL,
            catch_up_limit integer NOT NULL,
            overlap text NOT NULL,
            paused boolean NOT NULL DEFAULT false,
            start_at timestamptz,
            end_at timestamptz,
            next_fire_at timestamptz,
            due_at timestamptz,
            buffered_tick timestamptz,
            last_tick_at timestamptz,
            last_run_id text,
            resumed_at timestamptz,
            revision bigint NOT NULL,
            created_at timestamptz,
            updated_at timestamptz
        )""",
        "CREATE INDEX schedules_due ON {schema}.schedules (due_at) WHERE NOT paused",
    ],
    # the runs of one trace, for `cadenza runs trace` and scoped claims
    [
        "CREATE INDEX runs_trace ON {schema}.runs (trace_id) WHERE trace_id IS NOT NULL",
    ],
    # retention: the ended runs, least recently updated first, for pruning
    [
        "CREATE INDEX runs_ended ON {schema}.runs (updated_at, run_id)"
        " WHERE status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')",
    ],
    # retention's index keyed on a copy of updated_at that is set only once a run ended:
    # PostgreSQL updates a row in place (HOT, no new index entries) only when no indexed
    # column changes, and updated_at changes on every write of the run row, so indexing
    # it made a checkpoint that changes only the run's state write an entry into every
    # index of the table. ended_at changes only when the status does, as other indexes
    # already see. (Adding a stored column rewrites the table once.)
    [
        "ALTER TABLE {schema}.runs ADD COLUMN ended_at timestamptz GENERATED ALWAYS AS"
        " (CASE WHEN status IN ('SUCCEEDED', 'FAILED', 'CANCELLED') THEN updated_at END)"
        " STORED",
        "CREATE INDEX runs_ended_at ON {schema}.runs (ended_at, run_id) WHERE ended_at IS NOT NULL",
        "DROP INDEX {schema}.runs_ended",
    ],
]

LATEST = len(MIGRATIONS)


def _lock_key(schema: str) -> int:
    """A stable 64-bit advisory lock key for migrating ``schema``."""
    digest = hashlib.sha256(f"cadenza:migrate:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def current_version(conn: AsyncConnection[Any], schema: str) -> int:
    """The schema version in the database; 0 when cadenza was never installed there."""
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{schema}.schema_version",))
    row = await cur.fetchone()
    if row is None or not _first(row):
        return 0
    cur = await conn.execute(f"SELECT coalesce(max(version), 0) FROM {schema}.schema_version")
    row = await cur.fetchone()
    return int(_first(row)) if row is not None else 0


async def migrate(conn: AsyncConnection[Any], schema: str) -> list[int]:
    """Bring the schema up to date; the versions applied (none when it already was)."""
    if await current_version(conn, schema) >= LATEST:
        return []
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_version ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = await current_version(conn, schema)  # another process may have done it
        for version, statements in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            for statement in statements:
                await conn.execute(statement.replace("{schema}", schema))
            await conn.execute(
                f"INSERT INTO {schema}.schema_version (version) VALUES (%s)", (version,)
            )
            applied.append(version)
    return applied


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
