"""research-report end to end: search agent → summaries → writer/evaluator → editor → publish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import cadenza.examples.research_report as scenario
from cadenza import RunStatus
from cadenza.agents import register_model
from cadenza.models import ModelRequest, ToolCall
from cadenza.patterns import HashingEmbedder
from cadenza.testing import ScriptedModel, TestEnvironment


def editorial_model() -> ScriptedModel:
    def reply(req: ModelRequest) -> Any:
        last = req.messages[-1].content
        schema = req.output_schema or {}
        if "scores" in schema.get("properties", {}):
            return {
                "scores": {"coverage": 0.9, "accuracy": 0.8, "clarity": 0.9},
                "critique": "Clear and supported.",
            }
        if "Summarise, for a report" in last:
            return "Ridership grew 14% in Q1; e-bikes carried most trips."
        if last.startswith("Write a short report"):
            return "DRAFT: ridership is up, safety improved on the harbour road."
        if last.startswith("Revise this report"):
            return "REVISED: ridership is up; costs fell; safety improved."
        if req.tools:  # the search agent
            if any(m.role == "tool" for m in req.messages):
                return "Ridership grew; the protected lane cut collisions."
            return [ToolCall("s1", "search_reports", {"query": "ridership and safety"})]
        raise AssertionError(f"unscripted request: {last[:80]}")

    return ScriptedModel(name="scripted:editorial", default=reply)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path))
    monkeypatch.setattr(scenario, "_embedder", lambda: HashingEmbedder(256))
    return tmp_path


async def test_topic_to_approval_request_changes_and_published_report(
    env: TestEnvironment, home: Path
) -> None:
    model = editorial_model()
    register_model("scripted:editorial", model)
    run = await env.run(scenario.research_report, {"model": "scripted:editorial", "sources": 2})
    assert run.status == RunStatus.SUSPENDED, run.error
    assert run.state["status"] == "WAITING_FOR_INPUT"
    notified = [json.loads(line) for line in (home / "notifications.log").read_text().splitlines()]
    assert notified[-1]["token"] == await env.token(run)  # the editor got the token
    asked = len(model.requests)

    await env.succeed(await env.token(run), {"decision": "request_changes", "comment": "Add costs"})
    run = await env.resume(run)
    assert run.status == RunStatus.SUSPENDED  # revised, and asked again
    assert len(model.requests) == asked + 1  # only the revision: nothing before it re-ran
    assert "Add costs" in model.requests[-1].messages[-1].content

    await env.succeed(await env.token(run), {"decision": "approve"})
    run = await env.resume(run)
    result = await env.result(run)
    assert result["published"] is True and result["revisions"] == 1
    assert len(result["sources"]) == 2
    report = Path(result["path"]).read_text()
    assert report.startswith("# How is the Harbour City bike share doing")
    assert "REVISED" in report
    stored = await env.engine.artifacts.get(result["artifact"])  # type: ignore[union-attr]
    assert stored.decode() == report
    assert run.state["status"] == "COMPLETED"


async def test_a_rejected_report_is_not_published(env: TestEnvironment, home: Path) -> None:
    register_model("scripted:editorial", editorial_model())
    run = await env.run(scenario.research_report, {"model": "scripted:editorial", "sources": 1})
    await env.succeed(await env.token(run), {"decision": "reject", "comment": "Off topic"})
    result = await env.result(await env.resume(run))
    assert result == {"published": False, "decision": "REJECTED", "comments": ["Off topic"]}
    assert not (home / "reports").exists()
