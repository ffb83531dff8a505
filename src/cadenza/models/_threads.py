"""Run blocking iterators (llama.cpp generation, boto3 event streams) off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["iterate_in_thread"]

_ITEM, _ERROR, _DONE = 0, 1, 2


async def iterate_in_thread(
    factory: Callable[[], Iterator[T]],
    *,
    guard: AbstractContextManager[Any] | None = None,
) -> AsyncIterator[T]:
    """Yield the items of ``factory()``, produced in a worker thread while ``guard`` is held.

    When the consumer stops early the worker stops at its next item.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    stop = threading.Event()

    def post(kind: int, value: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
        except RuntimeError:  # the loop closed while we were working
            stop.set()

    def work() -> None:
        try:
            with guard if guard is not None else nullcontext():
                for item in factory():
                    if stop.is_set():
                        return
                    post(_ITEM, item)
        except BaseException as exc:
            post(_ERROR, exc)
        else:
            post(_DONE, None)

    threading.Thread(target=work, name="cadenza-model-stream", daemon=True).start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == _ITEM:
                yield value
            elif kind == _ERROR:
                raise value
            else:
                return
    finally:
        stop.set()
