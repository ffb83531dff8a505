from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cadenza.cli.models import register


@pytest.fixture
def cli() -> click.Group:
    @click.group()
    def group() -> None:
        pass

    register(group)
    return group


def test_models_list_json(cli: click.Group) -> None:
    result = CliRunner().invoke(cli, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["provider"]: row for row in json.loads(result.output)}
    assert set(rows) >= {"local", "bedrock", "openai", "anthropic", "scripted"}
    assert rows["scripted"]["installed"] is True
    assert rows["bedrock"]["extra"] == "aws"
    assert "openai:gpt-4o-mini" in rows["openai"]["models"]
    assert "local:smollm2" in rows["local"]["models"]


def test_models_list_table(cli: click.Group) -> None:
    result = CliRunner().invoke(cli, ["models", "list"])
    assert result.exit_code == 0
    assert "bedrock:" in result.output and "AWS_REGION" in result.output


def test_ask_streams_and_reports_usage(cli: click.Group) -> None:
    result = CliRunner().invoke(cli, ["ask", "scripted:echo", "hello there world"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "hello there world"
    assert "scripted:echo: 3 in + 0 cached + 3 out tokens, $0.000000" in result.stderr


def test_ask_json(cli: click.Group) -> None:
    result = CliRunner().invoke(
        cli, ["ask", "scripted:echo", "hi", "--json", "--system", "be kind"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["text"] == "hi" and data["model"] == "scripted:echo"
    assert data["usage"]["input_tokens"] == 3 and data["cost_usd"] == 0


def test_ask_with_schema_validates(cli: click.Group, tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["n"]}))
    ok = CliRunner().invoke(cli, ["ask", "scripted:echo", '{"n": 1}', "--schema", str(schema)])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout) == {"n": 1}

    bad = CliRunner().invoke(cli, ["ask", "scripted:echo", "no json", "--schema", str(schema)])
    assert bad.exit_code == 1
    assert "no reply matching the schema after 3 attempts" in bad.stderr


def test_ask_unknown_provider_is_a_usage_error(cli: click.Group) -> None:
    result = CliRunner().invoke(cli, ["ask", "nope:model", "hi", "--no-stream"])
    assert result.exit_code == 2
    assert "unknown model provider 'nope'" in result.stderr
