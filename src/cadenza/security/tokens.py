"""Callback tokens: unforgeable, bound to one run and operation, expiring.

A token is ``cdz1.<claims>.<signature>``: base64url JSON claims (callback id, run id,
operation id, expiry) and an HMAC-SHA256 of them under the deployment's secret. Anyone may
read the claims; nobody without the secret can make or alter a token. That the token
completes its callback only once is enforced by the store, not by the token.
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
from pathlib import Path

from cadenza.errors import CallbackTokenExpired, ConfigurationError, InvalidCallbackToken

_PREFIX = "cdz1"


@dataclass(frozen=True)
class TokenClaims:
    callback_id: str
    run_id: str
    op_id: str
    expires_at: datetime


class CallbackTokens:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ConfigurationError("the callback secret must be at least 16 bytes long")
        self._secret = secret

    def issue(self, callback_id: str, run_id: str, op_id: str, expires_at: datetime) -> str:
        # Whole seconds, rounded up: the token must not expire before its callback does.
        expiry = math.ceil(expires_at.timestamp())
        claims = {"c": callback_id, "r": run_id, "o": op_id, "e": expiry}
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return f"{_PREFIX}.{body}.{self._sign(body)}"

    def verify(self, token: str, *, now: datetime) -> TokenClaims:
        """The claims of a genuine, unexpired token; InvalidCallbackToken or
        CallbackTokenExpired otherwise."""
        token = token.strip()
        if not token.isascii() or not token.isprintable():
            # No token has such characters, and they cannot be compared in constant time.
            raise InvalidCallbackToken(
                "this is not a cadenza callback token: it contains characters no token has"
                " (non-ASCII or control characters); copy the whole token printed by"
                " 'cadenza run' or 'cadenza runs show'"
            )
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _PREFIX:
            raise InvalidCallbackToken(
                "this is not a cadenza callback token (expected cdz1.<claims>.<signature>);"
                " copy the whole token printed by 'cadenza run' or 'cadenza runs show'"
            )
        _, body, signature = parts
        if not hmac.compare_digest(self._sign(body), signature):
            raise InvalidCallbackToken(
                "callback token signature does not match: the token was altered, or it was"
                " issued by a deployment with another secret (CADENZA_SECRET)"
            )
        try:
            claims = json.loads(_unb64(body))
            parsed = TokenClaims(
                callback_id=str(claims["c"]),
                run_id=str(claims["r"]),
                op_id=str(claims["o"]),
                expires_at=datetime.fromtimestamp(int(claims["e"]), UTC),
            )
        except (ValueError, KeyError, TypeError, OverflowError, OSError) as exc:
            raise InvalidCallbackToken(f"callback token claims are malformed: {exc}") from exc
        if now >= parsed.expires_at:
            raise CallbackTokenExpired(
                f"callback token expired at {parsed.expires_at:%Y-%m-%dT%H:%M:%SZ}"
                f" (run {parsed.run_id}, op {parsed.op_id}); see the run with"
                f" 'cadenza runs show {parsed.run_id}'"
            )
        return parsed

    def derive_key(self, purpose: str) -> bytes:
        """A key for another kind of signature (approval links, console sessions), derived
        from the secret: what it signs never verifies as a callback token, nor the reverse."""
        return hmac.new(self._secret, f"cadenza/{purpose}".encode(), hashlib.sha256).digest()

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())


def load_secret(home: Path) -> bytes:
    """``CADENZA_SECRET`` if set, else ``home/secret``, created (mode 0600) on first use."""
    from_env = os.environ.get("CADENZA_SECRET")
    if from_env:
        return from_env.encode()
    path = home / "secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
