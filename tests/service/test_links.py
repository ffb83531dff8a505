"""Approval links: the signer refuses forged, altered, expired and cross-purpose links; the
link page shows the draft safely, answers once as its reviewer, audits the answer, and
refuses a used, expired, altered or other-reviewer link without touching the run."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from cadenza import Context, RunStatus, workflow
from cadenza.client import Client
from cadenza.errors import CallbackTokenExpired, ConfigurationError, InvalidCallbackToken
from cadenza.patterns.approval import ApprovalDecision, ApprovalGate, ApprovalOutcome
from cadenza.security.tokens import CallbackTokens
from cadenza.service import ServiceSettings, create_app
from cadenza.service._links_signer import ApprovalLinks, LinkClaims
from cadenza.service._notify_links import LinkWebhookNotifier, link_submitter
from cadenza.testing import TestEnvironment

SECRET = b"test-secret-0123456789abcdef"  # what TestEnvironment's engine signs with
BASE = "http://testserver"
LINKS = ApprovalLinks.from_secret(SECRET, base_url=BASE)
SENT: list[dict[str, Any]] = []

DRAFT = """# Quarterly report

Revenue is **up** 12 %.

<script>alert("owned")</script>

[details](javascript:alert(1)) and <img src=x onerror=alert(2)>
"""


def _hook(request: httpx.Request) -> httpx.Response:
    SENT.append(json.loads(request.content))
    return httpx.Response(200, text="ok")


NOTIFY = LinkWebhookNotifier(
    "http://hooks.test/approvals",
    reviewers=["Editor@Example.com", "Second Reader"],
    links=LINKS,
    transport=httpx.MockTransport(_hook),
)


async def _revise(ctx: Context, draft: str, feedback: str) -> str:
    return f"{draft}\n\nRevised after: {feedback}"


GATE = ApprovalGate(notify=NOTIFY, timeout=timedelta(hours=2), max_revisions=1, revise=_revise)


@workflow(name="t-link-approval")
async def publish(ctx: Context, draft: str) -> ApprovalOutcome:
    ctx.state.goal = "publish the quarterly report"
    return await GATE.request(ctx, "Quarterly report", draft)


@workflow(name="t-link-callback")
async def refund(ctx: Context, amount: int) -> dict[str, Any]:
    answer: dict[str, Any] = await ctx.wait_for_callback(
        link_submitter(ctx, NOTIFY, subject=f"Refund {amount} EUR?", body={"amount": amount}),
        name="refund-approval",
        timeout=timedelta(hours=1),
    )
    return answer


async def _quietly(notification: Any) -> None:
    pass


PLAIN_GATE = ApprovalGate(notify=_quietly)


@workflow(name="t-link-plain")
async def plain(ctx: Context, draft: str) -> ApprovalOutcome:
    return await PLAIN_GATE.request(ctx, "Plain", draft)


@pytest.fixture(autouse=True)
def _clean() -> None:
    SENT.clear()


@pytest.fixture
async def web(fake_env: TestEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    client = Client(fake_env.engine)
    app = create_app(client, settings=ServiceSettings(base_url=BASE, rate_limit=None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield http
    await client.close()


def _link(reviewer: str, index: int = -1) -> str:
    [url] = [entry["url"] for entry in SENT[index]["links"] if entry["reviewer"] == reviewer]
    assert url.startswith(f"{BASE}/approve/cdzl1.")
    return url.removeprefix(BASE)


# --- the signer ---------------------------------------------------------------------------


def _token(expires: datetime) -> str:
    return CallbackTokens(SECRET).issue("cb-1", "r-1", "2.1", expires)


def test_a_link_verifies_with_its_claims() -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    link = LINKS.issue(_token(expires), reviewer="  Ada@Example.COM ")
    claims = LINKS.verify(link, now=datetime(2029, 1, 1, tzinfo=UTC))
    assert (claims.callback_id, claims.run_id, claims.op_id) == ("cb-1", "r-1", "2.1")
    assert claims.reviewer == "ada@example.com" and claims.expires_at == expires
    # each link is its own: two links for one reviewer differ in their link id
    assert (
        LINKS.verify(
            LINKS.issue(_token(expires), reviewer="ada@example.com"), now=expires - timedelta(1)
        ).link_id
        != claims.link_id
    )


def test_forged_altered_and_expired_links_are_refused() -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    before = expires - timedelta(days=1)
    link = LINKS.issue(_token(expires), reviewer="ada@example.com")
    prefix, body, signature = link.split(".")
    # forged: signed under another deployment's secret
    other = ApprovalLinks.from_secret(b"another-secret-0123456789", base_url=BASE)
    with pytest.raises(InvalidCallbackToken, match="altered"):
        LINKS.verify(other.sign(LINKS.verify(link, now=before)), now=before)
    # altered: another reviewer written into the claims, the signature kept
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["v"] = "mallory@example.com"
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidCallbackToken, match="altered"):
        LINKS.verify(f"{prefix}.{forged_body}.{signature}", now=before)
    # altered: a signature changed by one character
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(InvalidCallbackToken, match="altered"):
        LINKS.verify(f"{prefix}.{body}.{flipped}", now=before)
    # cut in two by a mail client, or not a link at all
    for broken in (link[:40], "hello", f"{prefix}.{body}", "ünïcode.a.b"):
        with pytest.raises(InvalidCallbackToken):
            LINKS.verify(broken, now=before)
    # expired with its callback
    with pytest.raises(CallbackTokenExpired, match="expired at 2030-01-01 00:00"):
        LINKS.verify(link, now=expires)


def test_links_and_callback_tokens_do_not_stand_in_for_each_other() -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    before = expires - timedelta(days=1)
    tokens = CallbackTokens(SECRET)
    token = _token(expires)
    # a callback token dressed as a link, and a link dressed as a token
    _, token_body, token_signature = token.split(".")
    with pytest.raises(InvalidCallbackToken):
        LINKS.verify(f"cdzl1.{token_body}.{token_signature}", now=before)
    link = LINKS.issue(token, reviewer="ada@example.com")
    _, link_body, link_signature = link.split(".")
    with pytest.raises(InvalidCallbackToken):
        tokens.verify(f"cdz1.{link_body}.{link_signature}", now=before)
    # links for a token of another deployment are refused when issued, not when clicked
    with pytest.raises(InvalidCallbackToken):
        LINKS.issue(
            CallbackTokens(b"another-secret-0123456789").issue("c", "r", "1", expires),
            reviewer="ada@example.com",
        )
    with pytest.raises(ConfigurationError):
        ApprovalLinks(b"short", base_url=BASE)


def test_claims_round_trip_through_sign() -> None:
    claims = LinkClaims("cb", "run", "3.1", "bob", datetime(2031, 5, 1, tzinfo=UTC), "id-1")
    assert LINKS.verify(LINKS.sign(claims), now=datetime(2031, 1, 1, tzinfo=UTC)) == claims


# --- the page -----------------------------------------------------------------------------


async def test_the_page_shows_the_draft_safely_and_approving_resumes_the_run(
    fake_env: TestEnvironment, web: httpx.AsyncClient
) -> None:
    run = await fake_env.run(publish, DRAFT)
    assert run.status == RunStatus.SUSPENDED
    [sent] = SENT
    assert sent["subject"] == "Quarterly report" and "token" not in json.dumps(sent)
    assert [entry["reviewer"] for entry in sent["links"]] == ["editor@example.com", "Second Reader"]
    link = _link("editor@example.com")

    page = await web.get(link)
    assert page.status_code == 200
    html = page.text
    assert "<h1>Quarterly report</h1>" in html and "<strong>up</strong>" in html
    assert "&lt;script&gt;" in html and '<script>alert("owned")' not in html
    assert 'href="javascript:' not in html and "<img src=x" not in html
    assert run.run_id in html and "t-link-approval" in html
    assert "publish the quarterly report" in html and "editor@example.com" in html
    assert page.headers["referrer-policy"] == "no-referrer"  # the link never leaks onwards
    # opening the page changes nothing (mail scanners fetch links)
    assert (await fake_env.engine.store.get_run(run.run_id)).status == RunStatus.SUSPENDED

    done = await web.post(link, data={"decision": "approve", "comment": "Ship it"})
    assert done.status_code == 200 and "answer recorded" in done.text.lower()
    run = await fake_env.resume(run)
    outcome = await fake_env.result(run, ApprovalOutcome)
    assert outcome.decision == ApprovalDecision.APPROVED
    assert [(c.decision, c.comment, c.reviewer) for c in outcome.comments] == [
        ("approve", "Ship it", "editor@example.com")
    ]
    # the audit: who answered, through which link
    history = await fake_env.engine.store.history(run.run_id)
    [audit] = [e for e in history if e.details.get("action") == "callback.succeed"]
    assert audit.details["by"]["reviewer"] == "editor@example.com"
    assert audit.details["by"]["via"] == "approval link" and audit.details["decision"] == "approve"

    # used: the same link again, and the other reviewer's link after the decision
    again = await web.post(link, data={"decision": "reject", "comment": ""})
    assert again.status_code == 410 and "has been used" in again.text
    assert (await web.get(link)).status_code == 410
    other = await web.get(_link("Second Reader"))
    assert other.status_code == 409 and "editor@example.com" in other.text
    assert (await fake_env.engine.store.get_run(run.run_id)).status == RunStatus.SUCCEEDED


async def test_request_changes_needs_a_comment_then_sends_a_new_link(
    fake_env: TestEnvironment, web: httpx.AsyncClient
) -> None:
    run = await fake_env.run(publish, "first draft")
    link = _link("Second Reader")
    empty = await web.post(link, data={"decision": "request_changes", "comment": "  "})
    assert empty.status_code == 400 and "needs a comment" in empty.text
    odd = await web.post(link, data={"decision": "publish-anyway"})
    assert odd.status_code == 400
    assert (await fake_env.engine.store.get_run(run.run_id)).status == RunStatus.SUSPENDED

    asked = await web.post(link, data={"decision": "request_changes", "comment": "Add numbers"})
    assert asked.status_code == 200
    run = await fake_env.resume(run)
    assert run.status == RunStatus.SUSPENDED and len(SENT) == 2  # round 2, new links
    assert (await web.get(link)).status_code == 410  # the round-1 link is spent
    second = await web.get(_link("Second Reader"))
    assert second.status_code == 200 and "Revised after: Add numbers" in second.text
    await web.post(_link("Second Reader"), data={"decision": "reject", "comment": "no"})
    outcome = await fake_env.result(await fake_env.resume(run), ApprovalOutcome)
    assert outcome.decision == ApprovalDecision.REJECTED and outcome.rounds == 2


async def test_altered_other_reviewer_and_expired_links_leave_the_run_alone(
    fake_env: TestEnvironment, web: httpx.AsyncClient
) -> None:
    run = await fake_env.run(publish, "draft")
    link = _link("editor@example.com")
    prefix, body, signature = link.rsplit("/", 1)[1].split(".")

    # altered: the reviewer changed in the claims
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["v"] = "Second Reader"
    altered_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    altered = await web.post(
        f"/approve/{prefix}.{altered_body}.{signature}", data={"decision": "approve"}
    )
    assert altered.status_code == 403 and "altered" in altered.text

    # other reviewer: a genuine signature (someone holding the secret), a reviewer the
    # request was never sent to
    token = (await fake_env.engine.pending_callbacks(run.run_id))[0].token
    assert token is not None
    stranger = LINKS.issue(token, reviewer="mallory@example.com")
    refused = await web.post(f"/approve/{stranger}", data={"decision": "approve"})
    assert refused.status_code == 403 and "not among the reviewers" in refused.text
    assert (await web.get(f"/approve/{stranger}")).status_code == 403

    # expired: the callback's two hours pass
    await fake_env.advance(timedelta(hours=2, seconds=1))
    late = await web.post(link, data={"decision": "approve"})
    assert late.status_code == 410 and "expired" in late.text

    assert (await fake_env.engine.store.get_run(run.run_id)).status == RunStatus.SUSPENDED
    history = await fake_env.engine.store.history(run.run_id)
    assert not [e for e in history if e.details.get("action") == "callback.succeed"]
    outcome = await fake_env.result(await fake_env.resume(run), ApprovalOutcome)
    assert outcome.decision == ApprovalDecision.EXPIRED


async def test_wait_for_callback_with_a_link_submitter(
    fake_env: TestEnvironment, web: httpx.AsyncClient
) -> None:
    run = await fake_env.run(refund, 1200)
    [sent] = SENT
    assert sent["subject"] == "Refund 1200 EUR?" and sent["workflow"] == "t-link-callback"
    page = await web.get(_link("Second Reader"))
    assert page.status_code == 200 and "1200" in page.text
    await web.post(_link("Second Reader"), data={"decision": "approve", "comment": "fine"})
    result = await fake_env.result(await fake_env.resume(run))
    assert result["decision"] == "approve" and result["by"] == "Second Reader"
    assert result["via"] == "approval link"


async def test_a_link_to_an_unknown_deployment_or_ended_run(
    fake_env: TestEnvironment, web: httpx.AsyncClient
) -> None:
    run = await fake_env.run(publish, "draft")
    link = _link("editor@example.com")
    await fake_env.engine.cancel(run.run_id)
    ended = await web.get(link)
    assert ended.status_code in (409, 410)
    expires = fake_env.engine.clock.now() + timedelta(days=1)
    ghost = LINKS.issue(CallbackTokens(SECRET).issue("nope", "r-x", "1", expires), reviewer="a")
    missing = await web.get(f"/approve/{ghost}")
    assert missing.status_code == 403 and "does not have" in missing.text


async def test_a_request_not_sent_by_a_link_notifier_takes_no_link(
    fake_env: TestEnvironment, web: httpx.AsyncClient
) -> None:
    run = await fake_env.run(plain, "draft")
    token = await fake_env.token(run)
    link = LINKS.issue(token, reviewer="ada@example.com")  # genuine, but nobody was sent it
    page = await web.post(f"/approve/{link}", data={"decision": "approve"})
    assert page.status_code == 409 and "not finished being sent" in page.text
    assert (await fake_env.engine.store.get_run(run.run_id)).status == RunStatus.SUSPENDED
