"""Versioned schema of the SQLite run store. Append a list to MIGRATIONS to change it;
never edit a migration that has shipped."""

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            workflow TEXT NOT NULL,
            version TEXT NOT NULL,
            module TEXT,
            status TEXT NOT NULL,
            input TEXT NOT NULL,
            result TEXT,
            error TEXT,
            parent_run_id TEXT,
            parent_op_id TEXT,
            queue TEXT NOT NULL DEFAULT 'default',
            priority INTEGER NOT NULL DEFAULT 0,
            wake_at REAL,
            lease_owner TEXT,
            lease_epoch INTEGER NOT NULL DEFAULT 0,
            lease_expires_at REAL,
            wake_requested INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT '{}',
            trace_id TEXT,
            idempotency_key TEXT UNIQUE,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX runs_due ON runs (status, wake_at)",
        "CREATE INDEX runs_leases ON runs (status, lease_expires_at)",
        "CREATE INDEX runs_parent ON runs (parent_run_id)",
        "CREATE INDEX runs_created ON runs (created_at)",
        """CREATE TABLE ops (
            run_id TEXT NOT NULL,
            op_id TEXT NOT NULL,
            parent_id TEXT,
            type TEXT NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            result TEXT,
            error TEXT,
            started_at REAL,
            ended_at REAL,
            data TEXT,
            PRIMARY KEY (run_id, op_id)
        ) WITHOUT ROWID""",
        # One clustered tree per run's history: an append touches a single B-tree.
        """CREATE TABLE history (
            run_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            type TEXT NOT NULL,
            ts REAL NOT NULL,
            op_id TEXT,
            parent_id TEXT,
            name TEXT,
            details TEXT,
            PRIMARY KEY (run_id, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE callbacks (
            callback_id TEXT PRIMARY KEY,
            run_id TEXT NOT NULL,
            op_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            heartbeat_timeout_s REAL,
            heartbeat_at REAL,
            pattern TEXT,
            result TEXT,
            error TEXT,
            completed_at REAL
        )""",
        "CREATE INDEX callbacks_run ON callbacks (run_id)",
        "CREATE INDEX callbacks_open ON callbacks (kind, status)",
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            event TEXT NOT NULL,
            published_at REAL NOT NULL,
            delivered_at REAL
        )""",
        "CREATE INDEX outbox_undelivered ON outbox (seq) WHERE delivered_at IS NULL",
        """CREATE TABLE rules (
            name TEXT PRIMARY KEY,
            pattern TEXT NOT NULL,
            target TEXT NOT NULL,
            params TEXT NOT NULL,
            enabled INTEGER NOT NULL DEFAULT 1,
            created_at REAL
        )""",
    ],
    # 2: queue flow control (concurrency caps, rate buckets)
    [
        """CREATE TABLE queues (
            name TEXT PRIMARY KEY,
            concurrency INTEGER,
            rate_limit INTEGER,
            rate_period_s REAL NOT NULL DEFAULT 1,
            tokens REAL,
            refilled_at REAL
        )""",
        "CREATE INDEX runs_queue_leases ON runs (queue, status, lease_expires_at)",
    ],
    # 3: forks remember their origin; callbacks the JSON Schema of their payload
    [
        "ALTER TABLE runs ADD COLUMN origin TEXT",
        "ALTER TABLE callbacks ADD COLUMN payload_schema TEXT",
    ],
    # tenants: every run and rule belongs to one; the service's API keys (hashes only)
    [
        "ALTER TABLE runs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default'",
        "CREATE INDEX runs_tenant_created ON runs (tenant, created_at)",
        "ALTER TABLE rules ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default'",
        """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            tenant TEXT NOT NULL,
            scopes TEXT NOT NULL,
            secret_hash TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL
        )""",
    ],
    # schedules: durable "start this workflow at these times" (cron, rate, at)
    [
        """CREATE TABLE schedules (
            name TEXT PRIMARY KEY,
            workflow TEXT NOT NULL,
            version TEXT,
            module TEXT,
            expression TEXT NOT NULL,
            input TEXT NOT NULL,
            timezone TEXT NOT NULL,
            window_s REAL NOT NULL DEFAULT 0,
            catch_up TEXT NOT NULL,
            catch_up_limit INTEGER NOT NULL,
            overlap TEXT NOT NULL,
            paused INTEGER NOT NULL DEFAULT 0,
            start_at REAL,
            end_at REAL,
            next_fire_at REAL,
            due_at REAL,
            buffered_tick REAL,
            last_tick_at REAL,
            last_run_id TEXT,
            resumed_at REAL,
            revision INTEGER NOT NULL,
            created_at REAL,
            updated_at REAL
        )""",
        "CREATE INDEX schedules_due ON schedules (due_at) WHERE paused = 0",
    ],
    # the runs of one trace, for `cadenza runs trace` and scoped claims
    [
        "CREATE INDEX runs_trace ON runs (trace_id) WHERE trace_id IS NOT NULL",
    ],
    # retention: the ended runs, least recently updated first, for pruning
    [
        "CREATE INDEX runs_ended ON runs (updated_at, run_id)"
        " WHERE status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')",
    ],
]
