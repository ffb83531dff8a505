"""Where things live: ``CADENZA_HOME`` and backends chosen by URL.

``CADENZA_HOME`` holds the default SQLite store, the artifact folder and the token secret.
Unset, a library call uses the per-user data folder (``~/.local/share/cadenza`` on Linux,
``~/Library/Application Support/cadenza`` on macOS, ``%LOCALAPPDATA%\\cadenza`` on Windows)
and never the current directory; the ``cadenza`` command sets it to ``./.cadenza``.
``CADENZA_STORE`` picks the run store (``sqlite:///path.db``, ``postgresql://…``,
``dynamodb://TABLE?region=…``); ``CADENZA_ARTIFACTS`` the artifact store (``file:///folder``,
``s3://bucket/prefix?region=…``). Backend libraries are
imported only when their URL is used; a missing one names the extra to install.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from cadenza.clock import Clock
from cadenza.engine.engine import Engine
from cadenza.errors import ConfigurationError, MissingDependency
from cadenza.ports.artifact_store import ArtifactStore
from cadenza.ports.run_store import RunStore
from cadenza.security.tokens import load_secret
from cadenza.telemetry._costs import SpendGuard, load_costs

SUPPORTED_STORES = ("sqlite:///PATH", "postgresql://USER@HOST/DB", "dynamodb://TABLE")
CLI_HOME = ".cadenza"  # the command's documented default: state beside the project


def home() -> Path:
    return resolve_home(None)


def resolve_home(given: str | Path | None) -> Path:
    """``given``, else ``CADENZA_HOME``, else the per-user data folder: never the cwd."""
    if given is not None:
        return Path(given)
    explicit = os.environ.get("CADENZA_HOME")
    return Path(explicit) if explicit else user_data_dir()


def user_data_dir() -> Path:
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = str(Path.home() / "Library" / "Application Support")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "cadenza"


def store_url(home_dir: Path | None = None) -> str:
    return os.environ.get("CADENZA_STORE") or f"sqlite:///{(home_dir or home()) / 'cadenza.db'}"


def create_store(url: str, *, artifacts: ArtifactStore | None = None) -> RunStore:
    """The run store of ``url``; ``artifacts`` takes what is too large for a DynamoDB item."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from cadenza.adapters.sqlite import SqliteRunStore

        return SqliteRunStore.from_url(url)
    if scheme in ("postgresql", "postgres"):
        try:
            from cadenza.adapters.postgres import PostgresRunStore
        except ImportError as exc:
            if "psycopg" in str(exc):
                raise MissingDependency("the PostgreSQL run store", "postgres") from exc
            raise ConfigurationError(f"the PostgreSQL run store is not available: {exc}") from exc
        store: RunStore = PostgresRunStore.from_url(url)
        return store
    if scheme == "dynamodb":
        _require("boto3", "the DynamoDB run store")
        from cadenza.adapters.dynamodb import DynamoDbRunStore

        return DynamoDbRunStore.from_url(url, artifacts=artifacts)
    raise ConfigurationError(
        f"unknown run store URL {url!r}; use one of: {', '.join(SUPPORTED_STORES)}"
    )


def create_artifacts(url: str | None = None, home_dir: Path | None = None) -> ArtifactStore:
    url = (
        url
        or os.environ.get("CADENZA_ARTIFACTS")
        or f"file://{((home_dir or home()) / 'artifacts').resolve()}"
    )
    if url.startswith("file://"):
        from cadenza.adapters.fs import FolderArtifactStore

        return FolderArtifactStore(url.removeprefix("file://"))
    if url.startswith("s3://"):
        _require("boto3", "the S3 artifact store")
        from cadenza.adapters.s3 import S3ArtifactStore

        return S3ArtifactStore.from_url(url)
    raise ConfigurationError(
        f"unknown artifact store URL {url!r}; use file:///FOLDER or s3://BUCKET/PREFIX"
    )


def _require(module: str, what: str) -> None:
    """Name the extra to install when the library of a backend is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise MissingDependency(what, "aws")


async def open_engine(
    *,
    store: str | RunStore | None = None,
    artifacts: str | ArtifactStore | None = None,
    secret: bytes | None = None,
    home: str | Path | None = None,
    clock: Clock | None = None,
    **options: Any,
) -> Engine:
    """An engine over the configured (or given) backends, schema ready.

    What is not given comes from the environment, then from ``home`` (default
    ``CADENZA_HOME``, else the per-user data folder; never the current directory).

    >>> engine = await open_engine()                     # ~/.local/share/cadenza/cadenza.db
    >>> engine = await open_engine(home="var/cadenza")   # var/cadenza/cadenza.db
    >>> engine = await open_engine(store="sqlite:///tmp/x.db")

    ``instrumentation`` (a :class:`cadenza.Instrumentation` or several) goes to the
    engine; when not given, OpenTelemetry is turned on if ``OTEL_EXPORTER_OTLP_ENDPOINT``
    or ``OTEL_TRACES_EXPORTER`` is set and the ``otel`` extra is installed.
    """
    folder = resolve_home(home)
    artifact_store = (
        artifacts if isinstance(artifacts, ArtifactStore) else create_artifacts(artifacts, folder)
    )
    run_store = (
        store
        if isinstance(store, RunStore)
        else create_store(store or store_url(folder), artifacts=artifact_store)
    )
    await run_store.open()
    if "spend_guard" not in options:
        costs = load_costs(folder)  # registers the deployment's prices too
        options["spend_guard"] = SpendGuard(costs) if costs.budgets else None
    if options.get("instrumentation") is None:  # the OTEL_* variables may turn tracing on
        from cadenza.telemetry._setup import from_environment

        options["instrumentation"] = from_environment()
    return Engine(
        run_store,
        secret=secret or load_secret(folder),
        artifacts=artifact_store,
        clock=clock,
        **options,
    )
