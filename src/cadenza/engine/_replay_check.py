"""Replay stored runs against the current code without executing or writing anything.

Each run's journal is replayed from the top; the check stops at the first operation the
journal has no outcome for (what the run would execute next) and counts the run as
compatible. A run the code asks something else of than its journal recorded would fail with
NonDeterminismError on its next activation: that is what the check reports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from cadenza.engine.activation import Activation
from cadenza.ports.run_store import RunStatus

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine
    from cadenza.workflow import WorkflowDefinition


@dataclass(frozen=True)
class ReplayCheckResult:
    run_id: str
    status: str  # the run's stored status
    compatible: bool
    op_id: str | None = None  # where replay diverged
    recorded: str | None = None  # what the journal holds there
    asked: str | None = None  # what the current code asks for there
    message: str | None = None
    replayed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def replay_check(
    engine: Engine, definition: WorkflowDefinition, *, limit: int = 50
) -> list[ReplayCheckResult]:
    runs = await engine.store.list_runs(workflow=definition.name, limit=limit)
    results = []
    # Runs stay on the version that started them: only this version's runs replay this code.
    for run in (r for r in runs if r.version == definition.version):
        journal, callbacks = await engine.store.load_activation(run.run_id)
        act = Activation(engine, run, definition, journal, callbacks, check_only=True)
        outcome = await act.execute()
        results.append(_judge(run.status, act, outcome.status, outcome.replayed, outcome.error))
    return results


def _judge(
    stored: RunStatus, act: Activation, status: RunStatus | None, replayed: int, error: Any
) -> ReplayCheckResult:
    run_id = act.run.run_id
    if act.divergence is not None:
        op_id, recorded, asked = act.divergence
        return ReplayCheckResult(
            run_id,
            stored,
            False,
            op_id,
            recorded,
            asked,
            error.message if error else None,
            replayed,
        )
    # Replay ran off the end of the code: a finished run must end the way it ended.
    if act.check_completed and stored == RunStatus.FAILED:
        return ReplayCheckResult(
            run_id,
            stored,
            False,
            message="the run failed, but replaying its journal now returns a result",
            replayed=replayed,
        )
    if status == RunStatus.FAILED and stored == RunStatus.SUCCEEDED:
        what = f"{error.type}: {error.message}" if error else "an error"
        return ReplayCheckResult(
            run_id,
            stored,
            False,
            message=f"the run succeeded, but replaying its journal now raises {what}",
            replayed=replayed,
        )
    return ReplayCheckResult(run_id, stored, True, replayed=replayed)
