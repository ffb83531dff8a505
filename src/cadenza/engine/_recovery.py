"""``Engine.retry`` and ``Engine.fork``: read what a run recorded, decide (``_rewind``) what
the run keeps, and hand the decision to the store, which applies it atomically."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from cadenza.batch import BatchResult
from cadenza.engine._rewind import failure_path, fork_journal
from cadenza.errors import InvalidInput, RunNotFound, RunStateError, WorkflowNotFound
from cadenza.history import HistoryEvent
from cadenza.history import HistoryEventType as H
from cadenza.journal import OpRecord, OpStatus, OpType
from cadenza.operations import brief
from cadenza.ports.run_store import (
    CallbackKind,
    CallbackStatus,
    Redrive,
    RunOrigin,
    RunRecord,
    RunStatus,
)
from cadenza.workflow import WorkflowDefinition, load, lookup

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine

#: Runs that may be retried: they ended without succeeding.
RETRYABLE = (RunStatus.FAILED, RunStatus.CANCELLED)

KEEP_INPUT: Any = object()


async def retry(engine: Engine, run_id: str, version: str | None, by: str) -> RunRecord:
    run = await engine.store.get_run(run_id)
    if run.status not in RETRYABLE:
        raise RunStateError(_not_retryable(run))
    definition = _definition(run, version) if version is not None else None
    redrives = await _plan(engine, run, definition, by, caused_by=None)
    runs = await engine.store.redrive_runs(redrives, now=engine.clock.now())
    engine.poke()
    return runs[0]


async def fork(
    engine: Engine,
    run_id: str,
    from_op: str,
    input: Any,
    state: dict[str, Any] | None,
    version: str | None,
) -> RunRecord:
    source = await engine.store.get_run(run_id)
    journal = await engine.store.load_journal(run_id)
    if from_op not in {rec.op_id for rec in journal}:
        raise InvalidInput(
            f"run {run_id} has no operation {from_op!r}; its operations are listed by"
            f" 'cadenza runs history {run_id}' (column OP)"
        )
    if state is not None and not isinstance(state, dict):
        raise InvalidInput("the state to fork with must be a JSON object (an agent state document)")
    definition: WorkflowDefinition | None = None
    if version is not None or input is not KEEP_INPUT:
        definition = _definition(source, version or source.version)
    fork_id = f"r-{uuid.uuid4().hex[:12]}"
    codec = engine.codec
    # Large values live in the scope of the run they belong to: the fork takes copies.
    copied = [
        await codec.adopt_record(rec, source_run_id=run_id, run_id=fork_id)
        for rec in fork_journal(journal, await engine.store.history(run_id), from_op)
    ]
    if definition is not None and input is not KEEP_INPUT:
        encoded = await engine.encode_input(definition, input, run_id=fork_id)
    else:
        encoded = await codec.adopt(source.input, source_run_id=run_id, run_id=fork_id) or "null"
    now = engine.clock.now()
    run = RunRecord(
        run_id=fork_id,
        workflow=source.workflow,
        version=definition.version if definition is not None else source.version,
        status=RunStatus.PENDING,
        input=encoded,
        created_at=now,
        updated_at=now,
        module=(definition.module if definition is not None else None) or source.module,
        queue=source.queue,
        priority=source.priority,
        trace_id=uuid.uuid4().hex,
        origin=RunOrigin(run_id, from_op, state),
        tenant=source.tenant,
    )
    # The copied journal took the branches the source's patch markers chose (ctx.patched).
    patches = (source.state or {}).get("metadata", {}).get("patches")
    run = run.evolve(state=engine.initial_state(run, {"patches": patches} if patches else {}))
    origin = {"run_id": run_id, "op_id": from_op}
    events = [
        HistoryEvent(
            seq=0,
            type=H.EXECUTION_STARTED,
            timestamp=now,
            details={"workflow": run.workflow, "version": run.version, "forked_from": origin},
        ),
        HistoryEvent(
            seq=0,
            type=H.EXECUTION_FORKED,
            timestamp=now,
            op_id=from_op,
            details={
                **origin,
                "copied": len(copied),
                "input": "replaced" if input is not KEEP_INPUT else "kept",
                "state": "replaced" if state is not None else "kept",
                "by": engine.owner,
            },
        ),
    ]
    created = await engine.store.fork_run(run, events, copied)
    engine.poke()
    return created


async def _plan(
    engine: Engine,
    run: RunRecord,
    definition: WorkflowDefinition | None,
    by: str,
    caused_by: str | None,
) -> list[Redrive]:
    """The redrive of ``run`` and of the child runs whose failure it waits on again."""
    journal, callbacks = await engine.store.load_activation(run.run_id)
    by_id = {cb.callback_id: cb for cb in callbacks}
    path: list[OpRecord] = []
    if run.status == RunStatus.FAILED and (run.error is None or run.error.type != _ND):
        # A run that failed replaying has nothing to drop: its journal is the truth, and
        # the retry replays it again (under the code that is deployed now).
        batches = {
            rec.op_id
            for rec in journal
            if rec.type in (OpType.MAP, OpType.PARALLEL)
            and rec.status == OpStatus.SUCCEEDED
            and _failures(await engine.codec.decode(rec.result, run_id=run.run_id))
        }
        path = failure_path(journal, await engine.store.history(run.run_id), batches)
    drop: list[str] = []
    reset: list[OpRecord] = []
    reopen: list[str] = []
    children: list[RunRecord] = []
    for rec in path:
        child = await _child(engine, rec)
        if child is not None and child.status in RETRYABLE:
            # The invocation waits for its child again; the child is retried in turn.
            reset.append(rec.evolve(status=OpStatus.PENDING, error=None, ended_at=None))
            reopen.append(rec.data["callback_id"])
            children.append(child)
        else:
            drop.append(rec.op_id)
    for rec in journal:  # invocations a cancellation left waiting on cancelled children
        callback = by_id.get(rec.data.get("callback_id", ""))
        if rec.type == OpType.INVOKE and not rec.status.terminal and callback is not None:
            child = await _child(engine, rec)
            if (
                child is not None
                and child.status in RETRYABLE
                and callback.kind == CallbackKind.INVOKE
                and callback.status == CallbackStatus.PENDING
            ):
                children.append(child)
    details: dict[str, Any] = {"previous_status": str(run.status), "by": by}
    if run.error is not None:
        details["error"] = brief(run.error)
    if drop or reset:
        details["dropped"] = drop + [rec.op_id for rec in reset]
    if caused_by is not None:
        details["parent_run_id"] = caused_by
    if definition is not None and definition.version != run.version:
        details["version"] = {"from": run.version, "to": definition.version}
    state = json.loads(json.dumps(run.state, default=str))
    metadata = state.setdefault("metadata", {})
    metadata["redriveCount"] = int(metadata.get("redriveCount") or 0) + 1
    failed_op = next((r for r in reversed(path) if r.type not in _NOT_CAUSES), None)
    redrive = Redrive(
        run.run_id,
        run.lease_epoch,
        HistoryEvent(
            seq=0,
            type=H.EXECUTION_REDRIVEN,
            timestamp=engine.clock.now(),
            op_id=failed_op.op_id if failed_op else None,
            name=failed_op.name if failed_op else None,
            details=details,
        ),
        drop=drop,
        reset=reset,
        reopen=reopen,
        version=definition.version if definition is not None else None,
        module=definition.module if definition is not None else None,
        state=state,
    )
    plans = [redrive]
    for child in children:
        plans += await _plan(engine, child, None, by, caused_by=run.run_id)
    return plans


def _failures(data: Any) -> int:
    return BatchResult.from_dict(data).failure_count


async def _child(engine: Engine, rec: OpRecord) -> RunRecord | None:
    if rec.type != OpType.INVOKE or "child_run_id" not in rec.data:
        return None
    try:
        return await engine.store.get_run(rec.data["child_run_id"])
    except RunNotFound:
        return None


def _definition(run: RunRecord, version: str) -> WorkflowDefinition:
    definition = lookup(run.workflow, version)
    if definition is None and run.module:
        try:
            load(run.module)
        except WorkflowNotFound:
            pass
        definition = lookup(run.workflow, version)
    if definition is None:
        raise WorkflowNotFound(
            f"workflow {run.workflow!r} version {version!r} is not registered in this process;"
            " import the module that defines it (e.g. cadenza runs retry RUN --version V"
            " --workflows MODULE)"
        )
    return definition


def _not_retryable(run: RunRecord) -> str:
    if run.status == RunStatus.SUCCEEDED:
        return (
            f"run {run.run_id} succeeded; there is nothing to retry. To run part of it"
            f" again, fork it: cadenza runs fork {run.run_id} --from OP"
        )
    return (
        f"run {run.run_id} has not ended (it is {run.status}); only a failed or cancelled"
        f" run can be retried. Wait for it, or stop it first: cadenza cancel {run.run_id}"
    )


_ND = "NonDeterminismError"
_NOT_CAUSES = (OpType.CONTEXT, OpType.MAP, OpType.PARALLEL, OpType.EMIT, OpType.NOW)
