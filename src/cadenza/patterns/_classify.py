"""Error classification for the recovery workflow: explicit lists, then the error's own
``retryable`` flag, then "unknown".

The reference architecture's recovery state machine starts by classifying the error; the
class decides the branch: retry the same work (transient), try another plan
(replannable), or ask a person (permanent, or unknown: escalate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from cadenza.patterns._notify import FileNotifier, NotifierLike

__all__ = [
    "PERMANENT_ERRORS",
    "REPLANNABLE_ERRORS",
    "TRANSIENT_ERRORS",
    "ErrorClass",
    "RecoveryConfig",
    "classify_error",
]


class ErrorClass(StrEnum):
    TRANSIENT = "transient"  # the same work may succeed if tried again
    REPLANNABLE = "replannable"  # the approach failed; another plan may work
    PERMANENT = "permanent"  # nothing automatic will help: a person must decide
    UNKNOWN = "unknown"  # cannot tell: escalate


TRANSIENT_ERRORS = frozenset(
    {
        "ModelThrottled",
        "ModelUnavailable",
        "ModelTimeout",
        "StepTimedOut",
        "StepInterrupted",
        "TimeoutError",
        "ConnectionError",
        "StoreError",
        "NotificationFailed",
    }
)
REPLANNABLE_ERRORS = frozenset(
    {
        "StructuredOutputError",
        "ModelResponseError",
        "ToolError",
        "UnknownTool",
        "ToolNotAllowed",
        "ToolArgumentsInvalid",
        "MaxTurns",
        "EmptyReply",
    }
)
PERMANENT_ERRORS = frozenset(
    {
        "BudgetExceeded",
        "ModelNotFound",
        "ConfigurationError",
        "MissingDependency",
        "InvalidInput",
        "WorkflowDefinitionError",
        "PermissionError",
    }
)


@dataclass(frozen=True)
class RecoveryConfig:
    """How the recovery workflow classifies errors and whom it asks."""

    transient: frozenset[str] = TRANSIENT_ERRORS
    replannable: frozenset[str] = REPLANNABLE_ERRORS
    permanent: frozenset[str] = PERMANENT_ERRORS
    max_retries: int = 3  # retry requests per failure chain, then a person decides
    retry_workflow: str | None = None  # invoke it with the detail instead of emitting an event
    notify: NotifierLike = field(default_factory=FileNotifier)
    escalate_to: NotifierLike | None = None  # for unknown errors; default: notify
    timeout: timedelta | None = timedelta(days=1)


def classify_error(detail: dict[str, Any], config: RecoveryConfig | None = None) -> ErrorClass:
    """Explicit lists first (permanent, transient, replannable), then the error's own
    ``retryable`` flag; anything else is unknown."""
    config = config or RecoveryConfig()
    error_type = str(detail.get("error_type") or "")
    if error_type in config.permanent:
        return ErrorClass.PERMANENT
    if error_type in config.transient:
        return ErrorClass.TRANSIENT
    if error_type in config.replannable:
        return ErrorClass.REPLANNABLE
    if detail.get("retryable") is True:
        return ErrorClass.TRANSIENT
    return ErrorClass.UNKNOWN
