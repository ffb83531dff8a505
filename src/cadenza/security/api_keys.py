"""API keys: who is calling, for which tenant, allowed to do what.

A key reads ``cdzk_<key id>_<secret>``. The store keeps the key id, its name, tenant and
scopes, and the SHA-256 of the secret: the key itself is shown once, when it is created,
and cannot be read back. The secret is 32 random bytes, so a plain hash is enough (a slow
password hash protects guessable secrets, which these are not).

Scopes: ``read`` (look at runs, rules, queues, workflows), ``start`` (start runs, publish
events), ``approve`` (complete callbacks), ``operate`` (cancel, retry, fork; change rules),
``admin`` (everything, queues included).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cadenza.engine.engine import Engine
from cadenza.errors import InvalidInput
from cadenza.ports.run_store import ApiKeyRecord, RunStore

if TYPE_CHECKING:
    from cadenza.client import Client

__all__ = ["SCOPES", "Principal", "authenticate", "create_key"]

SCOPES = ("read", "start", "approve", "operate", "admin")
_PREFIX = "cdzk_"
_KEY = re.compile(r"cdzk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})")
_TENANT = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request: an API key (``key_id``, ``name``) of one tenant."""

    key_id: str
    tenant: str
    scopes: frozenset[str]
    name: str

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def audit(self) -> dict[str, str]:
        """How the audit trail names this caller."""
        return {"key_id": self.key_id, "name": self.name, "tenant": self.tenant}


def _store(client_or_engine: Client | Engine | RunStore) -> RunStore:
    if isinstance(client_or_engine, RunStore):
        return client_or_engine
    if isinstance(client_or_engine, Engine):
        return client_or_engine.store
    return client_or_engine.engine.store


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(
    client_or_engine: Client | Engine | RunStore,
    *,
    name: str,
    tenant: str,
    scopes: Sequence[str],
    now: datetime,
) -> tuple[ApiKeyRecord, str]:
    """Store a new key and return its record and the key itself (shown once)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInput(
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}; use some of"
            f" {', '.join(SCOPES)}, e.g. --scope read --scope start"
        )
    if not _TENANT.fullmatch(tenant):
        raise InvalidInput(
            f"tenant {tenant!r} is not a tenant name: use 1 to 63 lowercase letters, digits,"
            " '.', '_' or '-', starting with a letter or digit, e.g. --tenant acme"
        )
    if not name.strip() or len(name) > 200:
        raise InvalidInput("a key needs a name of 1 to 200 characters, e.g. --name ci-deploy")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = ApiKeyRecord(
        key_id=key_id,
        name=name,
        tenant=tenant,
        scopes=tuple(s for s in SCOPES if s in scopes),
        secret_hash=_hash(secret),
        created_at=now,
    )
    await _store(client_or_engine).put_api_key(record)
    return record, f"{_PREFIX}{key_id}_{secret}"


async def authenticate(
    client_or_engine: Client | Engine | RunStore, raw_key: str
) -> Principal | None:
    """The principal of ``raw_key``; None when the key is malformed, unknown or revoked."""
    match = _KEY.fullmatch(raw_key.strip())
    if match is None:
        return None
    key_id, secret = match.groups()
    record = await _store(client_or_engine).get_api_key(key_id)
    if record is None or record.revoked_at is not None:
        return None
    if not hmac.compare_digest(record.secret_hash, _hash(secret)):
        return None
    return Principal(record.key_id, record.tenant, frozenset(record.scopes), record.name)
