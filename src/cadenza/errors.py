"""The one error tree of cadenza.

Caller mistakes (fix the code, the config or the input and try again) are kept apart from
run failures (something a durable operation reported, recorded in the journal and raised
again, identically, on every replay)::

    CadenzaError
    ├── ConfigurationError          a backend URL, secret or option is wrong
    │   ├── MissingDependency       an optional extra is not installed
    │   └── CassetteMismatch        [cadenza.testing] a call its cassette did not record
    ├── WorkflowDefinitionError     a workflow or pattern is defined wrongly
    ├── InvalidInput                input that is not valid JSON or fails its type
    │   ├── PayloadTooLarge
    │   ├── InvalidEventPattern
    │   └── RunAlreadyExists        the run id (or idempotency key, with another input) is taken
    ├── NotFound
    │   ├── RunNotFound
    │   ├── WorkflowNotFound
    │   ├── CallbackNotFound
    │   └── ScheduleNotFound
    ├── CallbackTokenError          a token that cannot complete anything
    │   ├── InvalidCallbackToken    forged, malformed, or bound to another run
    │   ├── CallbackTokenExpired
    │   └── CallbackAlreadyCompleted
    ├── RunStateError               the run is not in a state that allows the request
    ├── StoreError                  the run store refused a write
    │   ├── LeaseLost               another worker owns the run now (fencing)
    │   ├── CheckpointConflict      an external completion raced this checkpoint
    │   └── StoreUnavailable        retryable: the store takes no writes for now
    │       └── StoreFull           retryable: the disk holding the store is full
    ├── OperationFailed             a durable operation failed; raised in the workflow
    │   ├── StepFailed
    │   │   ├── StepTimedOut
    │   │   └── StepInterrupted     an at-most-once attempt died mid-flight
    │   ├── ChildContextFailed
    │   ├── InvocationFailed        a child run failed
    │   ├── CallbackFailed
    │   ├── CallbackTimedOut
    │   │   └── CallbackHeartbeatTimedOut   no heartbeat within heartbeat_timeout
    │   ├── EventWaitTimedOut
    │   ├── ConditionTimedOut
    │   ├── BatchFailed             map/parallel completion rules were not met
    │   ├── AgentError              an agent gave up (plans kept failing, turns ran out)
    │   └── PatternError            a pattern ran out of attempts (a chain, a supervisor)
    ├── NonDeterminismError         code and journal disagree on replay
    ├── SerializationError          a value cannot be stored as JSON
    ├── RunFailed                   raised to a caller awaiting a run that failed
    ├── NotificationFailed          [cadenza.patterns] a notifier could not deliver
    ├── ModelError                  a model call failed
    │   ├── ModelNotFound           unknown provider or model (also a ConfigurationError)
    │   ├── ModelThrottled          retryable: the provider asked us to slow down
    │   ├── ModelUnavailable        retryable: the provider or model is down or loading
    │   ├── ModelTimeout            retryable: no reply in time
    │   ├── ModelResponseError      a reply that cannot be understood
    │   ├── StructuredOutputError   a reply that failed its schema after the repairs
    │   ├── BudgetExceeded          the token or cost budget is spent
    │   └── ScriptExhausted         [cadenza.testing] a scripted model ran out of replies
    └── ToolError                   a tool call cannot be made; the message suits a model
        ├── UnknownTool
        ├── ToolNotAllowed          not on the agent's allow-list
        └── ToolArgumentsInvalid    arguments that fail the tool's schema
    RunCancelled (BaseException)    so that ``except Exception`` cannot swallow it

Each is importable from ``cadenza``, but for the few marked with the package they belong
to. ``tests/test_error_tree.py`` holds this drawing to the classes.

Every error knows whether retrying can help (``retryable``) and survives a round trip
through the store as an :class:`ErrorInfo`: a run that fails on one worker fails the same
way when replayed on another.
"""

from __future__ import annotations

import builtins
import traceback as _traceback
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "AgentError",
    "BatchFailed",
    "BudgetExceeded",
    "CadenzaError",
    "CallbackAlreadyCompleted",
    "CallbackFailed",
    "CallbackHeartbeatTimedOut",
    "CallbackNotFound",
    "CallbackTimedOut",
    "CallbackTokenError",
    "CallbackTokenExpired",
    "CheckpointConflict",
    "ChildContextFailed",
    "ConditionTimedOut",
    "ConfigurationError",
    "ErrorInfo",
    "EventWaitTimedOut",
    "InvalidCallbackToken",
    "InvalidEventPattern",
    "InvalidInput",
    "InvocationFailed",
    "LeaseLost",
    "MissingDependency",
    "ModelError",
    "ModelNotFound",
    "ModelResponseError",
    "ModelThrottled",
    "ModelTimeout",
    "ModelUnavailable",
    "NonDeterminismError",
    "NotFound",
    "OperationFailed",
    "PatternError",
    "PayloadTooLarge",
    "RunAlreadyExists",
    "RunCancelled",
    "RunFailed",
    "RunNotFound",
    "RunStateError",
    "ScheduleNotFound",
    "SerializationError",
    "StepFailed",
    "StepInterrupted",
    "StepTimedOut",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "StructuredOutputError",
    "ToolArgumentsInvalid",
    "ToolError",
    "ToolNotAllowed",
    "UnknownTool",
    "WorkflowDefinitionError",
    "WorkflowNotFound",
]


class CadenzaError(Exception):
    """Base of every error cadenza raises.

    ``retryable`` says whether the same request may succeed if tried again; a retry policy
    never retries an error whose ``retryable`` is False.
    """

    retryable: bool = False
    # Exit code of the CLI when this error ends a command; scripts rely on it.
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable

    def __str__(self) -> str:
        return self.message


# --- the caller's mistakes -------------------------------------------------------------


class ConfigurationError(CadenzaError):
    exit_code = 2


class MissingDependency(ConfigurationError):
    """An optional backend was asked for but its extra is not installed."""

    def __init__(self, what: str, extra: str) -> None:
        super().__init__(f"{what} needs the '{extra}' extra: pip install 'cadenza[{extra}]'")
        self.extra = extra


class WorkflowDefinitionError(CadenzaError):
    exit_code = 2


class InvalidInput(CadenzaError):
    exit_code = 2


class PayloadTooLarge(InvalidInput):
    pass


class InvalidEventPattern(InvalidInput):
    pass


class RunAlreadyExists(InvalidInput):
    """A run cannot be started as asked: its id is taken, or its idempotency key names a
    run started with another input. ``run_id`` is the existing run."""

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id

    @classmethod
    def id_taken(cls, run_id: str) -> RunAlreadyExists:
        return cls(
            f"a run with id {run_id!r} already exists; see it with 'cadenza runs show"
            f" {run_id}', or start the new run under another id",
            run_id=run_id,
        )


class NotFound(CadenzaError):
    exit_code = 3


class RunNotFound(NotFound):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r}; list runs with 'cadenza runs list'")
        self.run_id = run_id


class WorkflowNotFound(NotFound):
    pass


class ScheduleNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"no schedule named {name!r}; list schedules with 'cadenza schedules list'"
        )
        self.name = name


class CallbackNotFound(NotFound):
    @classmethod
    def to_wake(cls, run_id: str, callback_id: str) -> CallbackNotFound:
        """A checkpoint asked to resolve a callback its run does not have."""
        return cls(
            f"run {run_id} has no callback {callback_id!r} to resolve; nothing of this write"
            f" was stored. See the run's waits with 'cadenza runs show {run_id}'"
        )


class CallbackTokenError(CadenzaError):
    exit_code = 4


class InvalidCallbackToken(CallbackTokenError):
    pass


class CallbackTokenExpired(CallbackTokenError):
    pass


class CallbackAlreadyCompleted(CallbackTokenError):
    pass


class RunStateError(CadenzaError):
    exit_code = 5


# --- the store -------------------------------------------------------------------------


class StoreError(CadenzaError):
    retryable = True


class LeaseLost(StoreError):
    """The worker's lease on the run was taken over; its checkpoint was rejected."""

    retryable = False


class CheckpointConflict(StoreError):
    """A conditional part of a checkpoint no longer held; re-run the activation."""


class StoreUnavailable(StoreError):
    """The store cannot take writes for now (a full disk, an I/O error, a database that is
    down). Nothing of the refused write was stored; workers back off and resume by
    themselves once the store is back."""

    retryable = True
    exit_code = 6


class StoreFull(StoreUnavailable):
    """The disk holding the store (or the database's own size limit) is full."""


# --- run failures ----------------------------------------------------------------------


class OperationFailed(CadenzaError):
    """A durable operation failed. Raised identically live and on replay.

    ``error_type`` and ``message`` describe the original error; ``details`` holds what it
    carried (for example a model's raw reply); ``op_id`` and ``name`` say which operation.
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        error_type: str | None = None,
        op_id: str | None = None,
        name: str | None = None,
        details: dict[str, Any] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.error_type = error_type or type(self).__name__
        self.op_id = op_id
        self.name = name
        self.details = details or {}

    @property
    def is_configuration_error(self) -> bool:
        """Whether the original error was a :class:`ConfigurationError`: the code or the
        deployment must change, so asking again (a model, a planner) cannot help."""
        original = _cadenza_error_types().get(self.error_type)
        return original is not None and issubclass(original, ConfigurationError)


class StepFailed(OperationFailed):
    pass


class StepTimedOut(StepFailed):
    retryable = True


class StepInterrupted(StepFailed):
    retryable = True


class ChildContextFailed(OperationFailed):
    pass


class InvocationFailed(OperationFailed):
    pass


class CallbackFailed(OperationFailed):
    pass


class CallbackTimedOut(OperationFailed):
    pass


class CallbackHeartbeatTimedOut(CallbackTimedOut):
    """The callback's completer stopped sending heartbeats before its overall timeout."""


class EventWaitTimedOut(OperationFailed):
    pass


class ConditionTimedOut(OperationFailed):
    pass


class BatchFailed(OperationFailed):
    pass


class NonDeterminismError(CadenzaError):
    """The workflow asked for a different operation than the journal recorded here."""


class SerializationError(CadenzaError):
    pass


class RunFailed(CadenzaError):
    """Raised to whoever awaits the result of a run that ended in failure."""

    def __init__(self, run_id: str, error: ErrorInfo) -> None:
        super().__init__(f"run {run_id} failed: {error.type}: {error.message}")
        self.run_id = run_id
        self.error = error


class RunCancelled(BaseException):
    """The run was cancelled. A BaseException so ``except Exception`` does not swallow it."""


# --- round trip through the store ------------------------------------------------------


def _cadenza_error_types() -> dict[str, type[CadenzaError]]:
    found: dict[str, type[CadenzaError]] = {}
    pending: list[type[CadenzaError]] = [CadenzaError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending.extend(cls.__subclasses__())
    return found


@dataclass(frozen=True)
class ErrorInfo:
    """A failure as the journal keeps it: type, message, retryability and details."""

    type: str
    message: str
    retryable: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        details: dict[str, Any] = {}
        if isinstance(exc, OperationFailed):
            details = dict(exc.details)
            error_type = exc.error_type
        else:
            error_type = type(exc).__name__
            if isinstance(exc, CadenzaError):  # keep what it carries, e.g. a model's raw reply
                details = {
                    k: v
                    for k, v in vars(exc).items()
                    if not k.startswith("_")
                    and k not in ("message", "retryable")
                    and isinstance(v, str | int | float | bool | list | dict)
                }
                declared = getattr(exc, "details", None)
                if isinstance(declared, dict):
                    details.update(declared)
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        tb = "".join(_traceback.format_exception(exc)) if exc.__traceback__ else None
        return cls(
            type=error_type,
            message=message,
            retryable=bool(getattr(exc, "retryable", not isinstance(exc, CadenzaError))),
            details=details,
            traceback=tb,
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.retryable:
            data["retryable"] = True
        if self.details:
            data["details"] = self.details
        if self.traceback:
            data["traceback"] = self.traceback
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorInfo:
        return cls(
            type=data["type"],
            message=data["message"],
            retryable=bool(data.get("retryable", False)),
            details=dict(data.get("details") or {}),
            traceback=data.get("traceback"),
        )

    def to_exception(
        self,
        wrapper: builtins.type[OperationFailed],
        *,
        op_id: str | None = None,
        name: str | None = None,
    ) -> OperationFailed:
        """The exception raised in the workflow for this failure.

        An :class:`OperationFailed` subclass recorded by name comes back as itself; any
        other error (a ``ValueError`` in a step, say) comes back as ``wrapper`` carrying its
        type and message, so live execution and replay raise the same thing.
        """
        known = _cadenza_error_types().get(self.type)
        cls = known if known is not None and issubclass(known, OperationFailed) else wrapper
        return cls(
            self.message,
            error_type=self.type,
            op_id=op_id,
            name=name,
            details=self.details,
            retryable=self.retryable,
        )


# --- models and tools ------------------------------------------------------------------


class ModelError(CadenzaError):
    """A model call failed. Adapters translate their vendor's errors into the subclasses."""


class ModelNotFound(ModelError, ConfigurationError):
    """The ``provider:model`` name names no known provider, or the model does not exist."""


class ModelThrottled(ModelError):
    retryable = True


class ModelUnavailable(ModelError):
    retryable = True


class ModelTimeout(ModelError):
    retryable = True


class ModelResponseError(ModelError):
    """The provider answered with something that is not a usable reply."""


class StructuredOutputError(ModelError):
    """The reply still failed its schema after the repair attempts.

    ``raw_reply`` is the last reply as the model wrote it; ``errors`` the validation errors.
    """

    def __init__(self, message: str, *, raw_reply: str, errors: list[str]) -> None:
        super().__init__(message)
        self.raw_reply = raw_reply
        self.errors = list(errors)

    @property
    def details(self) -> dict[str, Any]:
        return {"raw_reply": self.raw_reply, "errors": self.errors}


class BudgetExceeded(ModelError):
    """The token or cost budget is spent; no further model call is made."""


class ToolError(CadenzaError):
    """A tool call cannot be made as asked. The message is written to be fed back to a model."""


class UnknownTool(ToolError):
    def __init__(self, name: str, available: list[str]) -> None:
        listing = ", ".join(sorted(available)) or "none"
        super().__init__(f"there is no tool named {name!r}; the tools you can call are: {listing}")
        self.tool = name
        self.available = sorted(available)


class ToolNotAllowed(ToolError):
    def __init__(self, name: str, allowed: list[str]) -> None:
        listing = ", ".join(sorted(allowed)) or "none"
        super().__init__(
            f"the tool {name!r} is not allowed for this agent; the tools you can call are: "
            f"{listing}"
        )
        self.tool = name
        self.allowed = sorted(allowed)


class ToolArgumentsInvalid(ToolError):
    def __init__(self, name: str, errors: list[str]) -> None:
        super().__init__(
            f"invalid arguments for tool {name!r}: "
            + "; ".join(errors)
            + ". Call it again with arguments that match its parameters."
        )
        self.tool = name
        self.errors = list(errors)

    @property
    def details(self) -> dict[str, Any]:
        return {"tool": self.tool, "errors": self.errors}


# --- agents ----------------------------------------------------------------------------


class AgentError(OperationFailed):
    """An agent gave up: its plans kept failing, or it ran out of turns or budget.

    An ``AgentError`` event with the same details is published on the bus first, so a
    rule can start a recovery workflow.
    """


# --- patterns --------------------------------------------------------------------------


class PatternError(OperationFailed):
    """A reasoning pattern (``cadenza.patterns``) ran out of options: a chain step kept
    failing its gate after its retries and go-backs, every branch of a fan-out failed, a
    supervisor's re-plans ran out. ``details`` says what was tried and what went wrong."""
