"""Notifiers that carry approval links over the network (the base class,
:class:`~cadenza.patterns._link_notifier.LinkNotifier`, and the file notifier need no
extra and live with the other notifiers).

Adapters: :class:`EmailNotifier` (SMTP, in ``_notify_email``), :class:`LinkWebhookNotifier`
(a JSON POST with the links) and :class:`SlackNotifier` (a Slack-compatible incoming
webhook). In ``wait_for_callback`` use :func:`link_submitter`.

    gate = ApprovalGate(notify=EmailNotifier(to=["editor@example.com"], host="smtp.example.com"))
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from cadenza.errors import MissingDependency
from cadenza.operations import StepContext
from cadenza.patterns._link_notifier import LinkNotifier, ReviewerLink, message_text
from cadenza.patterns._notify import Notification, NotificationFailed
from cadenza.security.links import ApprovalLinks

if TYPE_CHECKING:
    from cadenza.context import Context

__all__ = [
    "LinkNotifier",
    "LinkWebhookNotifier",
    "ReviewerLink",
    "SlackNotifier",
    "link_submitter",
    "message_text",
]


def _plain(value: Any) -> Any:
    return to_jsonable_python(value, fallback=str)


async def _post_json(
    url: str,
    body: dict[str, Any],
    *,
    headers: Mapping[str, str],
    timeout: float,
    transport: Any,
    what: str,
) -> None:
    import httpx

    try:
        async with httpx.AsyncClient(timeout=timeout, transport=transport) as client:
            response = await client.post(url, content=json.dumps(body), headers=dict(headers))
    except httpx.HTTPError as exc:
        raise NotificationFailed(f"{what} {url} unreachable: {exc}", retryable=True) from exc
    if response.status_code >= 400:
        raise NotificationFailed(
            f"{what} {url} answered {response.status_code}: {response.text[:200]}",
            retryable=response.status_code >= 500 or response.status_code == 429,
        )


def _need_httpx(what: str) -> None:
    try:
        import httpx  # noqa: F401 - checked here so a missing extra fails at definition
    except ImportError as exc:
        raise MissingDependency(what, "service") from exc


class LinkWebhookNotifier(LinkNotifier):
    """POST each request as JSON with one link per reviewer (never the callback token).

    The body: ``kind``, ``subject``, ``run_id``, ``workflow``, ``round``,
    ``timeout_seconds``, ``links`` (``[{"reviewer", "url"}]``) and ``text``, a message a
    person can read. ``Idempotency-Key`` carries the sending step's key.
    """

    def __init__(
        self,
        url: str,
        *,
        reviewers: Sequence[str],
        links: ApprovalLinks | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        transport: Any = None,  # an httpx transport, for tests
    ) -> None:
        _need_httpx("the webhook notifier")
        super().__init__(reviewers=reviewers, links=links)
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.transport = transport

    async def deliver(self, notification: Notification, links: list[ReviewerLink]) -> None:
        body: dict[str, Any] = {
            "kind": notification.kind,
            "subject": notification.subject,
            "run_id": notification.run_id,
            "workflow": notification.workflow,
            "round": notification.round,
            "timeout_seconds": notification.timeout_seconds,
            "links": [{"reviewer": link.reviewer, "url": link.url} for link in links],
            "text": message_text(notification, links[0] if len(links) == 1 else None)
            if links
            else message_text(notification, None),
        }
        headers = {"content-type": "application/json", **self.headers}
        if notification.idempotency_key:
            headers["idempotency-key"] = notification.idempotency_key
        await _post_json(
            self.url,
            body,
            headers=headers,
            timeout=self.timeout,
            transport=self.transport,
            what="webhook",
        )


class SlackNotifier(LinkNotifier):
    """Post to a Slack (or Mattermost, Rocket.Chat…) incoming webhook: a message with the
    subject and one "Review" link per reviewer, in ``text`` and in Block Kit blocks."""

    def __init__(
        self,
        webhook_url: str,
        *,
        reviewers: Sequence[str],
        links: ApprovalLinks | None = None,
        timeout: float = 10.0,
        transport: Any = None,
    ) -> None:
        _need_httpx("the Slack notifier")
        super().__init__(reviewers=reviewers, links=links)
        self.webhook_url = webhook_url
        self.timeout = timeout
        self.transport = transport

    async def deliver(self, notification: Notification, links: list[ReviewerLink]) -> None:
        title = f"{_slack_escape(notification.subject)}"
        where = (
            f"run `{_slack_escape(notification.run_id)}` ({_slack_escape(notification.workflow)})"
        )
        lines = [f"*{title}*", f"{notification.kind.replace('_', ' ')} in {where}"]
        lines += [f"<{link.url}|Review as {_slack_escape(link.reviewer)}>" for link in links]
        text = "\n".join(lines)
        body = {
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        }
        await _post_json(
            self.webhook_url,
            body,
            headers={"content-type": "application/json"},
            timeout=self.timeout,
            transport=self.transport,
            what="Slack webhook",
        )


def _slack_escape(text: str) -> str:
    """Slack's three control characters, so a subject cannot forge a link or a mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link_submitter(
    ctx: Context,
    notifier: LinkNotifier,
    *,
    subject: str,
    body: Any = None,
    kind: str = "approval_requested",
) -> Callable[[StepContext, str], Awaitable[dict[str, Any] | None]]:
    """A submitter for ``ctx.wait_for_callback`` that sends the reviewers their links.

    >>> answer = await ctx.wait_for_callback(
    ...     link_submitter(ctx, EmailNotifier(to=["ops@example.com"], host="smtp"),
    ...                    subject="Refund 1,200 EUR?", body=summary),
    ...     name="refund-approval", timeout=timedelta(hours=8))
    """
    workflow = ctx.workflow.name

    async def submit(step: StepContext, token: str) -> dict[str, Any] | None:
        notification = Notification(
            kind=kind,
            subject=subject,
            run_id=step.run_id,
            workflow=workflow,
            token=token,
            body=body,
            idempotency_key=step.idempotency_key,
        )
        return await notifier.send(notification)

    return submit
