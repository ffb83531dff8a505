"""The contract suite's store fixtures (SQLite, PostgreSQL, in memory, DynamoDB) and the
CLI tests' fixtures, shared here."""

from tests.cli.conftest import cli, stop_worker
from tests.contract.conftest import postgres_url, store, store_factory

__all__ = ["cli", "postgres_url", "stop_worker", "store", "store_factory"]
