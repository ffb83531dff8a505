"""``cadenza db``: the store's schema, and ``cadenza queues``: cluster-wide flow control.

``cadenza db upgrade`` creates or migrates the schema of the configured store
(``CADENZA_STORE`` or ``--store``) and is safe to run from many machines at once; every
worker also does it when it starts. ``cadenza db status`` says where the schema stands.
``cadenza queues set`` caps how many runs of a queue execute at once over all workers,
and how often they may start; ``cadenza queues list`` shows each queue's limits, its depth
and how long its oldest runnable run has waited.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import click
from rich.table import Table

from cadenza.cli._common import (
    ago,
    console,
    emit_json,
    fail,
    json_option,
    literal,
    literal_text,
)
from cadenza.config import create_store, store_url
from cadenza.errors import CadenzaError, ConfigurationError
from cadenza.ports.run_store import QueueConfig, QueueStats, RunStore

T = TypeVar("T")

_store_option = click.option(
    "--store",
    "url",
    default=None,
    metavar="URL",
    help="Store URL (default: $CADENZA_STORE, else the SQLite file under $CADENZA_HOME).",
)


def register(cli: click.Group) -> None:
    """Mount ``db`` and ``queues`` on the main command."""
    cli.add_command(db_group)
    cli.add_command(queues_group)


@click.group("db")
def db_group() -> None:
    """The store's schema: create, migrate, inspect."""


@db_group.command("upgrade")
@_store_option
def upgrade_command(url: str | None) -> None:
    """Create or migrate the schema to this version of cadenza (idempotent)."""
    url = url or store_url()

    async def upgrade(store: RunStore) -> None:
        before, latest = await _schema_status(store)
        await store.open()  # migrates, under a lock where the backend has one
        after, _ = await _schema_status(store)
        if after == before:
            console.print(f"{literal(_redacted(url))}: schema up to date (version {after})")
        else:
            console.print(
                f"{literal(_redacted(url))}: schema upgraded from version {before} to {after}"
            )
        if after < latest:  # pragma: no cover - a migration that did not apply
            raise ConfigurationError(f"schema is at version {after}; expected {latest}")

    _run(url, upgrade, open_store=False)


@db_group.command("status")
@_store_option
@click.option("--check", is_flag=True, help="Exit with 1 when an upgrade is needed.")
@json_option
def status_command(url: str | None, check: bool, as_json: bool) -> None:
    """Show the schema version of the store and the one this cadenza expects."""
    url = url or store_url()

    async def status(store: RunStore) -> None:
        current, latest = await _schema_status(store)
        state = "up to date" if current == latest else "needs upgrade"
        if current > latest:
            state = "newer than this cadenza"
        if as_json:
            emit_json(
                {"store": _redacted(url), "version": current, "latest": latest, "state": state}
            )
        else:
            console.print(f"store:   {literal(_redacted(url))}")
            console.print(f"schema:  version {current} of {latest} ({state})")
            if current < latest:
                console.print("run 'cadenza db upgrade' (workers also upgrade when they start)")
        if check and current < latest:
            sys.exit(1)

    _run(url, status, open_store=False)


@click.group("queues")
def queues_group() -> None:
    """Flow control per queue, enforced across every worker of the store."""


@queues_group.command("list")
@_store_option
@json_option
def queues_list_command(url: str | None, as_json: bool) -> None:
    """Queues with limits or open runs: their depth (runnable now, running, waiting for a
    wake time) and how long the oldest runnable run has waited."""

    async def show(store: RunStore) -> None:
        now = datetime.now(UTC)
        configs = {q.name: q for q in await store.list_queues()}
        stats = {s.queue: s for s in await store.queue_stats(now=now)}
        rows = [
            (configs.get(name) or QueueConfig(name), stats.get(name) or QueueStats(name))
            for name in sorted(configs.keys() | stats.keys())
        ]
        if as_json:
            emit_json([{**_queue_dict(q), **_stats_dict(s, now)} for q, s in rows])
            return
        table = Table(box=None)
        for column in ("QUEUE", "RUNNABLE", "RUNNING", "WAITING", "OLDEST", "LIMITS"):
            table.add_column(column, justify="left" if column in ("QUEUE", "LIMITS") else "right")
        for q, s in rows:
            table.add_row(
                literal_text(q.name),
                str(s.runnable),
                str(s.running),
                str(s.waiting),
                _age(s, now),
                _describe(q),
            )
        console.print(table)

    _run(url or store_url(), show)


@queues_group.command("set")
@click.argument("name")
@click.option(
    "--concurrency",
    type=click.IntRange(min=0),
    default=None,
    help="Runs of this queue executing at once, over all workers (0 pauses the queue).",
)
@click.option(
    "--rate",
    default=None,
    metavar="N/PERIOD",
    help="Claims of this queue's runs per period, e.g. 10/s, 100/1m, 5/30s.",
)
@_store_option
def queues_set_command(
    name: str, concurrency: int | None, rate: str | None, url: str | None
) -> None:
    """Set (or, with no option, lift) the limits of queue NAME."""
    rate_limit, period = _parse_rate(rate) if rate else (None, timedelta(seconds=1))
    config = QueueConfig(name, concurrency=concurrency, rate_limit=rate_limit, rate_period=period)

    async def put(store: RunStore) -> None:
        await store.put_queue(config)
        console.print(f"{literal(name)}: {_describe(config)}")

    _run(url or store_url(), put)


# --- helpers ---------------------------------------------------------------------------


def _run(
    url: str, action: Callable[[RunStore], Awaitable[None]], *, open_store: bool = True
) -> None:
    async def body() -> None:
        store = create_store(url)
        try:
            if open_store:
                await store.open()
            await action(store)
        finally:
            await store.close()

    try:
        asyncio.run(body())
    except CadenzaError as exc:
        fail(exc)


async def _schema_status(store: RunStore) -> tuple[int, int]:
    """(version in the store, version this cadenza expects)."""
    status = getattr(store, "schema_status", None)
    if status is not None:
        result: tuple[int, int] = await status()
        return result
    from cadenza.adapters.sqlite import SqliteRunStore
    from cadenza.adapters.sqlite._schema import MIGRATIONS

    if not isinstance(store, SqliteRunStore):
        raise ConfigurationError(f"{type(store).__name__} does not report its schema version")
    return _sqlite_version(store.path), len(MIGRATIONS)


def _sqlite_version(path: Path) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    except sqlite3.OperationalError:  # no schema_version table: never set up
        return 0
    finally:
        conn.close()
    return int(row[0] or 0)


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_rate(text: str) -> tuple[int, timedelta]:
    match = _RATE.match(text)
    if match is None or (not match.group(2) and not match.group(3)):
        raise click.BadParameter(f"{text!r}: use N/PERIOD, e.g. 10/s, 100/1m or 5/30s")
    count, amount, unit = match.groups()
    seconds = float(amount or 1) * _UNITS[unit or "s"]
    if seconds <= 0:
        raise click.BadParameter(f"{text!r}: the period must be longer than zero")
    return int(count), timedelta(seconds=seconds)


def _describe(q: QueueConfig) -> str:
    parts = []
    if q.concurrency is not None:
        parts.append("paused" if q.concurrency == 0 else f"at most {q.concurrency} at once")
    if q.rate_limit is not None:
        parts.append(f"{q.rate_limit} starts per {q.rate_period.total_seconds():g}s")
    return ", ".join(parts) or "no limits"


def _queue_dict(q: QueueConfig) -> dict[str, Any]:
    return {
        "name": q.name,
        "concurrency": q.concurrency,
        "rate_limit": q.rate_limit,
        "rate_period_s": q.rate_period.total_seconds(),
    }


def _stats_dict(s: QueueStats, now: datetime) -> dict[str, Any]:
    return {
        "runnable": s.runnable,
        "running": s.running,
        "waiting": s.waiting,
        "oldest_due_at": s.oldest_due_at.isoformat() if s.oldest_due_at else None,
        "oldest_age_s": s.oldest_age(now).total_seconds(),
    }


def _age(s: QueueStats, now: datetime) -> str:
    """How long the oldest runnable run has waited, "-" when none does."""
    if s.oldest_due_at is None:
        return "-"
    return ago(s.oldest_due_at, now).removesuffix(" ago")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(parts.password, "***")))
    return url
