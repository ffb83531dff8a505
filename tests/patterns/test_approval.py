"""Approval gate: approve, reject, request changes → revise → approve, timeout → escalation
→ expiry, the notifiers, and replay that never notifies twice."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cadenza import Context, RunStatus, workflow
from cadenza.agents import call_model
from cadenza.errors import WorkflowDefinitionError
from cadenza.patterns._notify import (
    ConsoleNotifier,
    FileNotifier,
    Notification,
    NotificationFailed,
    WebhookNotifier,
)
from cadenza.patterns.approval import ApprovalDecision, ApprovalGate, ApprovalOutcome
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel

reviewer: list[Notification] = []
manager: list[Notification] = []
WRITER = ScriptedModel(name="scripted:writer")


@pytest.fixture(autouse=True)
def _clean() -> None:
    reviewer.clear()
    manager.clear()
    WRITER.requests.clear()


async def to_reviewer(notification: Notification) -> None:
    reviewer.append(notification)


def to_manager(notification: Notification) -> None:
    manager.append(notification)


async def rewrite(ctx: Context, draft: str, feedback: str) -> str:
    reply = await call_model(ctx, WRITER, f"Rewrite: {draft}\nFeedback: {feedback}")
    return reply.text


GATE = ApprovalGate(notify=to_reviewer, max_revisions=1, revise=rewrite)


@workflow(name="t-approval")
async def publish(ctx: Context, draft: str) -> ApprovalOutcome:
    return await GATE.request(ctx, "press release", draft)


async def test_approve(env: TestEnvironment) -> None:
    run = await env.run(publish, "Cadenza 1.0 is out")
    assert run.status == RunStatus.SUSPENDED
    assert run.state["status"] == "WAITING_FOR_INPUT"  # what an operator sees meanwhile
    [note] = reviewer
    assert note.kind == "approval_requested" and note.body == "Cadenza 1.0 is out"
    assert note.token == await env.token(run) and note.round == 1
    assert note.respond is not None and "cadenza callback succeed" in note.respond
    assert note.idempotency_key.startswith(run.run_id + "/")
    await env.succeed(note.token or "", {"decision": "approve", "comment": "ship it", "by": "ada"})
    run = await env.resume(run)
    outcome: ApprovalOutcome = await env.result(run, ApprovalOutcome)
    assert outcome.decision == ApprovalDecision.APPROVED and outcome.approved
    assert outcome.draft == "Cadenza 1.0 is out" and outcome.rounds == 1
    assert [(c.decision, c.comment, c.reviewer) for c in outcome.comments] == [
        ("approve", "ship it", "ada")
    ]
    assert not outcome.escalated and len(reviewer) == 1
    assert run.state["status"] != "WAITING_FOR_INPUT"


async def test_reject_and_a_failed_callback_both_reject(env: TestEnvironment) -> None:
    run = await env.run(publish, "draft")
    await env.succeed(await env.token(run), {"decision": "reject", "comment": "off-brand"})
    outcome: ApprovalOutcome = await env.result(await env.resume(run), ApprovalOutcome)
    assert outcome.decision == ApprovalDecision.REJECTED and not outcome.approved
    assert outcome.comments[0].comment == "off-brand"

    run = await env.run(publish, "draft")
    await env.fail(await env.token(run), "Rejected", "legal says no")
    outcome = await env.result(await env.resume(run), ApprovalOutcome)
    assert outcome.decision == ApprovalDecision.REJECTED
    assert outcome.comments[0].comment == "legal says no"


async def test_request_changes_revises_and_asks_again(env: TestEnvironment) -> None:
    WRITER.reply("Cadenza 1.0 ships today, with durable agents.")
    run = await env.run(publish, "Cadenza 1.0 is out")
    await env.succeed(
        await env.token(run), {"decision": "request_changes", "comment": "mention agents"}
    )
    run = await env.resume(run)
    assert run.status == RunStatus.SUSPENDED
    [request] = WRITER.requests  # the revision asked the model once, with the feedback
    assert "mention agents" in request.messages[-1].content
    first, second = reviewer
    assert second.round == 2 and second.body == "Cadenza 1.0 ships today, with durable agents."
    assert second.token != first.token
    await env.succeed(second.token or "", {"decision": "approve"})
    outcome: ApprovalOutcome = await env.result(await env.resume(run), ApprovalOutcome)
    assert outcome.approved and outcome.rounds == 2
    assert outcome.draft == "Cadenza 1.0 ships today, with durable agents."
    assert [c.decision for c in outcome.comments] == ["request_changes", "approve"]
    assert len(WRITER.requests) == 1 and len(reviewer) == 2  # replays asked nothing again


async def test_changes_requested_beyond_max_revisions_end_the_request(
    env: TestEnvironment,
) -> None:
    WRITER.reply("second draft")
    run = await env.run(publish, "first draft")
    await env.succeed(await env.token(run), {"decision": "request_changes", "comment": "again"})
    run = await env.resume(run)
    await env.succeed(await env.token(run), {"decision": "request_changes", "comment": "more"})
    outcome: ApprovalOutcome = await env.result(await env.resume(run), ApprovalOutcome)
    assert outcome.decision == ApprovalDecision.CHANGES_REQUESTED
    assert outcome.draft == "second draft" and outcome.rounds == 2
    assert len(WRITER.requests) == 1  # max_revisions=1


async def test_an_unreadable_answer_is_asked_again(env: TestEnvironment) -> None:
    run = await env.run(publish, "draft")
    await env.succeed(await env.token(run), {"decision": "maybe"})
    run = await env.resume(run)
    assert run.status == RunStatus.SUSPENDED and len(reviewer) == 2
    await env.succeed(await env.token(run), {"approved": True})
    outcome: ApprovalOutcome = await env.result(await env.resume(run), ApprovalOutcome)
    assert outcome.approved and [c.decision for c in outcome.comments] == ["unreadable", "approve"]


ESCALATING = ApprovalGate(
    notify=to_reviewer,
    timeout=timedelta(hours=4),
    escalate_to=to_manager,
    escalation_timeout=timedelta(hours=1),
)


@workflow(name="t-approval-escalation")
async def escalating(ctx: Context, draft: str) -> ApprovalOutcome:
    return await ESCALATING.request(ctx, "refund of 900 EUR", draft)


async def test_timeout_escalates_once_and_silence_expires(fake_env: TestEnvironment) -> None:
    run = await escalation_pending(fake_env)
    await fake_env.advance(timedelta(hours=1))
    run = await fake_env.resume(run)
    outcome: ApprovalOutcome = await fake_env.result(run, ApprovalOutcome)
    assert outcome.decision == ApprovalDecision.EXPIRED and outcome.escalated
    assert [(c.decision, c.escalated) for c in outcome.comments] == [
        ("timeout", False),
        ("timeout", True),
    ]
    assert len(reviewer) == 1 and len(manager) == 1  # one notification each, ever


async def test_the_escalation_target_can_decide(fake_env: TestEnvironment) -> None:
    run = await escalation_pending(fake_env)
    await fake_env.succeed(manager[0].token or "", {"decision": "approve", "by": "grace"})
    outcome: ApprovalOutcome = await fake_env.result(await fake_env.resume(run), ApprovalOutcome)
    assert outcome.approved and outcome.escalated
    assert outcome.comments[-1].reviewer == "grace" and outcome.comments[-1].escalated


async def escalation_pending(env: TestEnvironment) -> Any:
    run = await env.run(escalating, "refund order 42")
    assert run.status == RunStatus.SUSPENDED and len(reviewer) == 1 and manager == []
    await env.advance(timedelta(hours=3, minutes=59))
    assert (await env.resume(run)).status == RunStatus.SUSPENDED and manager == []
    await env.advance(timedelta(minutes=1))
    run = await env.resume(run)
    assert run.status == RunStatus.SUSPENDED
    [note] = manager
    assert note.kind == "approval_escalated" and note.token == await env.token(run)
    assert note.timeout_seconds == 3600
    return run


def test_gates_are_checked_when_defined() -> None:
    with pytest.raises(WorkflowDefinitionError, match="needs a timeout"):
        ApprovalGate(notify=to_reviewer, escalate_to=to_manager)
    with pytest.raises(WorkflowDefinitionError, match="Notifier"):
        ApprovalGate(notify="ops@example.com")  # type: ignore[arg-type]
    with pytest.raises(WorkflowDefinitionError, match="max_revisions"):
        ApprovalGate(notify=to_reviewer, max_revisions=-1)


NOTE = Notification(
    kind="approval_requested",
    subject="budget",
    run_id="r-1",
    workflow="w",
    token="tok",
    body={"amount": 5},
    idempotency_key="r-1/3.2",
)


async def test_file_notifier_writes_json_lines_under_cadenza_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path))
    notifier = FileNotifier()
    await notifier.send(NOTE)
    await notifier.send(NOTE)
    lines = (tmp_path / "notifications.log").read_text().splitlines()
    assert [json.loads(line)["token"] for line in lines] == ["tok", "tok"]
    assert json.loads(lines[0])["body"] == {"amount": 5}


async def test_console_notifier_prints_a_line() -> None:
    out = io.StringIO()
    await ConsoleNotifier(out).send(NOTE)
    assert "approval_requested: budget (run r-1)" in out.getvalue()


async def test_webhook_notifier_posts_json_with_the_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503 if len(seen) > 1 else 204, text="busy")

    notifier = WebhookNotifier(
        "https://hooks.example/approve", transport=httpx.MockTransport(answer)
    )
    await notifier.send(NOTE)
    assert seen[0].headers["idempotency-key"] == "r-1/3.2"
    assert json.loads(seen[0].content)["subject"] == "budget"
    with pytest.raises(NotificationFailed, match="503") as failed:
        await notifier.send(NOTE)
    assert failed.value.retryable


@workflow(name="t-approval-file")
async def filed(ctx: Context) -> str:
    gate = ApprovalGate(notify=FileNotifier())
    return str((await gate.request(ctx, "deploy", {"version": 2})).decision)


async def test_a_gate_with_the_file_notifier_notifies_once_across_replays(
    env: TestEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path))
    run = await env.run(filed)
    assert run.status == RunStatus.SUSPENDED
    [line] = (tmp_path / "notifications.log").read_text().splitlines()
    token = json.loads(line)["token"]
    await env.succeed(token, {"decision": "approve"})
    assert await env.result(await env.resume(run)) == "APPROVED"  # replays the notify step
    assert len((tmp_path / "notifications.log").read_text().splitlines()) == 1
