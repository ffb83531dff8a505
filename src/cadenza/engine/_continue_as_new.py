"""``ctx.continue_as_new(input)``: end this run and start a fresh one of the same workflow.

A run that loops for weeks grows its journal by one record per operation, and every
activation replays all of it; history compaction cannot help there, since replay needs
every record. Continue-as-new (Temporal's name; AWS durable executions chain executions
the same way) bounds it: the run ends SUCCEEDED with no result, and in the same checkpoint
a new run of the same workflow version starts with ``input``, an empty journal, the same
trace, queue, priority and tenant. The two are linked in their histories
(``ExecutionContinuedAsNew`` names the new run; the new run's ``ExecutionStarted`` names
the old one), so ``cadenza runs trace`` shows the chain. Carry what the next run needs in
its input: the state document starts afresh.

Only a root run continues as new: a child run's result is what its parent waits for.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from cadenza.errors import WorkflowDefinitionError
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.ports.run_store import ChildRun, RunOutcome, RunRecord, RunStatus

if TYPE_CHECKING:
    from cadenza._signals import ContinueAsNew
    from cadenza.engine.activation import Activation


async def continued(act: Activation, signal: ContinueAsNew) -> RunOutcome | None:
    """End ``act``'s run and add the run that continues it to the final checkpoint."""
    run = act.run
    if act.check_only:
        return None  # a replay check stops here: it starts nothing
    if run.parent_run_id is not None:
        return act._failed(
            WorkflowDefinitionError(
                f"run {run.run_id} is a child run of {run.parent_run_id}, and only a root run"
                " can continue as new (its parent waits for its result); return the result,"
                " or loop in the parent"
            )
        )
    definition = act.definition
    new_id = f"r-{uuid.uuid4().hex[:12]}"
    now = act.now()
    try:
        encoded = await act.engine.encode_input(definition, signal.input, run_id=new_id)
    except Exception as exc:  # an input the workflow refuses fails this run, clearly
        return act._failed(exc)
    state = act.engine.initial_document(new_id, now)
    successor = RunRecord(
        run_id=new_id,
        workflow=definition.name,
        version=definition.version,
        status=RunStatus.PENDING,
        input=encoded,
        created_at=now,
        updated_at=now,
        module=definition.module,
        queue=run.queue,
        priority=run.priority,
        state=state,
        trace_id=run.trace_id,
        tenant=run.tenant,
    )
    started = HistoryEvent(
        seq=0,
        type=HistoryEventType.EXECUTION_STARTED,
        timestamp=now,
        details={
            "workflow": definition.name,
            "version": definition.version,
            "continued_from": run.run_id,
        },
    )
    act._buffer.children.append(ChildRun(successor, started))
    act.note(HistoryEventType.EXECUTION_CONTINUED_AS_NEW, run_id=new_id)
    act.state.status = act.state.get("status") or "COMPLETED"
    return RunOutcome(RunStatus.SUCCEEDED, result="null")
