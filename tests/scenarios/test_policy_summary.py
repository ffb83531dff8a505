"""policy-summary: the critique of a low score reaches the generator, whose next draft
passes; a round that does not improve stops the loop; so does the last round."""

from __future__ import annotations

from typing import Any

from cadenza import RunStatus
from cadenza.agents import register_model
from cadenza.examples.policy_summary import policy_summary
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel


def verdict(coverage: float, tone: float, correctness: float, critique: str = "") -> dict[str, Any]:
    return {
        "scores": {"coverage": coverage, "tone": tone, "correctness": correctness},
        "critique": critique,
    }


def script(drafts: list[str], verdicts: list[dict[str, Any]]) -> tuple[ScriptedModel, ...]:
    writer = ScriptedModel(drafts, name="scripted:writer")
    judge = ScriptedModel(verdicts, name="scripted:judge")
    register_model("scripted:writer", writer)
    register_model("scripted:judge", judge)
    return writer, judge


async def summarised(env: TestEnvironment, **options: Any) -> dict[str, Any]:
    run = await env.run(
        policy_summary, {"model": "scripted:writer", "evaluator": "scripted:judge", **options}
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    result: dict[str, Any] = await env.result(run)
    return result


async def test_the_critique_reaches_the_generator_and_the_second_draft_passes(
    env: TestEnvironment,
) -> None:
    writer, judge = script(
        ["Rent a bike from 16; it costs 1.00 to unlock.", "Deposit 50; damage excess 25; …"],
        [
            verdict(0.25, 1.0, 1.0, "Mention the 50 deposit and the 25 damage excess."),
            verdict(1.0, 0.75, 1.0),
        ],
    )
    result = await summarised(env)
    assert result["summary"] == "Deposit 50; damage excess 25; …"
    assert result["stop_reason"] == "threshold" and result["passed"] is True
    assert result["rounds"] == 2 and result["best_round"] == 2
    assert result["score"] == 0.95  # (2 * 1.0 + 0.75 + 2 * 1.0) / 5: coverage counts double
    # The generator read the policy itself, then the critique of its first draft.
    assert "excess of 25" in writer.requests[0].messages[-1].content
    refine = writer.requests[1].messages[-1].content
    assert "Mention the 50 deposit and the 25 damage excess." in refine
    assert "Rent a bike from 16" in refine and "scored it 0.70" in refine
    assert writer.requests[0].max_tokens == 240  # drafts are bounded
    # The evaluator scored against the three criteria, in a schema.
    schema = judge.requests[0].output_schema
    assert schema is not None
    assert set(schema["properties"]["scores"]["required"]) == {"coverage", "tone", "correctness"}


async def test_a_round_without_improvement_stops_the_loop(env: TestEnvironment) -> None:
    script(
        ["First draft.", "Second draft.", "never written"],
        [verdict(0.5, 0.5, 0.75, "More amounts."), verdict(0.5, 0.5, 0.5, "Worse.")],
    )
    result = await summarised(env, max_rounds=4)
    assert result["stop_reason"] == "no_improvement" and result["passed"] is False
    assert result["rounds"] == 2 and result["best_round"] == 1
    assert result["summary"] == "First draft."  # the best draft wins, not the last


async def test_the_last_round_ends_the_loop_with_the_best_draft(env: TestEnvironment) -> None:
    writer, _ = script(
        ["Draft one.", "Draft two.", "Draft three."],
        [verdict(0.25, 0.25, 0.25), verdict(0.5, 0.5, 0.5), verdict(0.75, 0.75, 0.75)],
    )
    result = await summarised(env, max_rounds=3, threshold=0.9)
    assert result["stop_reason"] == "max_rounds" and result["passed"] is False
    assert result["rounds"] == 3 and result["summary"] == "Draft three."
    assert result["scores"][-1] == {"coverage": 0.75, "tone": 0.75, "correctness": 0.75}
    assert len(writer.requests) == 3


async def test_a_policy_in_the_input_replaces_the_bike_share_policy(env: TestEnvironment) -> None:
    writer, _ = script(["Dogs ride free."], [verdict(1, 1, 1)])
    result = await summarised(env, policy="Dogs ride free on every bike.")
    assert result["summary"] == "Dogs ride free." and result["stop_reason"] == "threshold"
    assert "Dogs ride free on every bike." in writer.requests[0].messages[-1].content
    assert "excess" not in writer.requests[0].messages[-1].content
