"""What a :class:`~cadenza.Context` needs from whatever runs it: the runtime interface.

The context and the operations' machinery (``_steps``, ``_callbacks``, ``_batching``,
``_conditions``, ``_patches``) are written against this interface alone; the engine's
``Activation`` implements it. So the dependency points one way, engine → context, and
workflow code holds a facade whose only way down is this narrow surface: no path to the
engine object, its store or its other runs.

It is a Protocol rather than an ABC because the activation keeps most of it as plain
attributes (the journal, the state, the counters), which abstract properties would forbid;
``Activation`` names it as a base, so the type checker holds it to every member.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from cadenza._signals import Fatal, Suspend
from cadenza.history import HistoryEventType
from cadenza.journal import OpRecord
from cadenza.ports.artifact_store import RunArtifacts
from cadenza.ports.run_store import CallbackRecord, CallbackResolution, RunRecord
from cadenza.retry import RetryPolicy, RetryStrategy
from cadenza.security.tokens import CallbackTokens
from cadenza.serde import RunCodec
from cadenza.state import AgentState
from cadenza.workflow import WorkflowDefinition

if TYPE_CHECKING:
    from cadenza.client import Client

__all__ = ["Runtime"]


class Runtime(Protocol):
    """One activation of one run, as its operations see it."""

    # --- the run and its journal ------------------------------------------------------
    run: RunRecord
    definition: WorkflowDefinition
    journal: dict[str, OpRecord]  # op id -> its latest record, live records included
    callbacks: dict[str, CallbackRecord]  # callback id -> the callback (and child runs)
    state: AgentState
    codec: RunCodec  # values in the run's own artifact scope
    tokens: CallbackTokens
    default_retry: RetryPolicy | RetryStrategy  # for steps without their own retry=
    redrives: int  # how often the run was retried: a retry emits events anew
    patches: set[str]  # change ids the run took the new branch of (ctx.patched)
    patch_memo: dict[str, bool]  # the answer per change id, fixed for the activation
    # Counters the activation reports, and the order in which child contexts finish.
    replayed: int
    executed: int
    invocation: int
    children_finished: int

    def now(self) -> datetime: ...

    def deterministic_id(self, *parts: str) -> str:
        """An id derived from the run id and ``parts``: the same on every replay."""
        ...

    # --- recording ----------------------------------------------------------------------
    def record(self, op: OpRecord) -> None: ...

    def note(self, type: HistoryEventType, op: OpRecord | None = None, **details: Any) -> None:
        """Add a history event (live work only)."""
        ...

    def add_callback(self, callback: CallbackRecord) -> None: ...

    def resolve(self, resolution: CallbackResolution) -> None: ...

    def add_event(self, event: dict[str, Any]) -> None:
        """An event envelope for the outbox, committed with the next checkpoint."""
        ...

    async def start_child_run(
        self, definition: WorkflowDefinition, input: Any, *, run_id: str, op_id: str
    ) -> None:
        """Create child run ``run_id`` of ``definition`` (started by operation ``op_id``)
        with the next checkpoint; its input is stored in its own scope."""
        ...

    def count_error(self) -> None: ...

    async def flush(self) -> None:
        """Commit what is buffered (RunCancelled when the run was cancelled meanwhile)."""
        ...

    # --- stopping -----------------------------------------------------------------------
    def suspend_until(self, when: datetime | None) -> Suspend:
        """The signal to raise for a run that must wait until ``when`` (None: until woken)."""
        ...

    def check_stop(self, op_id: str, rec: OpRecord | None) -> None: ...

    def nondeterminism(self, op_id: str, recorded: OpRecord, type: str, name: str) -> Fatal: ...

    def nondeterminism_in_finished(
        self, context_id: str, op_id: str | None = None, asked: str | None = None
    ) -> Fatal: ...

    # --- what a step may use ------------------------------------------------------------
    def attempt_scope(self, op: OpRecord) -> AbstractContextManager[object]:
        """Entered while a step attempt's function runs (instrumentation spans)."""
        ...

    def run_artifacts(self) -> RunArtifacts | None:
        """The run's view of the artifact store, when the deployment has one."""
        ...

    def control_client(self) -> Client:
        """The control plane over the same store, for step functions to read and recover
        other runs (a step's side effects are journaled, so this is safe there)."""
        ...

    def model_stream(self) -> Callable[[str, str], None] | None:
        """``send(op_id, text)`` for the pieces of a streamed model reply, or None when
        nobody listens (then the model is not asked to stream)."""
        ...

    async def check_spend(self, op_id: str) -> None:
        """Raise BudgetExceeded when the deployment's spend budget for this run's
        workflow or tenant is spent (called inside a model step, so journaled)."""
        ...
