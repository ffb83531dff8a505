"""The evaluator reflect-refine loop: when it stops, what the refiner is told, what is kept."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cadenza import Context, RunStatus, WorkflowDefinitionError, workflow
from cadenza.agents import Agent
from cadenza.patterns import Criterion, EvaluatorLoop, StopReason
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel

CRITERIA = {"accurate": "States only true facts.", "brief": "One sentence."}
models: dict[str, ScriptedModel] = {}


def scores(accurate: float, brief: float, critique: str = "") -> dict[str, Any]:
    return {"scores": {"accurate": accurate, "brief": brief}, "critique": critique}


def loop(**options: Any) -> EvaluatorLoop:
    return EvaluatorLoop(
        "review",
        generator=models["writer"],
        evaluator=models["judge"],
        criteria=CRITERIA,
        **options,
    )


def script(drafts: list[str], verdicts: list[dict[str, Any]]) -> None:
    models["writer"] = ScriptedModel(drafts, name="writer")
    models["judge"] = ScriptedModel(verdicts, name="judge")


@workflow(name="t-evaluator")
async def refine(ctx: Context, options: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if options.pop("refiner", False):
        extra["refiner"] = models["refiner"]
    result = await loop(**options, **extra).run(ctx, "Describe Lisbon.")
    await ctx.wait(timedelta(minutes=5))  # the resumed activation replays the whole loop
    return {
        "output": result.output,
        "score": result.score,
        "passed": result.passed,
        "stop": str(result.stop_reason),
        "rounds": [r.score for r in result.rounds],
        "best": result.best_round,
    }


async def finish(env: TestEnvironment, run: Any) -> dict[str, Any]:
    calls = {name: len(m.requests) for name, m in models.items()}
    assert run.status == RunStatus.SUSPENDED
    await env.advance(timedelta(minutes=5))
    result: dict[str, Any] = await env.result(await env.resume(run))
    assert {name: len(m.requests) for name, m in models.items()} == calls  # nothing asked again
    return result


async def test_stops_at_the_threshold_after_refining_with_the_critique(
    fake_env: TestEnvironment,
) -> None:
    script(
        ["Lisbon is the capital of Spain, on the sea.", "Lisbon is Portugal's capital."],
        [scores(0.2, 0.6, "Lisbon is in Portugal, not Spain."), scores(1.0, 0.9)],
    )
    run = await fake_env.run(refine, {"threshold": 0.9})
    result = await finish(fake_env, run)
    assert result == {
        "output": "Lisbon is Portugal's capital.",
        "score": 0.95,
        "passed": True,
        "stop": "threshold",
        "rounds": [0.4, 0.95],
        "best": 2,
    }
    refine_request = models["writer"].requests[1].messages[-1].content
    assert "Lisbon is in Portugal, not Spain." in refine_request
    assert "Lisbon is the capital of Spain" in refine_request  # the draft being refined
    assert "0.40" in refine_request and "0.90" in refine_request  # its score and the bar
    judged = models["judge"].requests[0]
    assert judged.output_schema is not None
    assert judged.output_schema["properties"]["scores"]["required"] == ["accurate", "brief"]
    kept = run.state["context"]["results"]["review"]
    assert [r["critique"] for r in kept["rounds"]] == ["Lisbon is in Portugal, not Spain.", ""]
    assert kept["stop_reason"] == "threshold" and kept["best_round"] == 2


async def test_stops_when_the_score_does_not_rise_by_min_delta(fake_env: TestEnvironment) -> None:
    script(["first", "second", "third"], [scores(0.5, 0.5), scores(0.52, 0.5), scores(1, 1)])
    run = await fake_env.run(refine, {"threshold": 0.9, "min_delta": 0.05, "max_rounds": 5})
    result = await finish(fake_env, run)
    assert result["stop"] == StopReason.NO_IMPROVEMENT
    assert result["rounds"] == [0.5, 0.51]
    assert result["output"] == "second" and result["best"] == 2 and not result["passed"]
    assert len(models["writer"].requests) == 2  # no third draft


async def test_stops_at_max_rounds(fake_env: TestEnvironment) -> None:
    script(["a", "b", "c"], [scores(0.2, 0.2), scores(0.5, 0.5), scores(0.7, 0.7)])
    run = await fake_env.run(refine, {"threshold": 0.95, "max_rounds": 3, "min_delta": 0.0})
    result = await finish(fake_env, run)
    assert result["stop"] == "max_rounds"
    assert result["rounds"] == [0.2, 0.5, 0.7]
    assert (result["output"], result["best"], result["passed"]) == ("c", 3, False)
    assert len(models["writer"].requests) == 3 and len(models["judge"].requests) == 3


async def test_a_worse_refinement_stops_the_loop_and_the_better_draft_wins(
    fake_env: TestEnvironment,
) -> None:
    script(["good", "worse"], [scores(0.6, 0.6), scores(0.3, 0.3)])
    run = await fake_env.run(refine, {"threshold": 0.9, "min_delta": 0.0})
    result = await finish(fake_env, run)
    assert result["stop"] == "no_improvement"
    assert (result["output"], result["best"]) == ("good", 1)


async def test_a_separate_refiner_gets_the_critique(fake_env: TestEnvironment) -> None:
    script(["rough draft"], [scores(0.1, 0.1, "Too vague."), scores(0.9, 0.9)])
    models["refiner"] = ScriptedModel(["polished draft"], name="refiner")
    run = await fake_env.run(refine, {"refiner": True})
    result = await finish(fake_env, run)
    assert result["output"] == "polished draft"
    assert len(models["writer"].requests) == 1
    assert "Too vague." in models["refiner"].requests[0].messages[-1].content


@workflow(name="t-evaluator-weights")
async def weighted(ctx: Context) -> float:
    review = EvaluatorLoop(
        "weighted",
        generator=models["writer"],
        evaluator=models["judge"],
        criteria=[Criterion("accurate", "True.", weight=3), Criterion("brief", "Short.")],
        threshold=0.5,
    )
    return (await review.run(ctx, "task", draft="an existing draft")).score


async def test_weights_and_an_existing_draft(env: TestEnvironment) -> None:
    script([], [scores(1.0, 0.0)])
    assert await env.result(await env.run(weighted)) == 0.75
    assert models["writer"].requests == []  # the draft was given
    assert "an existing draft" in models["judge"].requests[0].messages[-1].content


@workflow(name="t-evaluator-agent")
async def agent_drafts(ctx: Context) -> str:
    writer = Agent("writer", "You write travel notes.", model=models["agent"])
    review = EvaluatorLoop("agent", generator=writer, evaluator=models["judge"], criteria=CRITERIA)
    return (await review.run(ctx, "Describe Porto.")).output


async def test_an_agent_can_be_the_generator(env: TestEnvironment) -> None:
    script([], [scores(0.9, 0.9)])
    models["agent"] = ScriptedModel(["Porto sits on the Douro."], name="agent")
    assert await env.result(await env.run(agent_drafts)) == "Porto sits on the Douro."
    [asked] = models["agent"].requests
    assert asked.messages[0].content.startswith("You write travel notes.")
    assert "Describe Porto." in asked.messages[-1].content


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold": 1.5}, "threshold must be between 0 and 1"),
        ({"criteria": {}}, "at least one criterion"),
        ({"max_rounds": 0}, "max_rounds must be at least 1"),
        ({"min_delta": -0.1}, "min_delta"),
        ({"evaluator": Agent("judge", "Judge.", model="x:y")}, "evaluator must be a model"),
        ({"generator": "no-provider"}, "not a model name"),
        ({"criteria": [Criterion("a", "x", weight=0)]}, "weights must be positive"),
    ],
)
def test_bad_definitions_fail_when_defined(options: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"generator": "x:y", "evaluator": "x:y", "criteria": CRITERIA}
    settings.update(options)
    with pytest.raises(WorkflowDefinitionError, match=message):
        EvaluatorLoop("bad", **settings)


async def test_an_evaluator_that_cannot_score_fails_the_run_clearly(env: TestEnvironment) -> None:
    script([], ["I liked it!", "Really, I liked it!", {"scores": {"accurate": 2}}])
    run = await env.run(weighted)
    assert run.status == RunStatus.FAILED and run.error is not None
    assert run.error.type == "StructuredOutputError"
    assert len(models["judge"].requests) == 3  # the first answer and two repairs, no more


def test_scores_on_other_scales_are_normalised() -> None:
    from cadenza.patterns.evaluator import normalise_score

    assert normalise_score(0.7) == 0.7
    assert normalise_score(7) == 0.7  # a 1-10 answer
    assert normalise_score(85) == 0.85  # a percentage
    assert normalise_score(-3) == 0.0 and normalise_score(1000) == 1.0
