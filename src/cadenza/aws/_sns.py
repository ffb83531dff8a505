"""Approval requests and escalations on an Amazon SNS topic, each with its approval link.

One message per reviewer, carrying that reviewer's own signed link and the message
attributes ``reviewer``, ``kind`` and ``run_id``, so a subscription's filter policy routes
each reviewer's link to them alone (``{"reviewer": ["editor@example.com"]}``). A
notification with nothing to answer (a failed compensation) is one message without a
link. On a FIFO topic the sending step's idempotency key becomes the deduplication id,
so a step retried after SNS took the message does not notify twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

from cadenza.aws._clients import THROTTLED, LazyClient, error_code
from cadenza.errors import ConfigurationError
from cadenza.patterns._notify import Notification, NotificationFailed
from cadenza.service._links_signer import ApprovalLinks
from cadenza.service._notify_links import LinkNotifier, ReviewerLink, message_text

_SUBJECT_LIMIT = 100  # SNS refuses longer e-mail subjects


class SnsNotifier(LinkNotifier):
    """Publish notifications to the SNS topic ``topic_arn``.

    >>> gate = ApprovalGate(notify=SnsNotifier(topic_arn, reviewers=["editor@example.com"]))
    """

    def __init__(
        self,
        topic_arn: str,
        *,
        reviewers: Sequence[str],
        links: ApprovalLinks | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        super().__init__(reviewers=reviewers, links=links)
        if not topic_arn.startswith("arn:"):
            raise ConfigurationError(f"SnsNotifier needs a topic ARN, got {topic_arn!r}")
        self.topic_arn = topic_arn
        self._client = LazyClient("sns", client=client, region=region, endpoint_url=endpoint_url)

    @property
    def client(self) -> Any:
        return self._client.get()

    async def deliver(self, notification: Notification, links: list[ReviewerLink]) -> None:
        if not links:
            await self._publish(notification, None)
        for link in links:
            await self._publish(notification, link)

    async def _publish(self, notification: Notification, link: ReviewerLink | None) -> None:
        attributes = {
            "kind": notification.kind,
            "run_id": notification.run_id,
            **({"reviewer": link.reviewer} if link is not None else {}),
        }
        params: dict[str, Any] = {
            "TopicArn": self.topic_arn,
            "Subject": _subject(notification.subject),
            "Message": message_text(notification, link),
            "MessageAttributes": {
                k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()
            },
        }
        if self.topic_arn.endswith(".fifo"):
            who = link.reviewer if link is not None else ""
            key = f"{notification.idempotency_key}|{who}"
            params["MessageGroupId"] = notification.run_id
            params["MessageDeduplicationId"] = hashlib.sha256(key.encode()).hexdigest()
        try:
            await asyncio.to_thread(self.client.publish, **params)
        except Exception as exc:
            code = error_code(exc)
            raise NotificationFailed(
                f"SNS topic {self.topic_arn} did not take the notification ({code or exc});"
                + (
                    " it is sent again"
                    if code in THROTTLED or not code
                    else " check that the topic exists and the function may sns:Publish to it"
                ),
                retryable=code in THROTTLED or not code,
            ) from exc


def _subject(text: str) -> str:
    # SNS subjects: printable ASCII, no line breaks, at most 100 characters.
    clean = "".join(c if 32 <= ord(c) < 127 else " " for c in text).strip() or "cadenza"
    return clean[:_SUBJECT_LIMIT]
