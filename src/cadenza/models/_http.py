"""What the HTTP adapters (OpenAI-compatible, Anthropic) share: errors and server-sent events.

Error bodies are quoted in the errors raised, and those are stored; they pass through
:func:`~cadenza.models._redact.redact` with the adapter's key first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import httpx

from ..errors import (
    ModelError,
    ModelNotFound,
    ModelThrottled,
    ModelTimeout,
    ModelUnavailable,
)
from ._redact import redact

__all__ = ["ServerSentEvent", "error_for_status", "map_transport_error", "sse"]


@dataclass(frozen=True)
class ServerSentEvent:
    event: str
    data: str


async def sse(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    """The events of a ``text/event-stream`` response."""
    event = ""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield ServerSentEvent(event or "message", "\n".join(data))
            event, data = "", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
    if data:
        yield ServerSentEvent(event or "message", "\n".join(data))


def _provider_message(body: str, secrets: Iterable[str | None]) -> str:
    # Redact before clipping, so a clip cannot cut a credential in two and hide it.
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return redact(body, secrets)[:300]
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        return redact(str(error.get("message") or error), secrets)[:300]
    return redact(str(error), secrets)[:300]


def error_for_status(
    model_name: str,
    status: int,
    body: str,
    headers: httpx.Headers,
    *,
    key_env: str,
    secrets: Iterable[str | None] = (),
) -> ModelError:
    """The cadenza error for an HTTP error reply, with advice on what to do.

    ``secrets`` (the adapter's key) are redacted from the quoted body, as are credentials
    of any known shape.
    """
    detail = _provider_message(body, list(secrets))
    if status == 429:
        wait = headers.get("retry-after")
        hint = f"; the provider asks to retry after {wait}s" if wait else ""
        return ModelThrottled(f"{model_name} is rate limited (HTTP 429: {detail}){hint}")
    if status in (500, 502, 503, 504, 529):
        return ModelUnavailable(f"{model_name} is unavailable (HTTP {status}: {detail})")
    if status in (401, 403):
        return ModelError(
            f"{model_name} refused the credentials (HTTP {status}: {detail}); check {key_env}"
        )
    if status == 404:
        return ModelNotFound(f"{model_name} was not found (HTTP 404: {detail}); check the name")
    if status == 408:
        return ModelTimeout(f"{model_name} timed out (HTTP 408: {detail})")
    return ModelError(f"{model_name} rejected the request (HTTP {status}: {detail})")


def map_transport_error(
    model_name: str, exc: httpx.HTTPError, *, secrets: Iterable[str | None] = ()
) -> ModelError:
    """The cadenza error for a failed exchange (redacted: transport errors quote URLs)."""
    text = redact(str(exc), secrets)
    if isinstance(exc, httpx.TimeoutException):
        return ModelTimeout(f"{model_name} did not answer in time ({type(exc).__name__})")
    if isinstance(exc, httpx.TransportError):
        return ModelUnavailable(f"cannot reach {model_name}: {type(exc).__name__}: {text}")
    return ModelError(f"{model_name}: {type(exc).__name__}: {text}")
