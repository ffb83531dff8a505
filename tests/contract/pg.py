"""A throwaway PostgreSQL database for a test session.

``CADENZA_TEST_POSTGRES`` names the server (default ``postgresql://postgres@127.0.0.1:5432/
postgres``). Tests marked ``postgres`` need it; when it is unreachable they fail and say
how to start it, rather than skip: a suite that silently skips its PostgreSQL half proves
nothing about the cluster shape. Deselect them with ``-m 'not postgres'``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

ADMIN_URL = os.environ.get("CADENZA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

HOW_TO_START = (
    "start it with 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'"
    " (or point CADENZA_TEST_POSTGRES at a server), or deselect these tests with"
    " -m 'not postgres'"
)


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@contextmanager
def fresh_database(prefix: str = "cadenza_test") -> Iterator[str]:
    """Create an empty database, yield its URL, drop it (and its connections) after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_URL} ({' '.join(str(exc).split())});"
            f" {HOW_TO_START}",
            pytrace=False,
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(ADMIN_URL, name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
