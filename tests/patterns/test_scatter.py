"""Scatter-gather: fan-out with personas, models and agents; merge, vote, pick the best,
synthesise; per-branch failures and timeouts; completion rules; concurrency; replay."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from cadenza import CompletionConfig, Context, RunStatus, WorkflowDefinitionError, workflow
from cadenza.agents import Agent
from cadenza.errors import ModelResponseError
from cadenza.models import Model, ModelRequest, ModelResponse
from cadenza.patterns import (
    Branch,
    MajorityVote,
    Merge,
    PickBest,
    Scatter,
    Synthesize,
)
from cadenza.retry import NO_RETRY
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel

models: dict[str, Any] = {}
scored: list[Any] = []


def panel(gather: Any = None, **options: Any) -> Scatter:
    return Scatter(
        "panel",
        branches=[
            Branch("optimist", models["a"], system="You see the upside."),
            Branch("sceptic", models["b"], system="You doubt everything."),
            Branch("plain", models["c"], prompt="Answer in one word: {task}"),
        ],
        gather=gather or Merge(),
        **options,
    )


def by_length(answer: str) -> float:
    scored.append(answer)
    return float(len(answer))


GATHERERS: dict[str, Any] = {
    "merge": lambda: Merge(),
    "vote": lambda: MajorityVote(),
    "vote3": lambda: MajorityVote(min_votes=3),
    "best": lambda: PickBest(scorer=by_length),
    "judge": lambda: PickBest(judge=models["judge"]),
    "synth": lambda: Synthesize(models["judge"]),
}


@workflow(name="t-scatter")
async def ask_panel(ctx: Context, how: dict[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in how.items() if k != "gather"}
    if "timeout" in options:
        options["timeout"] = timedelta(seconds=options["timeout"])
        options["retry"] = NO_RETRY
    if "min_successful" in options:
        options["completion"] = CompletionConfig(min_successful=options.pop("min_successful"))
    result = await panel(GATHERERS[how["gather"]](), **options).run(ctx, "Is the sea blue?")
    await ctx.wait(timedelta(seconds=10))
    return {
        "output": result.output,
        "detail": dict(result.detail),
        "branches": [(b.name, b.status, b.error_type) for b in result.branches],
        "reason": result.completion_reason,
    }


def script(a: Any, b: Any, c: Any, judge: Any = None, *, delay: float = 0.0) -> None:
    models["a"] = ScriptedModel([a], name="a")
    models["b"] = ScriptedModel([b], name="b", delay=delay)
    models["c"] = ScriptedModel([c], name="c")
    models["judge"] = ScriptedModel([judge] if judge is not None else [], name="judge")
    scored.clear()


async def gather(env: TestEnvironment, how: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    run = await env.run(ask_panel, how)
    assert run.status == RunStatus.SUSPENDED, run.error
    asked = {n: len(m.requests) for n, m in models.items()}
    scores = len(scored)
    await env.advance(10)
    result = await env.result(await env.resume(run))
    assert {n: len(m.requests) for n, m in models.items()} == asked  # replayed, not asked
    assert len(scored) == scores
    return run, result


async def test_merge_gives_every_answer_with_its_persona(fake_env: TestEnvironment) -> None:
    script("Yes, gloriously.", "Only on sunny days.", "Yes")
    run, result = await gather(fake_env, {"gather": "merge"})
    assert result["output"] == {
        "optimist": "Yes, gloriously.",
        "sceptic": "Only on sunny days.",
        "plain": "Yes",
    }
    assert models["a"].requests[0].messages[0].content == "You see the upside."
    assert models["b"].requests[0].messages[0].content == "You doubt everything."
    assert models["c"].requests[0].messages[-1].content == "Answer in one word: Is the sea blue?"
    kept = run.state["context"]["results"]["panel"]
    assert kept["status"] == "completed" and len(kept["branches"]) == 3


async def test_majority_vote_normalises_answers(fake_env: TestEnvironment) -> None:
    script("Yes.", "No", "yes")
    _, result = await gather(fake_env, {"gather": "vote"})
    assert result["output"] == "Yes."
    assert result["detail"]["votes"] == {"yes": 2, "no": 1}
    assert result["detail"]["agreeing"] == ["optimist", "plain"]


async def test_a_vote_without_enough_agreement_fails(fake_env: TestEnvironment) -> None:
    script("Yes.", "No", "yes")
    run = await fake_env.run(ask_panel, {"gather": "vote3"})
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "PatternError"
    assert "no answer got 3 votes" in run.error.message


async def test_pick_best_by_scorer_and_by_judge(fake_env: TestEnvironment) -> None:
    script("Yes, gloriously.", "Only on sunny days.", "Yes")
    _, result = await gather(fake_env, {"gather": "best"})
    assert result["output"] == "Only on sunny days."
    assert result["detail"]["winner"] == "sceptic"
    assert result["detail"]["scores"] == {"optimist": 16.0, "sceptic": 19.0, "plain": 3.0}

    script("Yes, gloriously.", "Only on sunny days.", "Yes", {"best": "plain", "reason": "terse"})
    _, result = await gather(fake_env, {"gather": "judge"})
    assert result["output"] == "Yes" and result["detail"] == {"winner": "plain", "reason": "terse"}
    judged = models["judge"].requests[0]
    assert judged.output_schema is not None
    assert judged.output_schema["properties"]["best"]["enum"] == ["optimist", "sceptic", "plain"]
    assert "[sceptic]\nOnly on sunny days." in judged.messages[-1].content


async def test_synthesize_writes_one_answer_from_all(fake_env: TestEnvironment) -> None:
    script("Yes.", "Sometimes.", "Yes", "Mostly blue, sometimes grey.")
    _, result = await gather(fake_env, {"gather": "synth"})
    assert result["output"] == "Mostly blue, sometimes grey."
    prompt = models["judge"].requests[0].messages[-1].content
    assert all(f"[{name}]" in prompt for name in ("optimist", "sceptic", "plain"))


async def test_failed_and_timed_out_branches_are_reported(fake_env: TestEnvironment) -> None:
    script(ModelResponseError("garbled"), "late answer", "Yes", delay=2.0)
    run, result = await gather(fake_env, {"gather": "merge", "timeout": 0.05})
    assert result["output"] == {"plain": "Yes"}
    assert result["branches"] == [
        ["optimist", "failed", "ModelResponseError"],
        ["sceptic", "failed", "ModelTimeout"],
        ["plain", "succeeded", None],
    ]
    kept = run.state["context"]["results"]["panel"]["branches"]
    assert "garbled" in kept[0]["error"]


async def test_no_successful_branch_raises_with_every_error(env: TestEnvironment) -> None:
    script(ModelResponseError("one"), ModelResponseError("two"), ModelResponseError("three"))
    run = await env.run(ask_panel, {"gather": "merge"})
    assert run.status == RunStatus.FAILED and run.error is not None
    assert run.error.type == "PatternError"
    assert "0 of 3 branches succeeded" in run.error.message
    assert all(word in run.error.message for word in ("one", "two", "three"))


async def test_min_successful_abandons_the_rest(fake_env: TestEnvironment) -> None:
    script("first", "second", "third")
    _, result = await gather(
        fake_env, {"gather": "merge", "min_successful": 1, "max_concurrency": 1}
    )
    assert result["output"] == {"optimist": "first"}
    assert result["reason"] == "MIN_SUCCESSFUL_REACHED"
    assert [b[1] for b in result["branches"]] == ["succeeded", "abandoned", "abandoned"]
    assert models["b"].requests == [] and models["c"].requests == []


class Counting(Model):
    """Records how many calls are in flight at once."""

    name = "counting:model"
    now = 0
    peak = 0

    async def request(self, req: ModelRequest) -> ModelResponse:
        Counting.now += 1
        Counting.peak = max(Counting.peak, Counting.now)
        await asyncio.sleep(0.02)
        Counting.now -= 1
        return ModelResponse(text="ok", model=self.name)


class Verdict(BaseModel):
    answer: str
    sure: bool


@workflow(name="t-scatter-wide")
async def wide(ctx: Context) -> dict[str, Any]:
    many = Scatter(
        "wide",
        [Branch(f"b{i}", Counting()) for i in range(6)]
        + [
            Branch("agent", Agent("analyst", "You analyse.", model=models["agent"])),
            Branch("typed", models["typed"], output_type=Verdict),
        ],
        max_concurrency=2,
    )
    result = await many.run(ctx, "Go")
    typed = result.output["typed"]
    return {"agent": result.output["agent"], "typed": [type(typed).__name__, typed.sure]}


async def test_concurrency_cap_agents_and_structured_branches(env: TestEnvironment) -> None:
    Counting.peak = 0
    models["agent"] = ScriptedModel(["Analysed."], name="agent")
    models["typed"] = ScriptedModel([{"answer": "yes", "sure": True}], name="typed")
    result = await env.result(await env.run(wide))
    assert result == {"agent": "Analysed.", "typed": ["Verdict", True]}
    assert Counting.peak == 2


def test_bad_scatters_fail_when_defined() -> None:
    with pytest.raises(WorkflowDefinitionError, match="has no branches"):
        Scatter("s", [])
    with pytest.raises(WorkflowDefinitionError, match="unique"):
        Scatter("s", [Branch("a", "x:y"), Branch("a", "x:y")])
    with pytest.raises(WorkflowDefinitionError, match=r"uses \{question\}"):
        Scatter("s", [Branch("a", "x:y", prompt="{question}")])
    with pytest.raises(WorkflowDefinitionError, match="max_concurrency"):
        Scatter("s", [Branch("a", "x:y")], max_concurrency=0)
    with pytest.raises(WorkflowDefinitionError, match="output_type needs a model"):
        Scatter("s", [Branch("a", Agent("a", "x", model="x:y"), output_type=Verdict)])
    with pytest.raises(WorkflowDefinitionError, match="a scorer or a judge"):
        PickBest()
    with pytest.raises(WorkflowDefinitionError, match="not an Aggregator"):
        Scatter("s", [Branch("a", "x:y")], gather=object())  # type: ignore[arg-type]
