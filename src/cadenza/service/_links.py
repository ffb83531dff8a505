"""Approval links: a reviewer answers an approval from a web page, with no shell and no key.

A link reads ``<base_url>/approve/cdzl1.<claims>.<signature>`` (the token is made and
verified by :class:`~cadenza.service._links_signer.ApprovalLinks`). It does not carry the
callback token: whoever holds it can answer *as that reviewer* through this page and do
nothing else.

A link is accepted only when all of these hold, and otherwise the page says which failed
and the run is left alone:

- the signature matches (not forged, not altered);
- it has not expired (it expires with its callback);
- the callback is still pending (a link answers once: the store completes a callback once);
- the reviewer is one the notification was addressed to: link notifiers record whom they
  sent links to as the result of their sending step, and that record is checked here.

Opening a link (GET) changes nothing, so mail scanners that fetch links are harmless; the
answer is a POST from the page. The completion's payload names the reviewer and the link
(``by``, ``via``, ``link``), and the run's history records an ``ActionRequested`` event
naming the reviewer and the link, as the audit of who decided.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from cadenza.errors import (
    CadenzaError,
    CallbackAlreadyCompleted,
    CallbackNotFound,
    CallbackTokenExpired,
    InvalidCallbackToken,
    InvalidInput,
    RunNotFound,
    RunStateError,
)
from cadenza.journal import OpStatus, OpType, parent_of
from cadenza.ports.run_store import CallbackStatus
from cadenza.service._audit import record_action
from cadenza.service._console_render import render
from cadenza.service._links_signer import ApprovalLinks, LinkClaims, normalise_reviewer

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine

__all__ = ["DECISIONS", "VIA", "LinkReview", "answer", "open_review", "router"]

#: What a link's answer may be; the ApprovalGate reads the same words.
DECISIONS = ("approve", "reject", "request_changes")
#: How the run's history names an answer given through a link.
VIA = "approval link"

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class LinkReview:
    """Everything the link page shows: the request, the run it belongs to, the reviewer."""

    claims: LinkClaims
    run_id: str
    workflow: str
    run_started: datetime
    subject: str
    body: Any
    kind: str
    round: int | None
    reviewers: tuple[str, ...]
    goal: str | None


async def open_review(engine: Engine, links: ApprovalLinks, link: str) -> LinkReview:
    """What ``link`` lets its reviewer decide, after every check; raises the error that
    says why not (InvalidCallbackToken, CallbackTokenExpired, CallbackAlreadyCompleted,
    RunStateError)."""
    claims = links.verify(link, now=engine.clock.now())
    try:
        callback = await engine.store.get_callback(claims.callback_id)
        run = await engine.store.get_run(claims.run_id)
    except (CallbackNotFound, RunNotFound):
        raise InvalidCallbackToken(
            "this approval link names a request this deployment does not have"
        ) from None
    if callback.run_id != claims.run_id or callback.op_id != claims.op_id:
        raise InvalidCallbackToken("this approval link is bound to another request")
    if callback.status != CallbackStatus.PENDING:
        raise CallbackAlreadyCompleted(_answered(callback.result, claims, callback.status))
    if run.status.terminal:
        raise RunStateError(
            f"the run this request belongs to has ended ({run.status.lower()}); nothing"
            " waits for an answer any more"
        )
    deadline = callback.deadline()
    if deadline is not None and engine.clock.now() >= deadline:
        raise CallbackTokenExpired(
            f"this request expired at {deadline:%Y-%m-%d %H:%M} UTC; the run has moved on"
        )
    sent = await _sent_notification(engine, claims)
    if not sent:
        # The sending step records whom it sent links to once it has sent them all: a
        # link opened in that instant (or one not sent by a link notifier) waits for it.
        raise RunStateError(
            "this request has not finished being sent yet; open the link again in a moment"
        )
    reviewers = tuple(normalise_reviewer(r) for r in sent.get("reviewers") or ())
    if claims.reviewer not in reviewers:
        raise InvalidCallbackToken(
            f"this link was made for {claims.reviewer}, who is not among the reviewers this"
            " request was sent to; use the link from your own message"
        )
    return LinkReview(
        claims=claims,
        run_id=run.run_id,
        workflow=run.workflow,
        run_started=run.created_at,
        subject=str(sent.get("subject") or ""),
        body=sent.get("body"),
        kind=str(sent.get("kind") or "approval_requested"),
        round=sent.get("round") if isinstance(sent.get("round"), int) else None,
        reviewers=reviewers,
        goal=(run.state.get("goal") or None) if isinstance(run.state, dict) else None,
    )


async def answer(
    engine: Engine, links: ApprovalLinks, link: str, decision: str, comment: str
) -> LinkReview:
    """Complete the link's callback with the reviewer's ``decision``; the same checks as
    :func:`open_review` first, and the store's conditional completion makes it once only."""
    if decision not in DECISIONS:
        raise InvalidInput(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    comment = comment.strip()
    if decision == "request_changes" and not comment:
        raise InvalidInput("say what should change: requesting changes needs a comment")
    review = await open_review(engine, links, link)
    claims = review.claims
    token = engine.tokens.issue(claims.callback_id, claims.run_id, claims.op_id, claims.expires_at)
    payload = {
        "decision": decision,
        "comment": comment,
        "by": claims.reviewer,
        "via": VIA,
        "link": claims.link_id,
    }
    try:
        await engine.succeed_callback(token, payload)
    except CallbackAlreadyCompleted:
        callback = await engine.store.get_callback(claims.callback_id)
        raise CallbackAlreadyCompleted(
            _answered(callback.result, claims, callback.status)
        ) from None
    await record_action(
        engine,
        claims.run_id,
        "callback.succeed",
        {"link": claims.link_id, "reviewer": claims.reviewer, "via": VIA},
        op_id=claims.op_id,
        decision=decision,
    )
    return review


async def _sent_notification(engine: Engine, claims: LinkClaims) -> dict[str, Any]:
    """What the link notifier recorded when it sent this request: the result of the
    sending step beside the callback (``notify`` in an ApprovalGate round, ``submit`` in
    ``wait_for_callback``). Empty when the request was not sent by a link notifier."""
    journal = await engine.store.load_journal(claims.run_id)
    parent = parent_of(claims.op_id)
    for op in journal:
        if (
            op.type == OpType.STEP
            and op.parent_id == parent
            and op.status == OpStatus.SUCCEEDED
            and op.result is not None
        ):
            try:
                value = await engine.codec.decode(op.result, run_id=claims.run_id)
            except CadenzaError:
                continue
            if isinstance(value, dict) and value.get("approval_link") is True:
                return value
    return {}


def _answered(result: str | None, claims: LinkClaims, status: CallbackStatus) -> str:
    """Why a link cannot answer a callback that has ended: used, or decided by another."""
    if status == CallbackStatus.TIMED_OUT:
        return "this request timed out before it was answered; the run has moved on"
    try:
        payload = json.loads(result) if result else None
    except ValueError:
        payload = None
    if isinstance(payload, dict) and payload.get("link") == claims.link_id:
        return (
            f"this link has been used: {claims.reviewer} answered"
            f" '{payload.get('decision')}'. A link answers once"
        )
    who = payload.get("by") if isinstance(payload, dict) else None
    return (
        f"this request has already been answered{f' by {who}' if who else ''}; nothing"
        " waits for an answer any more"
    )


# --- the link pages -----------------------------------------------------------------------


def links_of(request: Request) -> ApprovalLinks:
    """The links of the app's deployment, pointing where its settings say."""
    engine = request.app.state.client.engine
    settings = getattr(request.app.state, "settings", None)
    base_url = getattr(settings, "base_url", None) or str(request.base_url)
    return ApprovalLinks.for_engine(engine, base_url=base_url)


def _refusal(request: Request, exc: CadenzaError) -> HTMLResponse:
    """The page for a link that cannot answer, with the status that says why."""
    if isinstance(exc, CallbackTokenExpired):
        status, title = 410, "This link has expired"
    elif isinstance(exc, CallbackAlreadyCompleted):
        used = "has been used" in exc.message
        status = 410 if used else 409
        title = "This link has been used" if used else "Already decided"
    elif isinstance(exc, RunStateError):
        status, title = 409, "This request cannot be answered now"
    elif isinstance(exc, InvalidInput):
        status, title = 400, "The answer was not accepted"
    else:
        status, title = 403, "This link is not valid"
    return render(
        request,
        "link_refused.html",
        {"title": title, "message": exc.message, "status": status},
        status_code=status,
    )


@router.get("/{link}", response_class=HTMLResponse)
async def review_page(request: Request, link: str) -> HTMLResponse:
    engine = request.app.state.client.engine
    try:
        review = await open_review(engine, links_of(request), link)
    except CadenzaError as exc:
        return _refusal(request, exc)
    return render(request, "link.html", {"review": review, "link": link})


@router.post("/{link}", response_class=HTMLResponse)
async def review_answer(
    request: Request,
    link: str,
    decision: str = Form(...),
    comment: str = Form(""),
) -> HTMLResponse:
    engine = request.app.state.client.engine
    try:
        review = await answer(engine, links_of(request), link, decision, comment)
    except CadenzaError as exc:
        return _refusal(request, exc)
    return render(
        request,
        "link_done.html",
        {"review": review, "decision": decision, "comment": comment.strip()},
    )
