"""Approval link tokens: signed, bound to one callback and one reviewer, expiring with it.

A link token reads ``cdzl1.<claims>.<signature>``: base64url JSON claims (callback id, run,
operation, the reviewer it was sent to, its expiry and a random link id) and an
HMAC-SHA256 under a key derived from the deployment secret for links alone, so a link never
verifies as a callback token, nor a token as a link. The link does not carry the callback
token: whoever holds it can answer *as that reviewer* through the link page, nothing else.
What else a link must satisfy before it answers (pending, addressed to its reviewer) is
checked by ``cadenza.service._links``, which serves the page. Signing needs no web
framework, so workers and notifiers issue links without the ``service`` extra.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cadenza.errors import (
    CallbackTokenExpired,
    ConfigurationError,
    InvalidCallbackToken,
    InvalidInput,
)
from cadenza.security.tokens import CallbackTokens

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine

__all__ = [
    "DEFAULT_BASE_URL",
    "ApprovalLinks",
    "LinkClaims",
    "normalise_reviewer",
    "service_base_url",
]

_PREFIX = "cdzl1"
_PURPOSE = "approval-link/v1"
_EPOCH = datetime.fromtimestamp(0, UTC)
#: Where ``cadenza serve`` listens unless told otherwise.
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def service_base_url() -> str:
    """Where reviewers reach the service: ``CADENZA_SERVICE_BASE_URL``, else the address
    ``cadenza serve`` listens on by default."""
    return os.environ.get("CADENZA_SERVICE_BASE_URL") or DEFAULT_BASE_URL


def normalise_reviewer(reviewer: str) -> str:
    """How a reviewer is compared: trimmed, and an e-mail address in lower case."""
    cleaned = " ".join(reviewer.split())
    return cleaned.lower() if "@" in cleaned else cleaned


@dataclass(frozen=True, slots=True)
class LinkClaims:
    callback_id: str
    run_id: str
    op_id: str
    reviewer: str
    expires_at: datetime
    link_id: str


class ApprovalLinks:
    """Issues and verifies approval links for one deployment.

    >>> links = ApprovalLinks.from_secret(secret, base_url="https://cadenza.example.com")
    >>> links.url_for(callback_token, reviewer="editor@example.com")
    'https://cadenza.example.com/approve/cdzl1.eyJ…'
    """

    def __init__(self, key: bytes, *, base_url: str, tokens: CallbackTokens | None = None) -> None:
        if len(key) < 16:
            raise ConfigurationError("the approval link key must be at least 16 bytes long")
        self._key = key
        self.base_url = base_url.rstrip("/")
        self._tokens = tokens

    @classmethod
    def from_secret(cls, secret: bytes, *, base_url: str) -> ApprovalLinks:
        """Links under the deployment ``secret`` (``CADENZA_SECRET``), as the service
        verifies them."""
        tokens = CallbackTokens(secret)
        return cls(tokens.derive_key(_PURPOSE), base_url=base_url, tokens=tokens)

    @classmethod
    def for_engine(cls, engine: Engine, *, base_url: str) -> ApprovalLinks:
        return cls(engine.tokens.derive_key(_PURPOSE), base_url=base_url, tokens=engine.tokens)

    @classmethod
    def from_environment(cls, *, base_url: str | None = None) -> ApprovalLinks:
        """Links under this machine's deployment secret (``CADENZA_SECRET``, else
        ``$CADENZA_HOME/secret``) pointing at ``CADENZA_SERVICE_BASE_URL``: what a
        notifier uses when it was given no links of its own."""
        from cadenza.config import home
        from cadenza.security.tokens import load_secret

        return cls.from_secret(load_secret(home()), base_url=base_url or service_base_url())

    # --- issuing ------------------------------------------------------------------------

    def issue(self, callback_token: str, *, reviewer: str) -> str:
        """The link token that lets ``reviewer`` answer the callback ``callback_token``
        completes; it expires when the token does."""
        if self._tokens is None:
            raise ConfigurationError(
                "these ApprovalLinks were made from a bare key; use ApprovalLinks.from_secret"
                " so that links can be issued for callback tokens"
            )
        who = normalise_reviewer(reviewer)
        if not who:
            raise InvalidInput("an approval link needs a reviewer: an e-mail address or a name")
        # Verified as of 1970: the signature is checked (a token of another deployment is
        # refused here, not when the reviewer clicks) but not the expiry, which the link keeps.
        claims = self._tokens.verify(callback_token, now=_EPOCH)
        return self.sign(
            LinkClaims(
                callback_id=claims.callback_id,
                run_id=claims.run_id,
                op_id=claims.op_id,
                reviewer=who,
                expires_at=claims.expires_at,
                link_id=secrets.token_urlsafe(9),
            )
        )

    def url_for(self, callback_token: str, *, reviewer: str) -> str:
        return self.url(self.issue(callback_token, reviewer=reviewer))

    def url(self, link: str) -> str:
        return f"{self.base_url}/approve/{link}"

    def sign(self, claims: LinkClaims) -> str:
        data = {
            "c": claims.callback_id,
            "r": claims.run_id,
            "o": claims.op_id,
            "v": claims.reviewer,
            "e": math.ceil(claims.expires_at.timestamp()),
            "i": claims.link_id,
        }
        body = _b64(json.dumps(data, separators=(",", ":"), sort_keys=True).encode())
        return f"{_PREFIX}.{body}.{self._sign(body)}"

    # --- verifying ----------------------------------------------------------------------

    def verify(self, link: str, *, now: datetime) -> LinkClaims:
        """The claims of a genuine, unexpired link; InvalidCallbackToken (forged, altered,
        malformed) or CallbackTokenExpired otherwise."""
        link = link.strip()
        parts = link.split(".")
        if not link.isascii() or len(parts) != 3 or parts[0] != _PREFIX:
            raise InvalidCallbackToken(
                "this is not a cadenza approval link; open the whole link from the message"
                " you received (mail clients sometimes cut long links in two)"
            )
        _, body, signature = parts
        if not hmac.compare_digest(self._sign(body), signature):
            raise InvalidCallbackToken(
                "this approval link has been altered, or was issued by another cadenza"
                " deployment; open the link exactly as you received it"
            )
        try:
            data = json.loads(_unb64(body))
            claims = LinkClaims(
                callback_id=str(data["c"]),
                run_id=str(data["r"]),
                op_id=str(data["o"]),
                reviewer=str(data["v"]),
                expires_at=datetime.fromtimestamp(int(data["e"]), UTC),
                link_id=str(data["i"]),
            )
        except (ValueError, KeyError, TypeError, OverflowError, OSError) as exc:
            raise InvalidCallbackToken(f"approval link claims are malformed: {exc}") from exc
        if now >= claims.expires_at:
            raise CallbackTokenExpired(
                f"this approval link expired at {claims.expires_at:%Y-%m-%d %H:%M} UTC, with"
                " the request it answered; ask the run's owner for a new request"
            )
        return claims

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
