"""Credentials out of error text, before anything is stored or emitted.

A provider's error body is quoted in the :class:`~cadenza.errors.ModelError` an adapter
raises, and that message goes to the journal, the history, ``AgentError`` events and the
run's error. Some proxies echo the request, headers included, in their error bodies, so
every adapter passes what it quotes through :func:`redact` with the secrets it was
configured with: the exact keys first, then the shapes credentials take (authorization
headers, bearer tokens, ``api-key`` / ``x-api-key`` fields, provider key prefixes, AWS
secret access keys).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from ._types import ModelResponse

__all__ = ["REDACTED", "redact", "scrub", "without_secrets"]

REDACTED = "[REDACTED]"

# Header or field name, separator (": ", "=", '": "'), then the value up to a delimiter.
_NAMED = re.compile(
    r"""(?ix)
    (
        ["']?
        (?:proxy-)?authorization | x-api-key | api[-_]?key | x-goog-api-key | access[-_]?token
        | aws[-_]?secret[-_]?access[-_]?key | secret[-_]?access[-_]?key | aws[-_]?session[-_]?token
        | client[-_]?secret | password | secret
        ["']?
        \s* [:=] \s*
        ["']?
    )
    (?:(?:bearer|basic|token)\s+)?
    [^\s"',;&}\]]+
    """
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}")
# Well-known key shapes: OpenAI / Anthropic (sk-…), Google (AIza…), AWS access key ids.
_SHAPES = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-]{16,}|AIza[0-9A-Za-z_\-]{30,}|(?:AKIA|ASIA)[0-9A-Z]{16})\b"
)
# A 40-character AWS secret access key next to the word "secret".
_AWS_SECRET = re.compile(r"(?i)(secret\S{0,30}?\W{1,4})[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with credentials replaced by ``[REDACTED]``.

    ``secrets`` are values known to be secret (the adapter's configured key); they are
    removed wherever they appear, whatever surrounds them. Values shorter than 8
    characters are ignored rather than blanking common words.
    """
    for secret in sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _NAMED.sub(lambda m: m.group(1) + REDACTED, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _AWS_SECRET.sub(lambda m: m.group(1) + REDACTED, text)
    return _SHAPES.sub(REDACTED, text)


def scrub(error: BaseException, secrets: Iterable[str | None] = ()) -> BaseException:
    """Redact ``error``'s message in place and drop a cause or context that quotes a
    credential (a stored traceback prints them). Returns ``error``, to re-raise."""
    known = [s for s in secrets if s]
    message = getattr(error, "message", None)
    if isinstance(message, str):
        error.message = redact(message, known)  # type: ignore[attr-defined]
    error.args = tuple(redact(a, known) if isinstance(a, str) else a for a in error.args)
    if any(redact(str(e), known) != str(e) for e in _chain(error)):
        error.__cause__ = None
        error.__suppress_context__ = True
    return error


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo = [e for e in (error.__cause__, error.__context__) if e is not None]
    while todo and len(seen) < 20:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
    return seen


def without_secrets(response: ModelResponse, secrets: Iterable[str | None]) -> ModelResponse:
    """``response`` with the adapter's own keys removed from its text, tool calls and raw
    reply (a proxy can echo them in a successful reply too). Only the exact configured
    values are removed: a model's answer that merely looks like a credential is its own."""
    known = [s for s in secrets if s and len(s) >= 8]
    text = json.dumps(response.to_dict(), ensure_ascii=False)
    if not any(json.dumps(s, ensure_ascii=False)[1:-1] in text for s in known):
        return response
    for secret in known:
        text = text.replace(json.dumps(secret, ensure_ascii=False)[1:-1], REDACTED)
    return ModelResponse.from_dict(json.loads(text))
