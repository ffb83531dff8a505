"""The e-mail notifier: one message per reviewer, over SMTP, each with its own link.

Sent with ``aiosmtplib`` (the ``service`` extra). A message is plain text with an HTML
alternative; the ``Message-ID`` is derived from the sending step's idempotency key and the
reviewer, so a mail server or client can drop the duplicate that a crash between sending
and checkpointing may cause.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate

from cadenza.errors import InvalidInput, MissingDependency
from cadenza.patterns._notify import Notification, NotificationFailed
from cadenza.service._links_signer import ApprovalLinks
from cadenza.service._notify_links import LinkNotifier, ReviewerLink, message_text

__all__ = ["EmailNotifier"]


class EmailNotifier(LinkNotifier):
    """E-mail each address in ``to`` its own approval link.

    >>> EmailNotifier(to=["editor@example.com"], sender="cadenza@example.com",
    ...               host="smtp.example.com", port=587, start_tls=True,
    ...               username="cadenza", password=os.environ["SMTP_PASSWORD"])
    """

    def __init__(
        self,
        *,
        to: Sequence[str],
        host: str = "localhost",
        port: int = 25,
        sender: str = "cadenza@localhost",
        username: str | None = None,
        password: str | None = None,
        use_tls: bool = False,  # TLS from the first byte (port 465)
        start_tls: bool | None = None,  # upgrade with STARTTLS; None: when the server offers it
        timeout: float = 30.0,
        links: ApprovalLinks | None = None,
    ) -> None:
        try:
            import aiosmtplib  # noqa: F401 - checked here so a missing extra fails at definition
        except ImportError as exc:
            raise MissingDependency("the e-mail notifier", "service") from exc
        if any("@" not in address for address in to):
            raise InvalidInput(f"EmailNotifier: every 'to' must be an e-mail address, got {to!r}")
        super().__init__(reviewers=to, links=links)
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.use_tls = use_tls
        self.start_tls = start_tls
        self.timeout = timeout

    def __repr__(self) -> str:  # never the password
        return f"<EmailNotifier to={list(self.reviewers)!r} via {self.host}:{self.port}>"

    def message(self, notification: Notification, link: ReviewerLink) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = link.reviewer
        message["Subject"] = notification.subject.replace("\n", " ")[:200]
        message["Date"] = formatdate(localtime=False)
        seed = f"{notification.idempotency_key}:{link.reviewer}".encode()
        domain = self.sender.rpartition("@")[2] or "localhost"
        message["Message-ID"] = f"<{hashlib.sha256(seed).hexdigest()[:32]}@{domain}>"
        text = message_text(notification, link)
        message.set_content(text)
        url = html.escape(link.url, quote=True)
        paragraphs = "".join(
            f"<p>{html.escape(line)}</p>" for line in text.splitlines() if line and line != link.url
        )
        message.add_alternative(
            f'<html><body>{paragraphs}<p><a href="{url}">Review and decide</a></p></body></html>',
            subtype="html",
        )
        return message

    async def deliver(self, notification: Notification, links: list[ReviewerLink]) -> None:
        import aiosmtplib

        if not links:  # nothing to answer: one plain message to everyone
            message = EmailMessage()
            message["From"] = self.sender
            message["To"] = ", ".join(self.reviewers)
            message["Subject"] = notification.subject.replace("\n", " ")[:200]
            message.set_content(message_text(notification, None))
            messages = [message]
        else:
            messages = [self.message(notification, link) for link in links]
        try:
            for message in messages:
                await aiosmtplib.send(
                    message,
                    hostname=self.host,
                    port=self.port,
                    username=self.username,
                    password=self.password,
                    use_tls=self.use_tls,
                    start_tls=self.start_tls,
                    timeout=self.timeout,
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refusal.code for refusal in exc.recipients]
            refused = ", ".join(
                f"{refusal.recipient} ({refusal.code} {refusal.message})"
                for refusal in exc.recipients
            )
            raise NotificationFailed(
                f"SMTP server {self.host}:{self.port} refused the recipients {refused}; check"
                " the addresses in EmailNotifier(to=…)",
                retryable=all(400 <= code < 500 for code in codes),  # 4xx: try again later
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise NotificationFailed(
                f"SMTP server {self.host}:{self.port} refused the message: {exc.code}"
                f" {exc.message}",
                retryable=exc.code >= 400 and exc.code < 500,
            ) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise NotificationFailed(
                f"SMTP server {self.host}:{self.port} unreachable: {exc}; check host and port",
                retryable=True,
            ) from exc
