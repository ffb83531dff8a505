"""The artifact store port: large payloads kept out of the journal (claim-check).

Artifacts are immutable and addressed by the SHA-256 of their content, so writing the same
bytes twice is harmless and an artifact written by a step that then crashed is simply
reused when the step runs again.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod


def content_key(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ArtifactStore(ABC):
    url: str

    @abstractmethod
    async def put(self, data: bytes, *, content_type: str = "application/json") -> str:
        """Store ``data``; return its key (``sha256:<hex>``)."""

    @abstractmethod
    async def get(self, key: str) -> bytes:
        """The bytes stored under ``key``; NotFound when there are none."""

    @abstractmethod
    async def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
