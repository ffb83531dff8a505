"""The options and helpers of durable operations: step semantics, the step context,
wait strategies for conditions, and what the engine reads off the callables it is given."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, get_type_hints

from cadenza.errors import ConditionTimedOut, ErrorInfo

if TYPE_CHECKING:
    from cadenza.client import Client
    from cadenza.ports.artifact_store import RunArtifacts

__all__ = [
    "StepContext",
    "StepSemantics",
    "WaitDecision",
    "poll_until",
]


class StepSemantics(StrEnum):
    AT_LEAST_ONCE = "at-least-once"  # an attempt that died before its checkpoint runs again
    AT_MOST_ONCE = "at-most-once"  # an attempt that died counts as failed; never run twice


@dataclass(frozen=True)
class StepContext:
    """Handed to a step function that declares a first parameter of this type."""

    run_id: str
    op_id: str
    name: str
    attempt: int
    idempotency_key: str  # stable across attempts and replays: give it to external systems
    logger: logging.Logger
    artifacts: RunArtifacts | None  # this run's artifacts only
    # The control plane over the same store: a step may read, retry or cancel other runs
    # (its outcome is journaled, so replay does not do it again). Workflow code outside
    # steps has no such handle.
    client: Client | None = None


@dataclass(frozen=True)
class WaitDecision:
    """What ``wait_for_condition`` does after a check: stop, or check again after a delay."""

    should_continue: bool
    delay: timedelta = timedelta(0)

    @classmethod
    def stop(cls) -> WaitDecision:
        return cls(False)

    @classmethod
    def continue_after(cls, delay: timedelta) -> WaitDecision:
        return cls(True, delay)


def poll_until(
    done: Callable[[Any], bool],
    *,
    every: timedelta = timedelta(seconds=5),
    backoff_rate: float = 1.0,
    max_interval: timedelta = timedelta(minutes=5),
    max_attempts: int | None = None,
) -> Callable[[Any, int], WaitDecision]:
    """A wait strategy: stop when ``done(state)``; else check again, backing off."""

    def strategy(state: Any, attempt: int) -> WaitDecision:
        if done(state):
            return WaitDecision.stop()
        if max_attempts is not None and attempt >= max_attempts:
            raise ConditionTimedOut(f"condition still not met after {attempt} checks")
        seconds = every.total_seconds() * backoff_rate ** (attempt - 1)
        return WaitDecision.continue_after(
            timedelta(seconds=min(seconds, max_interval.total_seconds()))
        )

    return strategy


# --- what the engine reads off callables ----------------------------------------------


def brief(error: ErrorInfo) -> dict[str, Any]:
    return {"type": error.type, "message": error.message}


def callable_name(fn: Callable[..., Any]) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return "lambda" if name == "<lambda>" else name


@functools.lru_cache(maxsize=1024)
def is_async(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


@functools.lru_cache(maxsize=1024)
def wants_step_context(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if not params:
        return False
    annotation = params[0].annotation
    return annotation is StepContext or annotation == "StepContext"


@functools.lru_cache(maxsize=1024)
def return_type(fn: Callable[..., Any]) -> Any:
    while isinstance(fn, functools.partial):
        fn = fn.func
    try:
        hint = get_type_hints(fn).get("return")
    except Exception:
        return None
    if hint is None or hint is type(None):
        return None
    origin = getattr(hint, "__origin__", None)
    if origin is not None and getattr(origin, "__name__", "") in ("Awaitable", "Coroutine"):
        return None
    return hint
