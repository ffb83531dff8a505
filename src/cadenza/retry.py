"""RetryPolicy and retry strategies: how often and how patiently a failing step is tried again.

A step's ``retry=`` takes a RetryPolicy or any function ``(error, attempt) -> RetryDecision``
(a retry strategy, as in AWS's durable execution SDK). The wait before each retry is
durable: the failed attempt and the time of the next one are checkpointed, and the run
suspends until then, holding no process. The decision is taken once, live; replay reads
the recorded time, so neither jitter nor a strategy needs to be deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from cadenza.errors import CadenzaError, SerializationError, WorkflowDefinitionError

ErrorMatcher = type[BaseException] | str


class JitterStrategy(StrEnum):
    """How a RetryPolicy randomises each delay (the names of AWS's durable execution SDK).

    NONE waits exactly the computed delay; FULL draws from zero to it; HALF from half of
    it to it. A float ``jitter`` instead spreads the delay by up to that fraction either way.
    """

    NONE = "none"
    FULL = "full"
    HALF = "half"


@dataclass(frozen=True)
class RetryDecision:
    """What a retry strategy decided after a failed attempt: try again after ``delay``, or stop."""

    should_retry: bool
    delay: timedelta = timedelta(0)

    @classmethod
    def retry(cls, delay: timedelta) -> RetryDecision:
        return cls(True, delay)

    @classmethod
    def no_retry(cls) -> RetryDecision:
        return cls(False)


RetryStrategy = Callable[[BaseException, int], RetryDecision]
"""A function given the error and the 1-based number of the attempt that failed."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retry with exponential backoff.

    ``retryable_errors``, when given, lists the only errors retried; ``non_retryable_errors``
    are never retried. Both take exception classes or class names ("ValueError"). A cadenza
    error whose ``retryable`` is False is never retried. ``jitter`` spreads each delay by
    up to that fraction either way, or draws it as a JitterStrategy says (FULL, HALF, NONE),
    so many runs failing together do not retry together.

    The defaults (3 attempts, 1 s then 2 s apart) fail a step that keeps failing within
    seconds; AWS's durable execution SDK waits longer by default (6 attempts, 5 s to 60 s).
    docs/architecture.md says why, and how to get AWS's values.
    """

    max_attempts: int = 3
    initial_interval: timedelta = timedelta(seconds=1)
    backoff_rate: float = 2.0
    max_interval: timedelta = timedelta(minutes=5)
    jitter: float | JitterStrategy = 0.1
    retryable_errors: Sequence[ErrorMatcher] = field(default_factory=tuple)
    non_retryable_errors: Sequence[ErrorMatcher] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise WorkflowDefinitionError("RetryPolicy.max_attempts must be at least 1")
        if self.initial_interval < timedelta(0) or self.max_interval < timedelta(0):
            raise WorkflowDefinitionError("RetryPolicy intervals must not be negative")
        if self.backoff_rate < 1:
            raise WorkflowDefinitionError("RetryPolicy.backoff_rate must be at least 1.0")
        if not isinstance(self.jitter, JitterStrategy) and not 0 <= self.jitter <= 1:
            raise WorkflowDefinitionError(
                "RetryPolicy.jitter must be a fraction between 0 and 1 or a JitterStrategy"
                " (NONE, FULL, HALF)"
            )

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether to try again after ``attempt`` (1-based) failed with ``error``."""
        if attempt >= self.max_attempts:
            return False
        if _matches(error, self.non_retryable_errors):
            return False
        if self.retryable_errors:
            return _matches(error, self.retryable_errors)
        return not isinstance(error, CadenzaError) or error.retryable

    def delay(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """The wait after the failure of ``attempt`` (1-based)."""
        seconds = self.initial_interval.total_seconds() * self.backoff_rate ** (attempt - 1)
        seconds = min(seconds, self.max_interval.total_seconds())
        source = rng or random
        if self.jitter == JitterStrategy.FULL:
            seconds = source.uniform(0, seconds)
        elif self.jitter == JitterStrategy.HALF:
            seconds = source.uniform(seconds / 2, seconds)
        elif not isinstance(self.jitter, JitterStrategy) and self.jitter:
            spread = seconds * self.jitter
            seconds += source.uniform(-spread, spread)
        return timedelta(seconds=max(seconds, 0.0))

    def __call__(self, error: BaseException, attempt: int) -> RetryDecision:
        """The policy as a retry strategy."""
        if self.should_retry(error, attempt):
            return RetryDecision(True, self.delay(attempt))
        return RetryDecision(False)


NO_RETRY = RetryPolicy(max_attempts=1)


def decide(retry: RetryPolicy | RetryStrategy, error: BaseException, attempt: int) -> RetryDecision:
    """Ask ``retry`` whether to try again after ``attempt`` failed with ``error``.

    An error that says retrying cannot help (``retryable`` False on a cadenza error, or a
    result that cannot be serialised) is never retried, whatever a strategy function says:
    the next attempt would fail the same way. A RetryPolicy keeps its own rules, where
    ``retryable_errors`` may name such an error on purpose.
    """
    if isinstance(error, SerializationError):
        return RetryDecision(False)
    if isinstance(retry, RetryPolicy):
        return retry(error, attempt)
    if isinstance(error, CadenzaError) and not error.retryable:
        return RetryDecision(False)
    decision = retry(error, attempt)
    name = getattr(retry, "__qualname__", repr(retry))
    if not isinstance(decision, RetryDecision):
        raise WorkflowDefinitionError(
            f"retry strategy {name} returned {decision!r}; it must return a RetryDecision,"
            " e.g. RetryDecision(should_retry=True, delay=timedelta(seconds=5))"
        )
    if decision.should_retry and decision.delay < timedelta(0):
        raise WorkflowDefinitionError(
            f"retry strategy {name} asked to retry after a negative delay ({decision.delay});"
            " return a delay of zero or more"
        )
    return decision


def _matches(error: BaseException, matchers: Sequence[ErrorMatcher]) -> bool:
    names = {cls.__name__ for cls in type(error).__mro__}
    error_type = getattr(error, "error_type", None)
    if error_type:
        names.add(error_type)
    for matcher in matchers:
        if isinstance(matcher, str):
            if matcher in names:
                return True
        elif isinstance(error, matcher):
            return True
    return False
