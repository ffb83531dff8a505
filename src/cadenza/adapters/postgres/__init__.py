"""The cluster run store on PostgreSQL (``pip install 'cadenza[postgres]'``)."""

from cadenza.errors import MissingDependency

try:
    import psycopg  # noqa: F401
    import psycopg_pool  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingDependency("the PostgreSQL run store", "postgres") from exc

from cadenza.adapters.postgres._store import PostgresRunStore

__all__ = ["PostgresRunStore"]
