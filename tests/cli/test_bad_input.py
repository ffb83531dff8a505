"""Bad input ends cleanly: a clear error on stderr, the documented exit code, nothing
stored. And the hints in those errors are right: the example commands they print exist and
show input of the right shape.

Each test runs the real command as a subprocess (see ``test_cli.Cli``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import ADA, TRIP, Cli, Result, _forge, _token
from tests.contract.pg import fresh_database

PRINTS = "tests.cli.display_workflows:prints"  # takes a str
WAITS = "tests.cli.display_workflows:waits"
DEEP = "[" * 5000 + "]" * 5000
ALMOST = "[" * 201 + "]" * 201  # past the 200-level limit, still parseable
MIB = 1024 * 1024
PATTERN = '{"detail-type": ["signup"]}'


def refused(result: Result, message: str) -> None:
    assert "Traceback" not in result.err, result.err
    assert result.err.startswith("error: "), result.err
    assert message in result.err, result.err


# --- callback tokens ---------------------------------------------------------------------


def test_a_token_with_non_ascii_characters_is_refused_with_exit_4(cli: Cli) -> None:
    started = cli("run", TRIP, "--input", ADA, "--json")
    token = _token(started)
    for bad in (token[:-1] + "é", "cdz1.é.x", token.replace(".", "\u202e.", 1), "cdz1.\x07.x"):
        refused(cli("callback", "succeed", bad, code=4), "contains characters no token has")
        refused(cli("callback", "heartbeat", bad, code=4), "contains characters no token has")
    assert cli("runs", "show", started.json()["run_id"], "--json").json()["status"] == "SUSPENDED"
    cli("callback", "succeed", token, "--payload", '{"approved": true}')  # still good


# --- JSON options ------------------------------------------------------------------------


def test_json_nested_too_deep_is_a_usage_error_for_every_option(cli: Cli) -> None:
    token = _token(cli("run", TRIP, "--input", ADA, "--json"))
    for nested in (DEEP, ALMOST):
        for option, args in (
            ("--input", ("run", PRINTS, "--input", nested)),
            ("--payload", ("callback", "succeed", token, "--payload", nested)),
            ("--detail", ("events", "put", "--detail-type", "x", "--detail", nested)),
            ("--pattern", ("rules", "put", "deep", "--pattern", nested, "--start", PRINTS)),
            ("--pattern", ("rules", "test", "--pattern", nested, "--event", "{}")),
            ("--event", ("rules", "test", "--pattern", PATTERN, "--event", nested)),
        ):
            refused(cli(*args, code=2), f"{option} nests arrays and objects more than 200 levels")
    assert len(cli("runs", "list", "--json").json()) == 1
    assert cli("events", "list", "--json").json() == []
    assert cli("rules", "list", "--json").json() == []


def test_input_and_payload_over_16_mib_are_refused_on_their_real_size(
    cli: Cli, tmp_path: Path
) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps("x" * (20 * MIB)))
    refused(cli("run", PRINTS, "--input", f"@{big}", code=2), "the limit is 16,777,216")
    assert cli("runs", "list", "--json").json() == []

    started = cli("run", WAITS, "--json")
    (wait,) = started.json()["waiting_for"]
    refused(cli("callback", "succeed", wait["token"], "--payload", f"@{big}", code=2), "limit")
    shown = cli("runs", "show", started.json()["run_id"], "--json").json()
    assert shown["status"] == "SUSPENDED" and len(shown["waiting_for"]) == 1  # not spent
    artifacts = cli.home / "artifacts"
    stored = sum(f.stat().st_size for f in artifacts.rglob("*") if f.is_file())
    assert stored < MIB  # the refused values were not written anywhere


def test_hints_show_input_of_the_right_shape_under_the_right_option(cli: Cli) -> None:
    text = cli("run", PRINTS, "--input", "Lisbon", code=2)
    refused(text, "--input is not valid JSON")
    assert "e.g. --input '\"Lisbon\"'" in text.err  # a str input is a JSON string
    trip = cli("run", TRIP, "--input", "{traveller: Ada}", code=2)
    assert 'e.g. --input \'{"traveller": ' in trip.err and '"city": ' in trip.err

    token = _token(cli("run", TRIP, "--input", ADA, "--json"))
    payload = cli("callback", "succeed", token, "--payload", "{approved}", code=2)
    refused(payload, "--payload is not valid JSON")
    assert "e.g. --payload '{\"approved\": true}'" in payload.err
    assert "--input" not in payload.err
    detail = cli("events", "put", "--detail-type", "x", "--detail", "{x}", code=2)
    assert "e.g. --detail '{" in detail.err


def test_every_command_a_message_suggests_exists(cli: Cli) -> None:
    """Gather the ``cadenza …`` commands the messages print and ask each for its help."""
    forged = _forge(_token(cli("run", TRIP, "--input", ADA, "--json")), r="r-other")
    texts = [
        cli("runs", "list").out,
        cli("rules", "list").out,
        cli("run", PRINTS, "--input", '"x"', "--id", "r-x", "--quiet").out,
        cli("run", PRINTS, "--input", '"x"', "--id", "r-x", code=2).err,
        cli("run", "tests.cli.display_workflows:fails", code=1).out,
        cli("run", WAITS).out,
        cli("runs", "show", "r-nosuchrun", code=3).err,
        cli("callback", "succeed", "approve", code=4).err,
        cli("callback", "succeed", forged, code=4).err,
        cli("worker", "-w", "nosuchmodule", code=2).err,
    ]
    suggested = {
        tuple(m.group(1).split()[:2])
        for text in texts
        # Quoted, or after "see " or a colon; elsewhere "cadenza" is prose ("a cadenza token").
        for m in re.finditer(r"(?:'|: |see )cadenza ((?:[a-z][a-z-]*\b ?)+)", text)
    }
    assert {("runs", "history"), ("callback", "succeed"), ("runs", "show")} <= suggested
    for words in suggested:
        assert "Usage: cadenza" in cli(*words, "--help").out, words


# --- runs that already exist -------------------------------------------------------------


def test_starting_a_run_under_an_existing_id_names_the_run(cli: Cli) -> None:
    first = cli("run", PRINTS, "--input", '"Lisbon"', "--id", "r-lisbon", "--json").json()
    again = cli("run", PRINTS, "--input", '"Porto"', "--id", "r-lisbon", code=2)
    refused(again, "a run with id 'r-lisbon' already exists")
    assert "cadenza runs show r-lisbon" in again.err
    (run,) = cli("runs", "list", "--json").json()
    assert run["result"] == first["result"] == "Lisbon"  # the first run is untouched


def test_an_idempotency_key_with_another_input_is_refused_with_the_existing_run(
    cli: Cli,
) -> None:
    first = cli("run", PRINTS, "--input", '"Lisbon"', "--idempotency-key", "k1", "--json").json()
    same = cli("run", PRINTS, "--input", '"Lisbon"', "--idempotency-key", "k1", "--json").json()
    assert same["run_id"] == first["run_id"]  # the same request: the same run
    other = cli("run", PRINTS, "--input", '"Porto"', "--idempotency-key", "k1", code=2)
    refused(other, f"idempotency key 'k1' already started run {first['run_id']}")
    assert len(cli("runs", "list", "--json").json()) == 1


@pytest.fixture
def postgres_cli(cli: Cli) -> Iterator[Cli]:
    with fresh_database("cadenza_cli") as url:
        cli.env["CADENZA_STORE"] = url
        yield cli


@pytest.mark.postgres
def test_an_existing_run_id_is_refused_on_postgresql_too(postgres_cli: Cli) -> None:
    cli = postgres_cli
    cli("run", PRINTS, "--input", '"Lisbon"', "--id", "r-lisbon", "--quiet")
    refused(cli("run", PRINTS, "--input", '"Porto"', "--id", "r-lisbon", code=2), "r-lisbon")
    refused(
        cli(
            "run",
            PRINTS,
            "--input",
            '"Porto"',
            "--id",
            "r-lisbon",
            "--idempotency-key",
            "k",
            code=2,
        ),
        "already exists",
    )
    assert [r["run_id"] for r in cli("runs", "list", "--json").json()] == ["r-lisbon"]


# --- events and workers ------------------------------------------------------------------


def test_events_put_with_an_id_starts_one_run_however_often_it_is_published(cli: Cli) -> None:
    cli(
        "rules", "put", "welcome", "--pattern", PATTERN,
        "--start", "tests.cli.cli_workflows:greet",
    )  # fmt: skip
    detail = '{"name": "Ada", "plan": "pro"}'
    for _ in range(3):
        put = cli("events", "put", "--detail-type", "signup", "--detail", detail,
                  "--id", "signup-ada-1", "--json")  # fmt: skip
        assert put.json()["id"] == "signup-ada-1"
    (run,) = cli("runs", "list", "--json").json()
    assert run["workflow"] == "cli-welcome"
    published = cli("events", "list", "--json").json()
    assert {e["id"] for e in published} == {"signup-ada-1"}

    for bad in ("", "has space", "-leading-dash", "x" * 129, "tab\there", "é"):
        refused(
            cli("events", "put", "--detail-type", "x", "--id", bad, code=2), "is not an event id"
        )
    assert cli("events", "list", "--json").json() == published


def test_a_worker_given_a_module_that_does_not_import_stops_with_exit_2(cli: Cli) -> None:
    for ref, message in (
        ("nosuchmodule", "cannot import module 'nosuchmodule'"),
        ("nosuchmodule:flow", "cannot import module 'nosuchmodule'"),
        ("tests.cli.cli_workflows:nosuchflow", "has no attribute 'nosuchflow'"),
    ):
        result = cli("worker", "-w", ref, code=2)
        refused(result, f"worker -w {ref}: ")
        assert message in result.err


def test_a_worker_imports_a_module_named_without_a_workflow(cli: Cli) -> None:
    # A real module: the worker starts, which `timeout` proves by having to stop it.
    run = cli("run", PRINTS, "--input", '"Lisbon"', "--detach", "--json").json()
    worker = cli.worker("-w", "tests.cli.display_workflows")
    try:
        done = cli.wait_for(run["run_id"], "SUCCEEDED")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert done["result"] == "Lisbon"
    assert "Traceback" not in (cli.home / "worker.log").read_text()
