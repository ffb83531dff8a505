"""The public API is exactly the curated ``cadenza.__all__``: adding or removing a name is a
deliberate change to this list."""

from __future__ import annotations

import cadenza

EXPECTED = [
    "AgentError",
    "AgentState",
    "AgentStatus",
    "BatchFailed",
    "BatchItem",
    "BatchResult",
    "BudgetExceeded",
    "CadenzaError",
    "Callback",
    "CallbackAlreadyCompleted",
    "CallbackFailed",
    "CallbackHeartbeatTimedOut",
    "CallbackNotFound",
    "CallbackTimedOut",
    "CallbackTokenError",
    "CallbackTokenExpired",
    "CatchUp",
    "CheckpointConflict",
    "ChildContextFailed",
    "Client",
    "Clock",
    "CompletionConfig",
    "CompletionReason",
    "ConditionTimedOut",
    "ConfigurationError",
    "Context",
    "Engine",
    "ErrorInfo",
    "Event",
    "EventWaitTimedOut",
    "Instrumentation",
    "InvalidCallbackToken",
    "InvalidEventPattern",
    "InvalidInput",
    "InvocationFailed",
    "ItemStatus",
    "JitterStrategy",
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
    "Overlap",
    "PatternError",
    "PayloadTooLarge",
    "PendingCallback",
    "ReplayCheckResult",
    "RetryDecision",
    "RetryPolicy",
    "Rule",
    "RunAlreadyExists",
    "RunCancelled",
    "RunFailed",
    "RunHandle",
    "RunNotFound",
    "RunOrigin",
    "RunRecord",
    "RunStateError",
    "RunStatus",
    "Schedule",
    "ScheduleNotFound",
    "SerDes",
    "SerDesContext",
    "SerializationError",
    "StepContext",
    "StepFailed",
    "StepInterrupted",
    "StepSemantics",
    "StepTimedOut",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "StructuredOutputError",
    "SyncClient",
    "SyncRunHandle",
    "ToolArgumentsInvalid",
    "ToolError",
    "ToolNotAllowed",
    "UnknownTool",
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


def test_all_lists_exactly_the_public_api() -> None:
    assert cadenza.__all__ == EXPECTED


def test_every_exported_name_is_importable() -> None:
    for name in cadenza.__all__:
        assert hasattr(cadenza, name), name
    namespace: dict[str, object] = {}
    exec("from cadenza import *", namespace)
    assert set(EXPECTED) <= set(namespace)


def test_exported_members_say_they_belong_to_cadenza() -> None:
    for name in cadenza.__all__:
        member = getattr(cadenza, name)
        module = getattr(member, "__module__", None)
        if module is not None and name != "__version__":
            assert module.split(".")[0] == "cadenza", f"{name} comes from {module}"
