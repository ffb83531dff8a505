"""FastAPI dependencies over API keys (see :mod:`cadenza.security.api_keys`): the caller
of a request, and the scope each route needs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import Request

from cadenza.security.api_keys import SCOPES, Principal, authenticate, create_key
from cadenza.service._problems import Problem

if TYPE_CHECKING:
    from cadenza.client import Client

__all__ = [
    "SCOPES",
    "Principal",
    "authenticate",
    "client_of",
    "create_key",
    "principal_of",
    "require",
]


def client_of(request: Request) -> Client:
    """The :class:`~cadenza.Client` the app serves (``create_app(client)``)."""
    client: Client = request.app.state.client
    return client


def _raw_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


async def principal_of(request: Request) -> Principal:
    """The authenticated caller, cached on the request; 401 problem without a valid key."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    raw = _raw_key(request)
    if raw is None:
        raise Problem(
            401,
            "Unauthorized",
            "no API key: send 'Authorization: Bearer <key>'; create a key with"
            " 'cadenza keys create'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal = await authenticate(client_of(request), raw)
    if principal is None:
        raise Problem(
            401,
            "Unauthorized",
            "the API key is unknown, malformed or revoked; list keys with 'cadenza keys list'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = principal
    limiter = getattr(request.app.state, "limiter", None)
    if limiter is not None:
        limiter.check(principal.key_id)
    return principal


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller, who must hold ``scope`` (403 problem if not)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request) -> Principal:
        principal = await principal_of(request)
        if not principal.allows(scope):
            raise Problem(
                403,
                "Forbidden",
                f"the key {principal.name!r} ({principal.key_id}) lacks the {scope!r} scope;"
                f" create a key with --scope {scope}",
            )
        return principal

    dependency.__name__ = f"require_{scope}"
    return dependency
