"""The embedded run store on SQLite."""

from cadenza.adapters.sqlite._store import SqliteRunStore

__all__ = ["SqliteRunStore"]
