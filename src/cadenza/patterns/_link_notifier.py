"""Notifiers that carry approval links: each reviewer gets a link of their own.

A :class:`LinkNotifier` turns the callback token of a notification into one signed link per
reviewer (:class:`~cadenza.security.links.ApprovalLinks`) and delivers them; the token
itself never leaves the run. What it returns is recorded as the sending step's result, and
is what the link page reads: whom links were sent to (a link for anyone else is refused),
the subject, the draft and the round. Links are signed without any web framework; the
page that answers them is served by ``cadenza serve``.

:class:`LinkFileNotifier` writes each request, with its links, as a JSON line to
``$CADENZA_HOME/notifications.log`` (what the demo reviewer reads); e-mail, webhook and
Slack adapters live in ``cadenza.service``.
"""

from __future__ import annotations

import asyncio
import json
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_core import to_jsonable_python

from cadenza.errors import InvalidInput
from cadenza.patterns._notify import FileNotifier, Notification, Notifier
from cadenza.security.links import ApprovalLinks, normalise_reviewer

__all__ = ["LinkFileNotifier", "LinkNotifier", "ReviewerLink", "message_text"]


@dataclass(frozen=True)
class ReviewerLink:
    reviewer: str
    url: str


class LinkNotifier(Notifier):
    """A notifier that sends each of ``reviewers`` their own approval link.

    ``links`` signs them; without it, the secret of the deployment whose worker sends them
    and ``CADENZA_SERVICE_BASE_URL`` (a worker and the service that serves the links share
    the secret).
    """

    def __init__(self, *, reviewers: Sequence[str], links: ApprovalLinks | None = None) -> None:
        cleaned = [normalise_reviewer(r) for r in reviewers]
        if not cleaned or not all(cleaned):
            raise InvalidInput(
                f"{type(self).__name__} needs reviewers (e-mail addresses or names), got"
                f" {list(reviewers)!r}"
            )
        self.reviewers = tuple(dict.fromkeys(cleaned))
        self.links = links

    def links_for(self, notification: Notification) -> list[ReviewerLink]:
        """One fresh link per reviewer for the callback the notification waits on, signed
        by ``links`` if given, else by the deployment that runs the sending step, else by
        this machine's (``CADENZA_SECRET`` / ``CADENZA_HOME``)."""
        if notification.token is None:
            return []
        links = self.links or notification.links or ApprovalLinks.from_environment()
        return [
            ReviewerLink(r, links.url_for(notification.token, reviewer=r)) for r in self.reviewers
        ]

    async def send(self, notification: Notification) -> dict[str, Any] | None:
        links = self.links_for(notification)
        await self.deliver(notification, links)
        if not links:
            return None
        return {
            "approval_link": True,
            "reviewers": list(self.reviewers),
            "kind": notification.kind,
            "subject": notification.subject,
            "round": notification.round,
            "body": to_jsonable_python(notification.body, fallback=str),
        }

    @abstractmethod
    async def deliver(self, notification: Notification, links: list[ReviewerLink]) -> None:
        """Deliver ``notification`` with ``links`` (empty when nothing waits for an answer)."""


def message_text(notification: Notification, link: ReviewerLink | None) -> str:
    """The plain-text message a reviewer reads (the draft itself is on the link page)."""
    lines = [notification.subject, ""]
    if link is not None:
        what = "escalated to you" if notification.kind == "approval_escalated" else "waits for you"
        lines.append(f"A decision {what} in run {notification.run_id} ({notification.workflow}).")
        lines.append("Read it and approve, reject or request changes here:")
        lines.append("")
        lines.append(link.url)
        lines.append("")
        lines.append(f"This link is for {link.reviewer} alone and answers once.")
        if notification.timeout_seconds:
            hours = notification.timeout_seconds / 3600
            lines.append(f"The request expires in {hours:g} hours.")
    else:
        lines.append(f"{notification.kind} in run {notification.run_id} ({notification.workflow}).")
        if notification.body is not None:
            lines.append("")
            body = notification.body
            if not isinstance(body, str):
                body = json.dumps(to_jsonable_python(body, fallback=str), indent=2)
            lines.append(body)
    return "\n".join(lines) + "\n"


class LinkFileNotifier(LinkNotifier):
    """Append each request with its reviewers' links as one JSON line, by default to
    ``$CADENZA_HOME/notifications.log``: the notification a reviewer on this machine reads
    (``cadenza serve`` answers the links)."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        reviewers: Sequence[str],
        links: ApprovalLinks | None = None,
    ) -> None:
        super().__init__(reviewers=reviewers, links=links)
        self.file = FileNotifier(path)

    async def deliver(self, notification: Notification, links: list[ReviewerLink]) -> None:
        line = {
            # The token stays too: this file is read on a machine that holds the store.
            **notification.to_dict(),
            "links": [{"reviewer": link.reviewer, "url": link.url} for link in links],
            "text": message_text(notification, links[0] if len(links) == 1 else None),
        }
        text = json.dumps(line, default=str, ensure_ascii=False)
        await asyncio.to_thread(FileNotifier._append, self.file.target(), text)
