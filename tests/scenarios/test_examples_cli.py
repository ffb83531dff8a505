"""``cadenza examples``: the scenarios ship with the package, run from any folder, and keep
to themselves — their rules exist only while they run and match only their own events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cadenza.agents import register_model
from cadenza.cli import cli
from cadenza.examples.catalog import EXAMPLES
from cadenza.models import ToolCall
from cadenza.testing import ScriptedModel

CADENZA = str(Path(sys.executable).with_name("cadenza"))
NINE = [
    "research-report",
    "travel-booking",
    "trip-booking",
    "flight-agent",
    "support-tickets",
    "contract-router",
    "policy-summary",
    "report-digest",
    "knowledge-qa",
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("CADENZA_HOME", str(folder))
    monkeypatch.chdir(tmp_path)  # anywhere but the repository
    return folder


def cadenza(*args: str) -> Any:
    """Run a command in this process (so scripted models registered here are used)."""
    result = CliRunner().invoke(cli, list(args))
    return result


def as_json(*args: str) -> Any:
    result = cadenza(*args, "--json")
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def runs_by_workflow() -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for run in as_json("runs", "list", "--limit", "100"):
        found.setdefault(run["workflow"], []).append(run)
    return found


def test_the_nine_scenarios_are_listed_from_any_folder(tmp_path: Path) -> None:
    """A real process in an empty folder: nothing of the repository is on the path."""
    env = {**os.environ, "CADENZA_HOME": str(tmp_path / "home")}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [CADENZA, "examples", "list", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [e["name"] for e in listed] == NINE
    assert all(e["workflow"].startswith("cadenza.examples.") for e in listed)
    rules = {e["name"]: e["rules"] for e in listed}
    assert rules["support-tickets"] == [
        "example:support-tickets:technical",
        "example:support-tickets:notification",
    ]
    assert rules["flight-agent"] == ["example:flight-agent:recovery"]


def test_every_example_rule_carries_its_prefix_and_matches_its_own_source() -> None:
    for example in EXAMPLES:
        for rule in example.rules():
            assert rule.name.startswith(f"example:{example.name}:")
            assert rule.pattern.get("source"), f"{rule.name} would match anyone's events"


def test_an_unknown_example_names_the_known_ones(home: Path) -> None:
    result = cadenza("examples", "run", "flight-agentt")
    assert result.exit_code == 3
    assert "no example named 'flight-agentt'" in result.output and "flight-agent," in result.output


def support_model() -> ScriptedModel:
    model = ScriptedModel(name="scripted:support-cli")
    model.on("Summarise", "Battery drains fast.")
    model.on("technician", "Worn battery cells; replace the battery pack.")
    model.on("friendly message", "We will replace your battery pack this week.")
    register_model("scripted:support-cli", model)
    return model


def test_support_tickets_follows_the_conversation_then_removes_its_rules(home: Path) -> None:
    support_model()
    # A helpdesk of the user's own publishes the same detail-types from another source;
    # the events wait in the outbox, so the example's worker relays them with its rules on.
    for kind in ("ticket_created", "ticket_resolved"):
        put = cadenza(
            "events",
            "put",
            "--detail-type",
            kind,
            "--source",
            "acme.helpdesk",
            "--detail",
            '{"ticket": "ACME-1", "customer": "c-9", "summary": "x", "message": "x",'
            ' "resolution": "x", "model": "scripted:support-cli"}',
            "--no-deliver",
        )
        assert put.exit_code == 0, put.output

    result = as_json("examples", "run", "support-tickets", "--model", "scripted:support-cli")
    assert result["status"] == "SUCCEEDED"
    follow_ons = [(r["workflow"], r["status"]) for r in result["follow_ons"]]
    assert follow_ons == [("technical-agent", "SUCCEEDED"), ("notification-agent", "SUCCEEDED")]
    assert result["follow_ons"][-1]["result"] == {
        "customer": "c-1042",
        "message": "We will replace your battery pack this week.",
    }

    assert as_json("rules", "list") == []
    runs = runs_by_workflow()
    # One run each: the user's events started nothing.
    assert {name: len(found) for name, found in runs.items()} == {
        "support-agent": 1,
        "technical-agent": 1,
        "notification-agent": 1,
    }
    # Once the example has ended, its own kind of event starts nothing either.
    cadenza("events", "put", "--detail-type", "ticket_created", "--source", "acme.helpdesk")
    assert len(as_json("runs", "list")) == 3


def test_flight_agent_hands_its_agent_error_to_recovery_then_removes_its_rule(
    home: Path,
) -> None:
    model = ScriptedModel(name="scripted:nowhere-cli")
    model.reply(*[[ToolCall(str(i), "book_flight", {"flight": "HC220"})] for i in range(3)])
    register_model("scripted:nowhere-cli", model)
    # Another workflow's agent gave up: the example's recovery rule is not for it.
    mine = {"agent": "my-agent", "workflow": "my-workflow", "run_id": "r-mine", "final": True}
    put = cadenza(
        "events",
        "put",
        "--detail-type",
        "AgentError",
        "--source",
        "cadenza.agents",
        "--detail",
        json.dumps(mine),
        "--no-deliver",
    )
    assert put.exit_code == 0, put.output

    result = cadenza(
        "examples",
        "run",
        "flight-agent",
        "--model",
        "scripted:nowhere-cli",
        "--input",
        '{"destination": "Atlantis"}',
        "--json",
    )
    assert result.exit_code == 1, result.output  # the run failed: the agent gave up
    ran = json.loads(result.stdout)
    assert ran["status"] == "FAILED" and ran["error"]["type"] == "AgentError"
    [recovery] = ran["follow_ons"]
    assert recovery["workflow"] == "cadenza.recovery"
    assert recovery["status"] in ("SUSPENDED", "SUCCEEDED")
    assert as_json("rules", "list") == []
    assert len(runs_by_workflow()["cadenza.recovery"]) == 1  # the user's error started none


SLOW_RUN = textwrap.dedent(
    """
    import sys
    from cadenza.agents import register_model
    from cadenza.cli import main
    from cadenza.testing import ScriptedModel

    register_model("scripted:slow", ScriptedModel(name="scripted:slow", default="ok", delay=60))
    sys.argv = ["cadenza", "examples", "run", "support-tickets", "--model", "scripted:slow"]
    main()
    """
)


def test_ctrl_c_removes_the_rules(tmp_path: Path) -> None:
    env = {**os.environ, "CADENZA_HOME": str(tmp_path / "home")}
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def rules() -> list[str]:
        listed = subprocess.run(
            [CADENZA, "rules", "list", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return [r["name"] for r in json.loads(listed.stdout or "[]")]

    try:
        deadline = time.monotonic() + 30
        while not rules():  # the example has started: its rules are in
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the example never installed its rules"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=45)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "interrupted" in err
    assert rules() == []
