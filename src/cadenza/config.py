"""Where things live: ``CADENZA_HOME`` (default ``./.cadenza``) and backends chosen by URL.

``CADENZA_STORE`` picks the run store (``sqlite:///path.db``, ``postgresql://…``);
``CADENZA_ARTIFACTS`` the artifact store (``file:///folder``). Backend libraries are
imported only when their URL is used; a missing one names the extra to install.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cadenza.clock import Clock
from cadenza.engine.engine import Engine
from cadenza.errors import ConfigurationError, MissingDependency
from cadenza.ports.artifact_store import ArtifactStore
from cadenza.ports.run_store import RunStore
from cadenza.security.tokens import load_secret

SUPPORTED_STORES = ("sqlite:///PATH", "postgresql://USER@HOST/DB")


def home() -> Path:
    return Path(os.environ.get("CADENZA_HOME") or ".cadenza")


def store_url() -> str:
    return os.environ.get("CADENZA_STORE") or f"sqlite:///{home() / 'cadenza.db'}"


def create_store(url: str) -> RunStore:
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
    raise ConfigurationError(
        f"unknown run store URL {url!r}; use one of: {', '.join(SUPPORTED_STORES)}"
    )


def create_artifacts(url: str | None = None) -> ArtifactStore:
    url = url or os.environ.get("CADENZA_ARTIFACTS") or f"file://{(home() / 'artifacts').resolve()}"
    if url.startswith("file://"):
        from cadenza.adapters.fs import FolderArtifactStore

        return FolderArtifactStore(url.removeprefix("file://"))
    raise ConfigurationError(f"unknown artifact store URL {url!r}; use file:///FOLDER")


async def open_engine(
    *,
    store: str | RunStore | None = None,
    artifacts: str | ArtifactStore | None = None,
    secret: bytes | None = None,
    clock: Clock | None = None,
    **options: Any,
) -> Engine:
    """An engine over the configured (or given) backends, schema ready.

    >>> engine = await open_engine()                     # ./.cadenza/cadenza.db
    >>> engine = await open_engine(store="sqlite:///tmp/x.db")
    """
    run_store = store if isinstance(store, RunStore) else create_store(store or store_url())
    artifact_store = (
        artifacts if isinstance(artifacts, ArtifactStore) else create_artifacts(artifacts)
    )
    await run_store.open()
    return Engine(
        run_store,
        secret=secret or load_secret(home()),
        artifacts=artifact_store,
        clock=clock,
        **options,
    )
