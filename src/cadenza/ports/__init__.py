"""The small async ports the engine depends on; adapters live in ``cadenza.adapters``."""

from cadenza.ports.artifact_store import ArtifactStore, RunArtifacts, content_key, run_scope
from cadenza.ports.run_store import (
    DEFAULT_TENANT,
    ApiKeyRecord,
    CallbackKind,
    CallbackRecord,
    CallbackResolution,
    CallbackStatus,
    Checkpoint,
    CommitResult,
    OutboxEntry,
    Rule,
    RunOutcome,
    RunPage,
    RunRecord,
    RunStatus,
    RunStore,
)

__all__ = [
    "DEFAULT_TENANT",
    "ApiKeyRecord",
    "ArtifactStore",
    "CallbackKind",
    "CallbackRecord",
    "CallbackResolution",
    "CallbackStatus",
    "Checkpoint",
    "CommitResult",
    "OutboxEntry",
    "Rule",
    "RunArtifacts",
    "RunOutcome",
    "RunPage",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "content_key",
    "run_scope",
]
