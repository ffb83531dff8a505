"""Human approval gate: ask a reviewer, wait durably, revise on request, escalate on silence.

    gate = ApprovalGate(notify=FileNotifier(), timeout=timedelta(hours=4),
                        escalate_to=ConsoleNotifier(), escalation_timeout=timedelta(hours=2),
                        max_revisions=2, revise=rewrite)
    outcome = await gate.request(ctx, "Press release", draft)
    if outcome.approved:
        publish(outcome.draft)

Each round opens a callback and notifies the reviewer with its token (a durable step, so
replay never notifies twice). The reviewer completes the callback with
``{"decision": "approve" | "reject" | "request_changes", "comment": "…"}``; failing the
callback counts as a rejection. ``request_changes`` runs ``revise(ctx, draft, comment)``
and asks again, at most ``max_revisions`` times. A round that times out is escalated once
to ``escalate_to``, who owns the request from then on; silence there too ends in EXPIRED.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cadenza.context import Context
from cadenza.errors import CallbackFailed, CallbackTimedOut, WorkflowDefinitionError
from cadenza.patterns._notify import Notification, NotifierLike, as_notifier, send_notification
from cadenza.retry import RetryPolicy
from cadenza.state import AgentStatus

__all__ = ["ApprovalDecision", "ApprovalGate", "ApprovalOutcome", "ReviewAnswer", "ReviewComment"]

Reviser = Callable[[Context, Any, str], Awaitable[Any]]

_ANSWERS = {
    "approve": "approve",
    "approved": "approve",
    "reject": "reject",
    "rejected": "reject",
    "request_changes": "request_changes",
    "changes_requested": "request_changes",
    "revise": "request_changes",
}


class ApprovalDecision(StrEnum):
    APPROVED = "APPROVED"
    REJECTED = "REJECTED"
    CHANGES_REQUESTED = "CHANGES_REQUESTED"  # still wanted changes when no revision was left
    EXPIRED = "EXPIRED"  # nobody answered, escalation included


@dataclass(frozen=True)
class ReviewComment:
    round: int
    decision: str  # approve, reject, request_changes, timeout, or unreadable
    comment: str = ""
    reviewer: str | None = None
    escalated: bool = False


class ReviewAnswer(BaseModel):
    """What a reviewer sends back: the payload type of every approval callback, so that a
    payload that is not a JSON object (or none at all) is refused before it completes the
    callback. Other fields are kept (an escalation's ``result``, say)."""

    model_config = ConfigDict(extra="allow")

    decision: str | None = Field(default=None, description="approve, reject or request_changes")
    approved: bool | None = None  # the short form of a decision
    comment: str | None = None
    by: str | None = None


@dataclass(frozen=True)
class ApprovalOutcome:
    decision: ApprovalDecision
    draft: Any
    comments: list[ReviewComment] = field(default_factory=list)
    rounds: int = 0
    escalated: bool = False
    answer: dict[str, Any] | None = None  # the last reviewer's payload, as sent

    @property
    def approved(self) -> bool:
        return self.decision == ApprovalDecision.APPROVED


@dataclass(frozen=True)
class ApprovalGate:
    """A reusable approval policy; ``request`` runs one approval in a workflow."""

    notify: NotifierLike
    timeout: timedelta | None = None
    escalate_to: NotifierLike | None = None
    escalation_timeout: timedelta | None = None
    max_revisions: int = 3
    revise: Reviser | None = None
    name: str = "approval"
    notify_retry: RetryPolicy | None = None

    def __post_init__(self) -> None:
        as_notifier(self.notify, what="ApprovalGate.notify")
        if self.escalate_to is not None:
            as_notifier(self.escalate_to, what="ApprovalGate.escalate_to")
            if self.timeout is None:
                raise WorkflowDefinitionError(
                    "ApprovalGate: escalate_to needs a timeout (escalation happens when the"
                    " reviewer does not answer in time)"
                )
        if self.max_revisions < 0:
            raise WorkflowDefinitionError("ApprovalGate.max_revisions must be >= 0")
        if self.revise is not None and not callable(self.revise):
            raise WorkflowDefinitionError(
                f"ApprovalGate.revise must be an async callable (ctx, draft, feedback) -> draft,"
                f" got {self.revise!r}"
            )

    async def request(
        self, ctx: Context, subject: str, draft: Any, *, name: str | None = None
    ) -> ApprovalOutcome:
        """Ask for approval of ``draft`` until a decision, an expiry or no revision left."""
        label = name or self.name
        previous_status = ctx.state.get("status")
        ctx.state.status = AgentStatus.WAITING_FOR_INPUT
        outcome = await self._rounds(ctx, label, subject, draft)
        ctx.state.status = previous_status
        return outcome

    async def _rounds(self, ctx: Context, label: str, subject: str, draft: Any) -> ApprovalOutcome:
        comments: list[ReviewComment] = []
        escalated = False
        revisions = 0
        round_no = 0
        while True:
            round_no += 1
            answer = await self._ask(ctx, label, subject, draft, round_no, escalated)
            if answer is None and not escalated and self.escalate_to is not None:
                comments.append(ReviewComment(round_no, "timeout"))
                escalated = True
                answer = await self._ask(ctx, label, subject, draft, round_no, escalated)
            if answer is None:
                comments.append(ReviewComment(round_no, "timeout", escalated=escalated))
                return self._outcome(ApprovalDecision.EXPIRED, draft, comments, escalated)
            decision, comment, reviewer = _read(answer)
            comments.append(ReviewComment(round_no, decision, comment, reviewer, escalated))
            if decision == "approve":
                return self._outcome(ApprovalDecision.APPROVED, draft, comments, escalated, answer)
            if decision == "reject":
                return self._outcome(ApprovalDecision.REJECTED, draft, comments, escalated, answer)
            if decision == "request_changes":
                if self.revise is None or revisions >= self.max_revisions:
                    return self._outcome(
                        ApprovalDecision.CHANGES_REQUESTED, draft, comments, escalated, answer
                    )
                revisions += 1
                draft = await ctx.run_in_child_context(
                    self.revise, draft, comment, name=f"{label}:revise{revisions}"
                )
            # an unreadable answer: ask again, with the same draft, in a new round

    def _outcome(
        self,
        decision: ApprovalDecision,
        draft: Any,
        comments: list[ReviewComment],
        escalated: bool,
        answer: dict[str, Any] | None = None,
    ) -> ApprovalOutcome:
        rounds = max((c.round for c in comments), default=0)
        return ApprovalOutcome(decision, draft, comments, rounds, escalated, answer)

    async def _ask(
        self, ctx: Context, label: str, subject: str, draft: Any, round_no: int, escalated: bool
    ) -> dict[str, Any] | None:
        """One question: a callback, a notification carrying its token, the answer.

        None when it timed out. Grouped in a child context so that a replay finds the whole
        exchange recorded as one unit.
        """
        target = self.escalate_to if escalated and self.escalate_to is not None else self.notify
        notifier = as_notifier(target)
        timeout = (self.escalation_timeout or self.timeout) if escalated else self.timeout
        kind = "approval_escalated" if escalated else "approval_requested"
        op_name = f"{label}:escalation{round_no}" if escalated else f"{label}:round{round_no}"

        async def exchange(child: Context) -> dict[str, Any] | None:
            callback = await child.create_callback(
                name=op_name, timeout=timeout, payload_type=ReviewAnswer
            )
            payload = json.dumps({"decision": "approve", "comment": "looks good"})
            notification = Notification(
                kind=kind,
                subject=subject,
                run_id=child.run_id,
                workflow=child.workflow.name,
                token=callback.token,
                body=draft,
                round=round_no,
                timeout_seconds=timeout.total_seconds() if timeout else None,
                respond=(
                    f"cadenza callback succeed {callback.token} --payload '{payload}'"
                    " (decision: approve, reject or request_changes)"
                ),
            )
            await send_notification(child, notifier, notification, retry=self.notify_retry)
            try:
                result = await callback.result()
            except CallbackTimedOut:
                return None
            except CallbackFailed as exc:  # failing an approval callback is saying no
                return {"decision": "reject", "comment": exc.message, "failed": exc.error_type}
            if isinstance(result, ReviewAnswer):
                answer: dict[str, Any] = result.model_dump(exclude_unset=True)
                return answer
            return result if isinstance(result, dict) else {"decision": result}

        answer: dict[str, Any] | None = await ctx.run_in_child_context(exchange, name=op_name)
        return answer


def _read(answer: dict[str, Any]) -> tuple[str, str, str | None]:
    """(decision, comment, reviewer) from a reviewer's payload; "unreadable" if unknown."""
    raw = answer.get("decision")
    if raw is None and isinstance(answer.get("approved"), bool):
        raw = "approve" if answer["approved"] else "reject"
    decision = _ANSWERS.get(str(raw).strip().lower(), "unreadable")
    comment = answer.get("comment") or answer.get("reason") or answer.get("feedback") or ""
    reviewer = answer.get("by") or answer.get("reviewer")
    return decision, str(comment), str(reviewer) if reviewer is not None else None
