"""Prompt chaining: gates, retry with feedback, going back to re-plan, refining, failing
clearly, and replay that asks no model twice."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from cadenza import Context, RunStatus, WorkflowDefinitionError, workflow
from cadenza.patterns import ChainStep, EvaluatorLoop, GoBack, PromptChain, Refine, Verdict
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel

models: dict[str, ScriptedModel] = {}
gate_calls: list[str] = []


def three_points(output: str) -> Verdict:
    gate_calls.append(output)
    points = [line for line in output.splitlines() if line.startswith("-")]
    if len(points) == 3:
        return Verdict.accept()
    return Verdict.reject(f"the outline has {len(points)} points; it needs exactly 3")


async def short(output: str) -> bool:  # gates may be async, and may return a bool
    return len(output.split()) <= 6


def chain(**draft: Any) -> PromptChain:
    return PromptChain(
        "article",
        model=models["m"],
        steps=[
            ChainStep("outline", "Outline an article about {input}.", gate=three_points),
            ChainStep(
                "draft", "Write the article from this outline:\n{outline}", gate=short, **draft
            ),
        ],
    )


@workflow(name="t-chain")
async def write(ctx: Context, options: dict[str, Any]) -> dict[str, Any]:
    if "refine" in options:
        options = {
            "on_exhausted": Refine(
                EvaluatorLoop(
                    "polish",
                    generator=models["m"],
                    evaluator=models["judge"],
                    criteria={"short": "Six words at most."},
                )
            ),
            "max_attempts": 1,
        }
    elif "go_back" in options:
        options = {"on_exhausted": GoBack("outline"), "max_attempts": 1}
    result = await chain(**options).run(ctx, "durable workflows")
    await ctx.wait(timedelta(minutes=1))
    return {
        "output": result.output,
        "outputs": dict(result.outputs),
        "trail": [(a.step, a.attempt, a.action) for a in result.trail],
        "go_backs": result.go_backs,
    }


OUTLINE = "- why\n- how\n- when"
LONG = "Durable workflows resume after crashes because every step is journaled."


async def run_to_end(env: TestEnvironment, options: dict[str, Any]) -> tuple[Any, Any]:
    run = await env.run(write, options)
    assert run.status == RunStatus.SUSPENDED, run.error
    calls, gates = len(models["m"].requests), len(gate_calls)
    await env.advance(timedelta(minutes=1))
    done = await env.resume(run)
    assert (len(models["m"].requests), len(gate_calls)) == (calls, gates)  # replayed
    return run, await env.result(done)


async def test_each_step_sees_earlier_outputs_and_passes_its_gate(
    fake_env: TestEnvironment,
) -> None:
    gate_calls.clear()
    models["m"] = ScriptedModel([OUTLINE, "Journals make workflows durable."])
    run, result = await run_to_end(fake_env, {})
    assert result["output"] == "Journals make workflows durable."
    assert result["outputs"] == {"outline": OUTLINE, "draft": "Journals make workflows durable."}
    assert result["trail"] == [["outline", 1, "accepted"], ["draft", 1, "accepted"]]
    assert "durable workflows" in models["m"].requests[0].messages[-1].content
    assert OUTLINE in models["m"].requests[1].messages[-1].content
    kept = run.state["context"]["results"]["article"]
    assert kept["status"] == "completed" and kept["outputs"]["outline"] == OUTLINE


async def test_a_rejected_output_is_retried_with_the_gate_feedback(
    fake_env: TestEnvironment,
) -> None:
    gate_calls.clear()
    models["m"] = ScriptedModel(["- one\n- two", OUTLINE, "Short and durable."])
    _, result = await run_to_end(fake_env, {})
    assert result["trail"] == [
        ["outline", 1, "retry"],
        ["outline", 2, "accepted"],
        ["draft", 1, "accepted"],
    ]
    retried = models["m"].requests[1].messages
    assert retried[-2].role == "assistant" and retried[-2].content == "- one\n- two"
    assert "it needs exactly 3" in retried[-1].content
    assert "different approach" in retried[-1].content


async def test_an_exhausted_step_goes_back_and_the_earlier_step_replans(
    fake_env: TestEnvironment,
) -> None:
    gate_calls.clear()
    models["m"] = ScriptedModel([OUTLINE, LONG, "- why\n- how\n- now", "Durable: resume anywhere."])
    _, result = await run_to_end(fake_env, {"go_back": True})
    assert result["trail"] == [
        ["outline", 1, "accepted"],
        ["draft", 1, "go_back:outline"],
        ["outline", 1, "accepted"],
        ["draft", 1, "accepted"],
    ]
    assert result["go_backs"] == 1
    assert result["outputs"]["outline"] == "- why\n- how\n- now"
    replanned = models["m"].requests[2].messages
    assert replanned[-2].content == OUTLINE  # the outline being revised
    assert "A later step (draft)" in replanned[-1].content
    assert "the check failed" in replanned[-1].content
    assert "- now" in models["m"].requests[3].messages[-1].content  # the new outline is used


@workflow(name="t-chain-fails")
async def doomed(ctx: Context) -> str:
    steps = chain(on_exhausted=GoBack("outline", max_times=1), max_attempts=2)
    return str((await steps.run(ctx, "x")).output)


async def test_exhausted_attempts_and_go_backs_fail_with_the_trail(env: TestEnvironment) -> None:
    gate_calls.clear()
    models["m"] = ScriptedModel([OUTLINE, LONG, LONG, OUTLINE, LONG, LONG])
    run = await env.run(doomed)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.type == "PatternError"
    assert "step 'draft' did not pass its gate after 2 attempts" in run.error.message
    actions = [a["action"] for a in run.error.details["trail"]]
    assert actions == ["accepted", "retry", "go_back:outline", "accepted", "retry", "failed"]
    assert len(models["m"].requests) == 6  # bounded: no seventh call
    assert run.state["context"]["results"]["article"]["status"] == "failed"


async def test_an_exhausted_step_can_be_handed_to_an_evaluator_loop(
    fake_env: TestEnvironment,
) -> None:
    gate_calls.clear()
    models["m"] = ScriptedModel([OUTLINE, LONG, "Journaled steps survive crashes."])
    models["judge"] = ScriptedModel(
        [
            {"scores": {"short": 0.1}, "critique": "Far too long."},
            {"scores": {"short": 1}, "critique": ""},
        ]
    )
    _, result = await run_to_end(fake_env, {"refine": True})
    assert result["output"] == "Journaled steps survive crashes."
    assert [t[2] for t in result["trail"]] == ["accepted", "refine", "accepted"]
    # The loop judged the rejected draft first, then the refinement.
    assert LONG in models["judge"].requests[0].messages[-1].content
    assert "Far too long." in models["m"].requests[2].messages[-1].content


class Ticket(BaseModel):
    team: str
    urgent: bool


def urgent_is_billing(ticket: Ticket) -> Verdict:
    if ticket.urgent and ticket.team != "billing":
        return Verdict.reject("urgent tickets go to billing")
    return Verdict.accept()


@workflow(name="t-chain-structured")
async def triage(ctx: Context, text: str) -> dict[str, Any]:
    steps = PromptChain(
        "triage",
        model=models["m"],
        system="You triage support tickets.",
        steps=[
            ChainStep("ticket", "Triage: {input}", output_type=Ticket, gate=urgent_is_billing),
            ChainStep("reply", lambda v: f"Reply to a {v['ticket'].team} ticket: {v['input']}"),
        ],
    )
    result = await steps.run(ctx, text)
    return {"ticket": result.outputs["ticket"].model_dump(), "reply": result.output}


async def test_structured_steps_and_function_prompts(env: TestEnvironment) -> None:
    models["m"] = ScriptedModel(
        [{"team": "tech", "urgent": True}, {"team": "billing", "urgent": True}, "On it."]
    )
    result = await env.result(await env.run(triage, "I was charged twice!"))
    assert result == {"ticket": {"team": "billing", "urgent": True}, "reply": "On it."}
    first = models["m"].requests[0]
    assert (
        first.output_schema is not None
        and first.messages[0].content == "You triage support tickets."
    )
    assert "urgent tickets go to billing" in models["m"].requests[1].messages[-1].content
    assert models["m"].requests[2].messages[-1].content.startswith("Reply to a billing ticket")


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([], "has no steps"),
        ([ChainStep("a", "x"), ChainStep("a", "y")], "unique"),
        ([ChainStep("input", "x")], "not 'input'"),
        ([ChainStep("a", "Use {plan}")], r"uses \{plan\}"),
        (
            [ChainStep("a", "{input}", on_exhausted=GoBack("b")), ChainStep("b", "x")],
            "earlier step",
        ),
        (
            [ChainStep("a", "x"), ChainStep("b", "x", on_exhausted=GoBack("a", max_times=0))],
            "max_times",
        ),
        ([ChainStep("a", "x", max_attempts=0)], "max_attempts"),
        ([ChainStep("a", "x {")], "not a valid template"),
        ([ChainStep("a", "{0}")], "positional"),
    ],
)
def test_bad_chains_fail_when_defined(steps: list[ChainStep], message: str) -> None:
    with pytest.raises(WorkflowDefinitionError, match=message):
        PromptChain("bad", steps=steps, model="x:y")


def test_a_step_needs_a_model_and_refine_needs_text() -> None:
    with pytest.raises(WorkflowDefinitionError, match="has no model"):
        PromptChain("bad", steps=[ChainStep("a", "x")])
    loop = EvaluatorLoop("l", generator="x:y", evaluator="x:y", criteria={"c": "d"})
    with pytest.raises(WorkflowDefinitionError, match="Refine works on text"):
        PromptChain(
            "bad",
            model="x:y",
            steps=[ChainStep("a", "x", output_type=Ticket, on_exhausted=Refine(loop))],
        )
