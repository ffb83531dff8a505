"""cadenza: durable, event-driven agentic workflows in plain Python.

A workflow is an ``async def`` taking a :class:`Context`; every model call, tool call and
wait goes through the context as a durable operation, checkpointed before the workflow
moves on, so a crashed or suspended run resumes exactly where it was.
"""

from cadenza.batch import BatchItem, BatchResult, CompletionConfig, CompletionReason, ItemStatus
from cadenza.clock import Clock, FakeClock
from cadenza.config import open_engine
from cadenza.context import Callback, Context
from cadenza.engine import Engine, Worker, drive
from cadenza.errors import (
    BatchFailed,
    CadenzaError,
    CallbackAlreadyCompleted,
    CallbackFailed,
    CallbackTimedOut,
    CallbackTokenExpired,
    ChildContextFailed,
    ConfigurationError,
    ErrorInfo,
    EventWaitTimedOut,
    InvalidCallbackToken,
    InvalidInput,
    InvocationFailed,
    NonDeterminismError,
    OperationFailed,
    RunCancelled,
    RunFailed,
    RunNotFound,
    RunStateError,
    SerializationError,
    StepFailed,
    StepInterrupted,
    StepTimedOut,
    WorkflowDefinitionError,
    WorkflowNotFound,
)
from cadenza.events import Event, compile_pattern
from cadenza.operations import StepContext, StepSemantics, WaitDecision, poll_until
from cadenza.ports.run_store import Rule, RunOrigin, RunRecord, RunStatus
from cadenza.retry import RetryPolicy
from cadenza.state import AgentState, AgentStatus
from cadenza.workflow import WorkflowDefinition, workflow

__version__ = "0.1.0"

__all__ = [
    "AgentState",
    "AgentStatus",
    "BatchFailed",
    "BatchItem",
    "BatchResult",
    "CadenzaError",
    "Callback",
    "CallbackAlreadyCompleted",
    "CallbackFailed",
    "CallbackTimedOut",
    "CallbackTokenExpired",
    "ChildContextFailed",
    "Clock",
    "CompletionConfig",
    "CompletionReason",
    "ConfigurationError",
    "Context",
    "Engine",
    "ErrorInfo",
    "Event",
    "EventWaitTimedOut",
    "FakeClock",
    "InvalidCallbackToken",
    "InvalidInput",
    "InvocationFailed",
    "ItemStatus",
    "NonDeterminismError",
    "OperationFailed",
    "RetryPolicy",
    "Rule",
    "RunCancelled",
    "RunFailed",
    "RunNotFound",
    "RunOrigin",
    "RunRecord",
    "RunStateError",
    "RunStatus",
    "SerializationError",
    "StepContext",
    "StepFailed",
    "StepInterrupted",
    "StepSemantics",
    "StepTimedOut",
    "WaitDecision",
    "Worker",
    "WorkflowDefinition",
    "WorkflowDefinitionError",
    "WorkflowNotFound",
    "__version__",
    "compile_pattern",
    "drive",
    "open_engine",
    "poll_until",
    "workflow",
]
