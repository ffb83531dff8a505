"""The notifier port: how a workflow tells a person that something waits for them.

An approval request, an escalation, a saga that could not undo its work: each becomes a
:class:`Notification` handed to a :class:`Notifier`. Sending is always a durable step
(:func:`send_notification`), so a replayed run never notifies twice, and the step's
idempotency key travels with the notification for receivers that deduplicate.

Adapters: :class:`ConsoleNotifier` (a line on stdout), :class:`FileNotifier` (JSON lines in
``$CADENZA_HOME/notifications.log``) and :class:`WebhookNotifier` (a JSON POST; needs
``httpx``). Any ``async def notify(notification)`` works as a notifier too.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from pydantic_core import to_jsonable_python

from cadenza.context import Context
from cadenza.errors import CadenzaError, MissingDependency, WorkflowDefinitionError
from cadenza.operations import StepContext
from cadenza.retry import RetryPolicy
from cadenza.security.links import ApprovalLinks, service_base_url

__all__ = [
    "ConsoleNotifier",
    "FileNotifier",
    "Notification",
    "NotificationFailed",
    "Notifier",
    "NotifierLike",
    "WebhookNotifier",
    "as_notifier",
    "send_notification",
]

#: Sending a notification is retried like any step that talks to another system.
NOTIFY_RETRY = RetryPolicy(max_attempts=3, initial_interval=timedelta(seconds=2))


class NotificationFailed(CadenzaError):
    """A notifier could not deliver; ``retryable`` says whether sending again may help."""


@dataclass(frozen=True)
class Notification:
    """What a person is told. ``token`` completes the callback the run waits on, if any."""

    kind: str  # approval_requested, approval_escalated, saga_compensation_failed, …
    subject: str
    run_id: str
    workflow: str
    token: str | None = None
    body: Any = None
    round: int | None = None
    timeout_seconds: float | None = None
    respond: str | None = None  # how to answer, in words a person can follow
    idempotency_key: str = ""  # the sending step's key: stable across retries and replays
    extra: dict[str, Any] = field(default_factory=dict)
    # Signs approval links under the secret of the deployment running the sending step.
    links: ApprovalLinks | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (a pydantic model or dataclass body becomes its fields)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "links"}
        data["body"] = to_jsonable_python(self.body, fallback=str)
        return {k: v for k, v in data.items() if v not in (None, {}, "")}


class Notifier(ABC):
    """The port. ``send`` may raise; the sending step retries it. What it returns (a
    receipt: whom it reached, say) is recorded as the sending step's result, once."""

    @abstractmethod
    async def send(self, notification: Notification) -> dict[str, Any] | None: ...


NotifierLike = Notifier | Callable[[Notification], Awaitable[None] | None]


class _CallableNotifier(Notifier):
    def __init__(self, fn: Callable[[Notification], Awaitable[None] | None]) -> None:
        self.fn = fn

    async def send(self, notification: Notification) -> None:
        result = self.fn(notification)
        if inspect.isawaitable(result):
            await result

    def __repr__(self) -> str:
        return f"<notifier {getattr(self.fn, '__qualname__', self.fn)!r}>"


def as_notifier(value: NotifierLike, *, what: str = "notify") -> Notifier:
    """A :class:`Notifier` for a notifier or a plain ``(notification) -> None`` callable."""
    if isinstance(value, Notifier):
        return value
    if callable(value):
        return _CallableNotifier(value)
    raise WorkflowDefinitionError(
        f"{what} must be a Notifier or a callable taking a Notification, got {value!r}"
    )


class ConsoleNotifier(Notifier):
    """Print one readable line per notification (to stdout unless told otherwise)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    async def send(self, notification: Notification) -> None:
        line = f"[cadenza] {notification.kind}: {notification.subject} (run {notification.run_id})"
        if notification.respond:
            line += f"\n          {notification.respond}"
        print(line, file=self.stream or sys.stdout, flush=True)


class FileNotifier(Notifier):
    """Append each notification as one JSON line, by default to
    ``$CADENZA_HOME/notifications.log`` (resolved when sending)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None

    def target(self) -> Path:
        from cadenza.config import home

        return self.path or home() / "notifications.log"

    async def send(self, notification: Notification) -> None:
        line = json.dumps(notification.to_dict(), default=str, ensure_ascii=False)
        await asyncio.to_thread(self._append, self.target(), line)

    @staticmethod
    def _append(path: Path, line: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


class WebhookNotifier(Notifier):
    """POST each notification as JSON. Needs ``httpx``; fails at construction without it.

    The ``Idempotency-Key`` header carries the sending step's key, so a receiver can drop
    the duplicate a crash between sending and checkpointing may cause.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        transport: Any = None,  # an httpx transport, e.g. httpx.MockTransport in tests
    ) -> None:
        try:
            import httpx  # noqa: F401 - checked here so a missing extra fails at definition
        except ImportError as exc:
            raise MissingDependency("the webhook notifier", "webhook") from exc
        self.url = url
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.transport = transport

    async def send(self, notification: Notification) -> None:
        import httpx

        headers = {"content-type": "application/json", **self.headers}
        if notification.idempotency_key:
            headers["idempotency-key"] = notification.idempotency_key
        body = json.dumps(notification.to_dict(), default=str)
        try:
            async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as client:
                response = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise NotificationFailed(
                f"webhook {self.url} unreachable: {exc}", retryable=True
            ) from exc
        if response.status_code >= 400:
            raise NotificationFailed(
                f"webhook {self.url} answered {response.status_code}: {response.text[:200]}",
                retryable=response.status_code >= 500 or response.status_code == 429,
            )


async def _deliver(
    step: StepContext, notifier: Notifier, notification: Notification
) -> dict[str, Any] | None:
    links = None
    if step.client is not None:
        links = ApprovalLinks.for_engine(step.client.engine, base_url=service_base_url())
    return await notifier.send(
        replace(notification, idempotency_key=step.idempotency_key, links=links)
    )


async def send_notification(
    ctx: Context,
    notifier: Notifier,
    notification: Notification,
    *,
    name: str = "notify",
    retry: RetryPolicy | None = None,
) -> None:
    """Send ``notification`` as a durable step: once per run, however often it replays."""
    await ctx.step(_deliver, notifier, notification, name=name, retry=retry or NOTIFY_RETRY)
