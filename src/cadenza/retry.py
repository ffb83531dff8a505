"""RetryPolicy: how often and how patiently a failing step is tried again.

The wait before each retry is durable: the failed attempt and the time of the next one are
checkpointed, and the run suspends until then, holding no process.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from cadenza.errors import CadenzaError, WorkflowDefinitionError

ErrorMatcher = type[BaseException] | str


@dataclass(frozen=True)
class RetryPolicy:
    """Retry with exponential backoff.

    ``retryable_errors``, when given, lists the only errors retried; ``non_retryable_errors``
    are never retried. Both take exception classes or class names ("ValueError"). A cadenza
    error whose ``retryable`` is False is never retried. ``jitter`` spreads each delay by
    up to that fraction, so many runs failing together do not retry together.

    The defaults (3 attempts, 1 s then 2 s apart) fail a step that keeps failing within
    seconds; AWS's durable execution SDK waits longer by default (6 attempts, 5 s to 60 s).
    docs/architecture.md says why, and how to get AWS's values.
    """

    max_attempts: int = 3
    initial_interval: timedelta = timedelta(seconds=1)
    backoff_rate: float = 2.0
    max_interval: timedelta = timedelta(minutes=5)
    jitter: float = 0.1
    retryable_errors: Sequence[ErrorMatcher] = field(default_factory=tuple)
    non_retryable_errors: Sequence[ErrorMatcher] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise WorkflowDefinitionError("RetryPolicy.max_attempts must be at least 1")
        if self.initial_interval < timedelta(0) or self.max_interval < timedelta(0):
            raise WorkflowDefinitionError("RetryPolicy intervals must not be negative")
        if self.backoff_rate < 1:
            raise WorkflowDefinitionError("RetryPolicy.backoff_rate must be at least 1.0")
        if not 0 <= self.jitter <= 1:
            raise WorkflowDefinitionError("RetryPolicy.jitter must be between 0 and 1")

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
        if self.jitter:
            spread = seconds * self.jitter
            seconds += (rng or random).uniform(-spread, spread)
        return timedelta(seconds=max(seconds, 0.0))


NO_RETRY = RetryPolicy(max_attempts=1)


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
