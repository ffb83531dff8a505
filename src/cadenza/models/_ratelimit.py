"""Rate and concurrency limits around any model.

Two token buckets — requests per minute and tokens per minute — and a cap on calls in
flight. A call waits until both buckets can pay for it. The token bucket is charged an
estimate before the call (prompt characters / 4 plus ``max_tokens``) and corrected by the
real usage after it, so a burst of long replies slows the next callers down.

Time comes from a :class:`~cadenza.clock.Clock` (the engine's, when given), so a
:class:`~cadenza.testing.FakeClock` refills the buckets and ends the waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

from cadenza.clock import Clock

from ._base import Model, WrapperModel
from ._types import ModelRequest, ModelResponse, StreamChunk, Usage

__all__ = ["RateLimitedModel", "TokenBucket"]


class TokenBucket:
    """``capacity`` units, refilled continuously over ``per``; callers wait for what they need.

    The balance may go below zero when a charge is corrected upwards after the fact; later
    callers then wait for the debt to be repaid.
    """

    def __init__(
        self,
        capacity: float,
        *,
        per: timedelta = timedelta(minutes=1),
        clock: Clock | None = None,
    ) -> None:
        if capacity <= 0:
            raise ValueError("a rate limit must be positive")
        self.capacity = float(capacity)
        self.rate = self.capacity / per.total_seconds()
        self._clock = clock if clock is not None else Clock()
        self._level = self.capacity
        self._updated = self._clock.monotonic()
        self._lock = asyncio.Lock()

    @property
    def level(self) -> float:
        self._refill()
        return self._level

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now

    async def take(self, amount: float) -> float:
        """Wait until ``amount`` is available and take it; returns the seconds waited."""
        amount = min(float(amount), self.capacity)  # a single huge call must still pass
        waited = 0.0
        async with self._lock:  # first come, first served
            while True:
                self._refill()
                if self._level >= amount:
                    self._level -= amount
                    return waited
                delay = (amount - self._level) / self.rate
                waited += delay
                await self._clock.sleep(delay)

    def adjust(self, amount: float) -> None:
        """Charge ``amount`` more (or refund, when negative) without waiting."""
        self._refill()
        self._level = min(self.capacity, self._level - amount)


def _estimate_tokens(req: ModelRequest) -> int:
    chars = sum(len(m.content) for m in req.messages)
    return chars // 4 + (req.max_tokens or 256)


class RateLimitedModel(WrapperModel):
    """Keep calls to ``wrapped`` under per-minute request and token rates and a concurrency cap.

    ``RateLimitedModel(model, requests_per_minute=50, tokens_per_minute=40_000,
    max_concurrency=4, clock=engine.clock)``. ``per`` changes the window; ``clock`` is the
    one the buckets refill and wait by (a FakeClock in tests; the system clock by default).
    """

    def __init__(
        self,
        wrapped: Model,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_concurrency: int | None = None,
        per: timedelta = timedelta(minutes=1),
        clock: Clock | None = None,
    ) -> None:
        super().__init__(wrapped)
        self.requests = (
            TokenBucket(requests_per_minute, per=per, clock=clock) if requests_per_minute else None
        )
        self.tokens = (
            TokenBucket(tokens_per_minute, per=per, clock=clock) if tokens_per_minute else None
        )
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        self._in_flight = 0
        self.peak_in_flight = 0

    @asynccontextmanager
    async def _admit(self, req: ModelRequest) -> AsyncIterator[int]:
        estimate = _estimate_tokens(req)
        async with AsyncExitStack() as stack:
            if self._slots is not None:
                await stack.enter_async_context(self._slots)
            if self.requests is not None:
                await self.requests.take(1)
            if self.tokens is not None:
                await self.tokens.take(estimate)
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
            try:
                yield estimate
            finally:
                self._in_flight -= 1

    def _settle(self, estimate: int, usage: Usage) -> None:
        if self.tokens is not None:
            self.tokens.adjust(usage.total_tokens - estimate)

    async def request(self, req: ModelRequest) -> ModelResponse:
        async with self._admit(req) as estimate:
            response = await self.wrapped.request(req)
        self._settle(estimate, response.usage)
        return response

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        async with self._admit(req) as estimate:
            async for chunk in self.wrapped.stream(req):
                if chunk.response is not None:
                    self._settle(estimate, chunk.response.usage)
                yield chunk
