"""``cadenza db upgrade|status`` and ``cadenza queues set|list`` on both stores."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cadenza.cli.db import register


@pytest.fixture
def cli() -> click.Group:
    @click.group()
    def main() -> None:
        pass

    register(main)
    return main


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'cadenza.db'}"
    base: str = request.getfixturevalue("postgres_url")
    return f"{base}?schema=t_{uuid.uuid4().hex[:12]}"


def test_upgrade_creates_the_schema_once_and_status_reports_it(cli: click.Group, url: str) -> None:
    runner = CliRunner()
    before = runner.invoke(cli, ["db", "status", "--store", url, "--json"])
    assert before.exit_code == 0, before.output
    status = json.loads(before.output)
    assert status["version"] == 0 and status["state"] == "needs upgrade"
    assert runner.invoke(cli, ["db", "status", "--store", url, "--check"]).exit_code == 1

    first = runner.invoke(cli, ["db", "upgrade", "--store", url])
    assert first.exit_code == 0, first.output
    assert f"upgraded from version 0 to {status['latest']}" in first.output
    again = runner.invoke(cli, ["db", "upgrade", "--store", url])
    assert again.exit_code == 0 and "up to date" in again.output

    after = runner.invoke(cli, ["db", "status", "--store", url, "--check"])
    assert after.exit_code == 0, after.output
    assert f"version {status['latest']} of {status['latest']} (up to date)" in after.output


def test_queue_limits_are_set_listed_and_lifted(cli: click.Group, url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["queues", "set", "llm", "--concurrency", "4", "--rate", "30/1m", "--store", url]
    )
    assert result.exit_code == 0, result.output
    assert "at most 4 at once, 30 starts per 60s" in result.output
    listed = runner.invoke(cli, ["queues", "list", "--json", "--store", url])
    idle = {"runnable": 0, "running": 0, "waiting": 0, "oldest_due_at": None, "oldest_age_s": 0.0}
    assert json.loads(listed.output) == [
        {"name": "default", "concurrency": None, "rate_limit": None, "rate_period_s": 1.0} | idle,
        {"name": "llm", "concurrency": 4, "rate_limit": 30, "rate_period_s": 60.0} | idle,
    ]
    assert (
        "paused"
        in runner.invoke(cli, ["queues", "set", "llm", "--concurrency", "0", "--store", url]).output
    )
    assert "no limits" in runner.invoke(cli, ["queues", "set", "llm", "--store", url]).output


def test_a_bad_rate_is_a_usage_error(cli: click.Group, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["queues", "set", "q", "--rate", "fast", "--store", f"sqlite:///{tmp_path}/x.db"]
    )
    assert result.exit_code == 2
    assert "use N/PERIOD" in result.output


def test_an_unreachable_store_is_a_clear_error(cli: click.Group) -> None:
    result = CliRunner().invoke(
        cli, ["db", "upgrade", "--store", "postgresql://u:pw@127.0.0.1:1/x?connect_timeout=2"]
    )
    assert result.exit_code == 6  # the store is unavailable, not the caller's mistake
    assert "cannot connect to PostgreSQL" in result.output
    assert "pw" not in result.output
