"""Limits that keep one caller from hurting the others: body size, and a rate per key.

The body limit is an ASGI middleware, so it holds for every route (and for bodies sent
without a Content-Length, counted as they arrive). The rate limit is a token bucket per
API key, in this process: a cluster of N service processes lets a key make up to N times
the rate, which is what a per-process limit can promise.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cadenza.service._problems import PROBLEM_JSON, Problem

__all__ = ["BodyLimit", "RateLimiter"]


class RateLimiter:
    """``limit`` requests per ``period`` seconds per key, in bursts up to ``limit``."""

    def __init__(
        self, limit: int, period: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.rate = limit / period
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str) -> None:
        """Take one token for ``key_id``; a 429 problem with Retry-After when none is left."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key_id, (float(self.limit), now))
            tokens = min(float(self.limit), tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                wait = max(1, math.ceil((1.0 - tokens) / self.rate))
                raise Problem(
                    429,
                    "Too Many Requests",
                    f"API key {key_id} made more than {self.limit} requests in"
                    f" {self.limit / self.rate:g} s; retry after {wait} s",
                    headers={"Retry-After": str(wait)},
                    extra={"exit_code": 6},
                )
            self._buckets[key_id] = (tokens - 1.0, now)


class BodyLimit:
    """Refuse request bodies larger than ``max_bytes`` with a 413 problem."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(scope, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Content Too Large",
                "status": 413,
                "detail": f"the request body is larger than {self.max_bytes} bytes; send less,"
                " or keep large values in artifacts",
                "instance": scope.get("path"),
                "exit_code": 2,
                "error": "PayloadTooLarge",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
