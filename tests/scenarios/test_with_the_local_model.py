"""Every scenario with the offline model, SmolLM2-135M through llama.cpp, as a user runs it:
``cadenza examples run NAME`` from an empty folder.

A 135M model's prose is not what these pin. They pin that each scenario reaches the end it
is there to show — the approval request, the compensation, the re-plan after a sold-out
flight, the whole choreography — with the model it ships with.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cadenza.cli import cli

LOCAL = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="the 'local' extra (llama-cpp-python) is not installed",
)
pytestmark = [pytest.mark.slow, pytest.mark.native, pytest.mark.timeout(900), LOCAL]


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("CADENZA_HOME", str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return folder


def cadenza(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def example(name: str, **extra: Any) -> dict[str, Any]:
    args = ["examples", "run", name, "--quiet"]
    if extra:
        args += ["--input", json.dumps(extra)]
    return cadenza(*args)


def approve(ran: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    [wait] = ran["waiting_for"]
    return cadenza("callback", "succeed", wait["token"], "--payload", json.dumps(payload))


def test_research_report(home: Path) -> None:
    ran = example("research-report")
    assert ran["status"] == "SUSPENDED"  # the editor is asked
    usage = cadenza("runs", "state", ran["run_id"])["metadata"]["usage"]
    assert usage["requests"] >= 5 and usage["by_model"].keys() == {"local:smollm2"}
    done = approve(ran, {"decision": "approve"})
    assert done["status"] == "SUCCEEDED", done
    assert done["result"]["published"] is True
    assert Path(done["result"]["path"]).read_text().strip()


def test_travel_booking(home: Path) -> None:
    ran = example("travel-booking")
    assert ran["status"] == "SUCCEEDED", ran
    result = ran["result"]
    # Oslo's hotels are full: the flight the team booked is cancelled.
    assert result["status"] == "COMPENSATED" and result["compensated"] == ["keep-flight"]
    ledger = [json.loads(line) for line in (home / "travel-ledger.jsonl").read_text().splitlines()]
    [flight] = [e for e in ledger if e["kind"] == "flight"]
    assert [e["status"] for e in ledger if e["ref"] == flight["ref"]] == ["booked", "cancelled"]
    assert not [e for e in ledger if e["kind"] == "hotel"]


def test_trip_booking(home: Path) -> None:
    ran = example("trip-booking")
    assert ran["status"] == "SUSPENDED"
    done = approve(ran, {"approved": True})
    assert done["result"]["status"] == "confirmed"


def test_flight_agent(home: Path) -> None:
    ran = example("flight-agent")
    assert ran["status"] == "SUCCEEDED", ran
    state = cadenza("runs", "state", ran["run_id"])
    bookings = [s for s in state["plan"] if s["toolName"] == "book_flight"]
    # The cheapest flight was sold out; the agent re-planned and booked another.
    assert bookings[0]["status"] == "FAILED" and "sold out" in bookings[0]["result"]
    assert bookings[-1]["status"] == "SUCCEEDED"
    assert ran["result"]["booked"] in (["HC220"], ["HC310"])
    assert state["status"] == "COMPLETED" and ran["follow_ons"] == []


def test_support_tickets(home: Path) -> None:
    ran = example("support-tickets")
    assert ran["status"] == "SUCCEEDED", ran
    hops = [(r["workflow"], r["status"]) for r in ran["follow_ons"]]
    assert hops == [("technical-agent", "SUCCEEDED"), ("notification-agent", "SUCCEEDED")]
    assert ran["follow_ons"][-1]["result"]["message"]
    assert CliRunner().invoke(cli, ["rules", "list", "--json"]).stdout.strip() == "[]"


def test_contract_router(home: Path) -> None:
    ran = example("contract-router")
    assert ran["status"] == "SUCCEEDED", ran
    # SmolLM2-135M labels this sentence legal with confidence 0.5, at the default threshold.
    assert ran["result"]["route"] == ran["result"]["label"] == "legal"
    assert ran["result"]["answer"]


def test_policy_summary(home: Path) -> None:
    ran = example("policy-summary")
    assert ran["status"] == "SUCCEEDED", ran
    result = ran["result"]
    assert result["summary"] and 1 <= result["rounds"] <= 3
    assert set(result["scores"][0]) == {"coverage", "tone", "correctness"}


def test_report_digest(home: Path) -> None:
    ran = example("report-digest")
    assert ran["status"] == "SUCCEEDED", ran
    result = ran["result"]
    assert result["reports"] == 10 and result["succeeded"] >= 5
    assert result["themes"] and isinstance(result["contradictions"], list)


def test_knowledge_qa(home: Path) -> None:
    ran = example("knowledge-qa")
    assert ran["status"] == "SUCCEEDED", ran
    result = ran["result"]
    assert len(result["ingested"]["documents"]) == 10
    assert len(result["passages"]) == 3 and result["answer"]
    cited = {c["report"] for c in result["citations"]}
    assert cited <= {p["report"] for p in result["passages"]}
