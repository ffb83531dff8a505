"""A response cache around any model.

The key is a SHA-256 of the model name and the request's canonical JSON, so equal requests
hit the same entry whatever process asks. Entries expire after a TTL. The store is
pluggable: the default keeps entries in memory; anything with ``get``/``set`` of JSON dicts
(Redis, a SQL table) can stand in. A hit is marked ``cache_hit=True`` and reports zero
usage, since nothing was spent. The in-memory store ages entries by a
:class:`~cadenza.clock.Clock`, so a :class:`~cadenza.testing.FakeClock` expires them.
"""

from __future__ import annotations

import asyncio
import hashlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

from cadenza.clock import Clock

from ._base import Model, WrapperModel
from ._types import ModelRequest, ModelResponse, StreamChunk, Usage

__all__ = ["CacheStore", "CachedModel", "InMemoryCacheStore", "request_key"]


def request_key(model_name: str, req: ModelRequest) -> str:
    """The stable cache key of ``req`` sent to ``model_name``."""
    text = f"{model_name}\n{req.canonical_json()}"
    return hashlib.sha256(text.encode()).hexdigest()


class CacheStore(ABC):
    """Where cached responses live: JSON dicts under string keys, each with a TTL."""

    @abstractmethod
    async def get(self, key: str) -> dict[str, Any] | None:
        """The live entry under ``key``, or None when absent or expired."""

    @abstractmethod
    async def set(self, key: str, value: dict[str, Any], ttl: timedelta) -> None:
        """Store ``value`` under ``key`` until ``ttl`` has passed."""


class InMemoryCacheStore(CacheStore):
    """A bounded in-process store; the least recently used entry goes first when full."""

    def __init__(self, *, max_entries: int = 1024, clock: Clock | None = None) -> None:
        self.max_entries = max_entries
        self._clock = clock if clock is not None else Clock()
        self._entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    async def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if self._clock.monotonic() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: dict[str, Any], ttl: timedelta) -> None:
        self._entries[key] = (self._clock.monotonic() + ttl.total_seconds(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class CachedModel(WrapperModel):
    """Answer repeated requests from a cache for ``ttl``.

    ``CachedModel(infer_model("bedrock:amazon.nova-lite-v1:0"), ttl=timedelta(hours=1))``

    Concurrent identical requests are collapsed into one call to the wrapped model.
    ``clock`` ages the entries of the default in-memory store (pass the engine's).
    """

    def __init__(
        self,
        wrapped: Model,
        *,
        ttl: timedelta = timedelta(hours=1),
        store: CacheStore | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(wrapped)
        self.ttl = ttl
        self.store = store if store is not None else InMemoryCacheStore(clock=clock)
        self._inflight: dict[str, asyncio.Lock] = {}

    async def _lookup(self, key: str) -> ModelResponse | None:
        data = await self.store.get(key)
        if data is None:
            return None
        return replace(ModelResponse.from_dict(data), usage=Usage(), cache_hit=True)

    async def request(self, req: ModelRequest) -> ModelResponse:
        key = request_key(self.wrapped.name, req)
        lock = self._inflight.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                hit = await self._lookup(key)
                if hit is not None:
                    return hit
                response = await self.wrapped.request(req)
                await self.store.set(key, response.to_dict(), self.ttl)
                return response
        finally:
            if not lock.locked() and self._inflight.get(key) is lock:
                del self._inflight[key]

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        key = request_key(self.wrapped.name, req)
        hit = await self._lookup(key)
        if hit is not None:
            yield StreamChunk(delta=hit.text, response=hit)
            return
        async for chunk in self.wrapped.stream(req):
            if chunk.response is not None:
                await self.store.set(key, chunk.response.to_dict(), self.ttl)
            yield chunk
