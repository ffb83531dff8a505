"""The notifiers that carry approval links, against real servers on loopback: an SMTP
server (aiosmtpd) for e-mail, an HTTP server for the webhook and Slack-compatible ones."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cadenza.errors import InvalidInput
from cadenza.patterns._notify import Notification, NotificationFailed
from cadenza.security.tokens import CallbackTokens
from cadenza.service._links_signer import ApprovalLinks
from cadenza.service._notify_email import EmailNotifier
from cadenza.service._notify_links import LinkWebhookNotifier, SlackNotifier

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")

SECRET = b"notifier-secret-0123456789"
LINKS = ApprovalLinks.from_secret(SECRET, base_url="https://cadenza.example.com")
EXPIRES = datetime(2031, 1, 1, tzinfo=UTC)
NOW = EXPIRES - timedelta(days=1)


def _notification(**changes: Any) -> Notification:
    values: dict[str, Any] = {
        "kind": "approval_requested",
        "subject": "Report: <b>bike share</b>",
        "run_id": "r-42",
        "workflow": "research-report",
        "token": CallbackTokens(SECRET).issue("cb-9", "r-42", "7.1", EXPIRES),
        "body": "# Draft\n\nAll good.",
        "round": 1,
        "timeout_seconds": 7200.0,
        "idempotency_key": "r-42/7.2",
    }
    values.update(changes)
    return Notification(**values)


# --- e-mail -------------------------------------------------------------------------------


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.refuse: str | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refuse and address == self.refuse:
            return "550 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted"


@pytest.fixture
def smtp() -> Iterator[tuple[_Mailbox, int]]:
    mailbox = _Mailbox()
    with socket.socket() as probe:  # a free port on loopback
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = aiosmtpd_controller.Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


async def test_email_sends_each_reviewer_their_own_link(smtp: tuple[_Mailbox, int]) -> None:
    mailbox, port = smtp
    notifier = EmailNotifier(
        to=["Ed@Example.com", "ann@example.com"],
        host="127.0.0.1",
        port=port,
        sender="cadenza@example.com",
        start_tls=False,
        links=LINKS,
    )
    receipt = await notifier.send(_notification())
    assert receipt is not None and receipt["reviewers"] == ["ed@example.com", "ann@example.com"]
    assert receipt["approval_link"] is True and receipt["body"] == "# Draft\n\nAll good."
    assert [to for to, _ in mailbox.messages] == [["ed@example.com"], ["ann@example.com"]]
    for (_, message), reviewer in zip(
        mailbox.messages, ["ed@example.com", "ann@example.com"], strict=True
    ):
        assert message["Subject"] == "Report: <b>bike share</b>"
        assert message["From"] == "cadenza@example.com"
        text = message.get_body(preferencelist=("plain",)).get_content()
        html = message.get_body(preferencelist=("html",)).get_content()
        assert "cdz1." not in text + html  # the callback token never leaves the run
        [url] = [line for line in text.splitlines() if line.startswith("https://")]
        link = url.removeprefix("https://cadenza.example.com/approve/")
        assert LINKS.verify(link, now=NOW).reviewer == reviewer
        assert f'href="{url}"' in html and "&lt;b&gt;bike share&lt;/b&gt;" in html
        assert "expires in 2 hours" in text
    ids = {message["Message-ID"] for _, message in mailbox.messages}
    assert len(ids) == 2  # one per reviewer, derived from the step's key: stable on retry
    mailbox.messages.clear()
    await notifier.send(_notification())
    assert {message["Message-ID"] for _, message in mailbox.messages} == ids


async def test_email_failures_say_whether_to_retry(smtp: tuple[_Mailbox, int]) -> None:
    mailbox, port = smtp
    mailbox.refuse = "gone@example.com"
    notifier = EmailNotifier(
        to=["gone@example.com"], host="127.0.0.1", port=port, start_tls=False, links=LINKS
    )
    with pytest.raises(NotificationFailed, match="refused") as refused:
        await notifier.send(_notification())
    assert refused.value.retryable is False
    unreachable = EmailNotifier(to=["a@example.com"], host="127.0.0.1", port=1, links=LINKS)
    with pytest.raises(NotificationFailed, match="unreachable") as down:
        await unreachable.send(_notification())
    assert down.value.retryable is True
    with pytest.raises(InvalidInput):
        EmailNotifier(to=["not-an-address"], links=LINKS)
    assert "secret" not in repr(EmailNotifier(to=["a@b.c"], password="secret", links=LINKS))


async def test_email_without_a_callback_is_a_plain_message(smtp: tuple[_Mailbox, int]) -> None:
    mailbox, port = smtp
    notifier = EmailNotifier(to=["ops@example.com"], host="127.0.0.1", port=port, links=LINKS)
    receipt = await notifier.send(
        _notification(kind="saga_compensation_failed", token=None, body={"step": "refund"})
    )
    assert receipt is None  # nothing to answer, so no link to check later
    [(_, message)] = mailbox.messages
    text = message.get_content()
    assert "saga_compensation_failed" in text and '"step": "refund"' in text
    assert "/approve/" not in text


# --- webhooks -----------------------------------------------------------------------------


class _Hook:
    """A loopback HTTP server that records the JSON posted to it and answers ``status``."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], Any]] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                hook.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(hook.status)
                self.end_headers()
                self.wfile.write(b"ok" if hook.status < 400 else b"invalid_payload")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[_Hook]:
    server = _Hook()
    yield server
    server.close()


async def test_webhook_posts_the_links_never_the_token(hook: _Hook) -> None:
    notifier = LinkWebhookNotifier(hook.url, reviewers=["ed@example.com"], links=LINKS)
    await notifier.send(_notification())
    [(headers, body)] = hook.posts
    assert headers["idempotency-key"] == "r-42/7.2"
    assert body["run_id"] == "r-42" and body["subject"] == "Report: <b>bike share</b>"
    [entry] = body["links"]
    assert entry["reviewer"] == "ed@example.com"
    assert LINKS.verify(entry["url"].rsplit("/", 1)[1], now=NOW).op_id == "7.1"
    assert "cdz1." not in json.dumps(body) and entry["url"] in body["text"]


async def test_slack_message_links_each_reviewer_and_escapes_the_subject(hook: _Hook) -> None:
    notifier = SlackNotifier(hook.url, reviewers=["Ed <ed@example.com>", "ann"], links=LINKS)
    await notifier.send(_notification(subject="Deploy <!channel> & co"))
    [(_, body)] = hook.posts
    text = body["text"]
    assert text.startswith("*Deploy &lt;!channel&gt; &amp; co*")  # no forged mention
    assert "<https://cadenza.example.com/approve/cdzl1." in text
    assert "|Review as ann>" in text and "|Review as ed &lt;ed@example.com&gt;>" in text
    assert body["blocks"][0]["text"] == {"type": "mrkdwn", "text": text}


async def test_webhook_errors_are_retryable_only_when_the_server_is_at_fault(hook: _Hook) -> None:
    notifier = SlackNotifier(hook.url, reviewers=["ann"], links=LINKS)
    hook.status = 503
    with pytest.raises(NotificationFailed, match="503") as busy:
        await notifier.send(_notification())
    assert busy.value.retryable is True
    hook.status = 400
    with pytest.raises(NotificationFailed, match="invalid_payload") as bad:
        await notifier.send(_notification())
    assert bad.value.retryable is False
    with pytest.raises(InvalidInput):
        LinkWebhookNotifier(hook.url, reviewers=[], links=LINKS)
