"""Console sign-in: an operator pastes an API key once; a signed cookie carries it after.

The cookie holds the key and the time it was signed, under an HMAC with a key derived from
the deployment secret for sessions alone; it is HttpOnly (no script reads it), SameSite
Strict (no other site sends it) and Secure behind HTTPS. Every request authenticates the
key again, so revoking it ends the session at once. The session lasts ``SESSION_HOURS``.

Every form that changes something carries a CSRF token: an HMAC of the session cookie, so
it is worthless without the cookie and changes with each sign-in. A POST without it, or
from another origin, is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import Response

from cadenza.service._auth import Principal, authenticate

__all__ = [
    "COOKIE",
    "csrf_token",
    "current_principal",
    "same_origin",
    "sign_in",
    "sign_out",
    "valid_csrf",
]

COOKIE = "cadenza_console"
SESSION_HOURS = 12
_PURPOSE = "console-session/v1"


def _key(request: Request) -> bytes:
    key: bytes = request.app.state.client.engine.tokens.derive_key(_PURPOSE)
    return key


def _mac(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _cookie_value(request: Request, api_key: str) -> str:
    body = base64.urlsafe_b64encode(f"{int(time.time())}:{api_key}".encode()).decode()
    return f"{body}.{_mac(_key(request), body)}"


def _api_key(request: Request) -> str | None:
    """The API key of a genuine, unexpired session cookie."""
    value = request.cookies.get(COOKIE)
    if not value or "." not in value:
        return None
    body, _, mac = value.rpartition(".")
    if not hmac.compare_digest(_mac(_key(request), body), mac):
        return None
    try:
        issued, _, api_key = base64.urlsafe_b64decode(body).decode().partition(":")
        age = time.time() - int(issued)
    except ValueError:
        return None
    if age > SESSION_HOURS * 3600 or not api_key:
        return None
    return api_key


async def current_principal(request: Request) -> Principal | None:
    """Who is signed in, checked against the store (a revoked key signs out)."""
    cached = getattr(request.state, "console_principal", None)
    if isinstance(cached, Principal):
        return cached
    api_key = _api_key(request)
    if api_key is None:
        return None
    principal = await authenticate(request.app.state.client, api_key)
    request.state.console_principal = principal
    return principal


def sign_in(request: Request, response: Response, api_key: str) -> None:
    response.set_cookie(
        COOKIE,
        _cookie_value(request, api_key),
        max_age=SESSION_HOURS * 3600,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def sign_out(response: Response) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")


def csrf_token(request: Request) -> str:
    """The token the signed-in operator's forms carry ("" when nobody is signed in)."""
    value = request.cookies.get(COOKIE)
    return _mac(_key(request), f"csrf:{value}") if value else ""


def valid_csrf(request: Request, token: str) -> bool:
    """Whether a POST carries this session's CSRF token and comes from this origin."""
    expected = csrf_token(request)
    if not expected or not hmac.compare_digest(expected, token or ""):
        return False
    return same_origin(request)


def same_origin(request: Request) -> bool:
    """False when the browser says the form was sent from another site."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        return urlsplit(origin).netloc == request.url.netloc
    return True
