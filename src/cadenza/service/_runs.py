"""``/api/v1/runs``: start runs, list and read them, and act on them."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import TypeAdapter, ValidationError

from cadenza.engine._recovery import KEEP_INPUT
from cadenza.engine.engine import Engine
from cadenza.errors import CadenzaError, RunFailed, RunStateError, WorkflowNotFound
from cadenza.journal import OpType
from cadenza.ports.run_store import DEFAULT_TENANT, RunPage, RunRecord, RunStatus
from cadenza.service._access import run_of
from cadenza.service._audit import record_action
from cadenza.service._auth import Principal, client_of, require
from cadenza.service._models import (
    ForkRun,
    HistoryEntry,
    RetryRun,
    RunDetail,
    RunList,
    RunResult,
    RunSummary,
    StartRun,
    WaitOut,
)
from cadenza.service._problems import Problem
from cadenza.workflow import WorkflowDefinition, lookup, registered

router = APIRouter(prefix="/runs", tags=["runs"])

Reader = Annotated[Principal, Depends(require("read"))]
Starter = Annotated[Principal, Depends(require("start"))]
Operator = Annotated[Principal, Depends(require("operate"))]
RunId = Annotated[str, "the run's id"]

#: Longest a request may wait for a run to end (``?wait=``).
MAX_WAIT_SECONDS = 60.0


def _engine(request: Request) -> Engine:
    return client_of(request).engine


def workflow_named(name: str, version: str | None = None) -> WorkflowDefinition:
    """A registered workflow by name (or ``MODULE:WORKFLOW``), newest version by default."""
    definition = lookup(name, version)
    if definition is None and ":" in name:
        matches = [d for d in registered() if d.module == name]
        if version is not None:
            matches = [d for d in matches if d.version == version]
        definition = matches[-1] if matches else None
    if definition is None:
        known = ", ".join(sorted({d.name for d in registered()})) or "none"
        raise WorkflowNotFound(
            f"no workflow {name!r}{f' version {version}' if version else ''} is registered in"
            f" this service (registered: {known}); start 'cadenza serve -w MODULE:WORKFLOW'"
        )
    return definition


def validated_input(definition: WorkflowDefinition, value: Any) -> Any:
    """The input checked against the workflow's input type: 422 listing every error."""
    if not definition.takes_input:
        return value
    try:
        TypeAdapter(definition.input_type).validate_python(value)
    except ValidationError as exc:
        errors = [
            {"loc": ["input", *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False)
        ]
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:5])
        raise Problem(
            422,
            "Unprocessable Content",
            f"the input does not fit workflow {definition.name!r}: {where}; its JSON Schema"
            f" is at /api/v1/workflows/{definition.name}",
            extra={"exit_code": 2, "error": "InvalidInput", "errors": errors},
        ) from None
    return value


@router.post(
    "",
    status_code=201,
    response_model=RunSummary,
    responses={200: {"description": "the run an earlier request with this key started"}},
)
async def start_run(
    body: StartRun,
    request: Request,
    response: Response,
    principal: Starter,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RunSummary:
    """Start a run; a worker executes it. 201 with the new run, or 200 with the run an
    earlier request with the same ``Idempotency-Key`` and input started."""
    engine = _engine(request)
    definition = workflow_named(body.workflow, body.version)
    value = validated_input(definition, body.input)
    run_id = body.run_id or f"r-{uuid.uuid4().hex[:12]}"
    if body.run_id and principal.tenant != DEFAULT_TENANT:
        # Run ids are unique per store: a tenant's own carry its name, so that one
        # tenant can neither take nor detect another's.
        if not body.run_id.startswith(f"{principal.tenant}."):
            raise Problem(
                422,
                "Unprocessable Content",
                f"a run id chosen by tenant {principal.tenant!r} starts with"
                f" '{principal.tenant}.', e.g. {principal.tenant}.{body.run_id}; or leave"
                " run_id out for a generated one",
                extra={"exit_code": 2, "error": "InvalidInput"},
            )
    run = await engine.start(
        definition,
        value,
        run_id=run_id,
        # Keys are the caller's own: scoped by tenant, so two tenants never collide.
        idempotency_key=f"{principal.tenant}:{idempotency_key}" if idempotency_key else None,
        queue=body.queue,
        priority=body.priority,
        tenant=principal.tenant,
    )
    if run.run_id != run_id or run.tenant != principal.tenant:
        response.status_code = 200
    else:
        await record_action(engine, run.run_id, "start", principal.audit())
    response.headers["Location"] = f"{request.url.path}/{run.run_id}"
    return RunSummary.of(run)


def _cursor(run: RunRecord) -> str:
    text = json.dumps({"c": run.created_at.isoformat(), "r": run.run_id})
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _page(cursor: str) -> RunPage:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return RunPage(datetime.fromisoformat(data["c"]), str(data["r"]))
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise Problem(
            422,
            "Unprocessable Content",
            "the cursor is not one this API handed out; pass the next_cursor of a page as is",
            extra={"exit_code": 2, "error": "InvalidInput"},
        ) from None


@router.get("", response_model=RunList)
async def list_runs(
    request: Request,
    principal: Reader,
    status: RunStatus | None = None,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    q: Annotated[str | None, Query(max_length=200, description="text in id, name or input")] = None,
    tenant: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    include_result: bool = False,
) -> RunList:
    """The tenant's runs, newest first, a page at a time."""
    if tenant is not None and tenant != principal.tenant:
        return RunList(runs=[])  # a key sees its own tenant only
    limit = min(limit, request.app.state.settings.max_page_size)
    runs = await _engine(request).store.list_runs(
        status=status,
        workflow=workflow,
        tenant=principal.tenant,
        created_after=created_after,
        created_before=created_before,
        text=q or None,
        after=_page(cursor) if cursor else None,
        limit=limit + 1,
    )
    more = len(runs) > limit
    runs = runs[:limit]
    summaries = [RunSummary.of(r) for r in runs]
    if include_result:
        engine = _engine(request)
        for summary, run in zip(summaries, runs, strict=True):
            summary.result = await _value(engine, run.result, run, "the result")
    return RunList(runs=summaries, next_cursor=_cursor(runs[-1]) if more else None)


async def _value(engine: Engine, text: str | None, run: RunRecord, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(await engine.codec.expand(text, run_id=run.run_id, what=what))
    except CadenzaError as exc:  # an artifact gone missing: say so instead of failing
        return {"unreadable": str(exc)}


@router.get("/{run_id}", response_model=RunDetail)
async def get_run(run_id: RunId, request: Request, principal: Reader) -> RunDetail:
    """Status, input, result or error, steps, children and what the run waits on."""
    engine = _engine(request)
    run = await run_of(engine, principal, run_id)
    counts: dict[str, int] = {}
    for op in await engine.store.load_journal(run_id):
        if op.type == OpType.STEP:
            counts[str(op.status)] = counts.get(str(op.status), 0) + 1
    children = await engine.store.list_runs(parent_run_id=run_id, limit=1000)
    return RunDetail(
        **RunSummary.of(run).model_dump(exclude={"result"}),
        input=await _value(engine, run.input, run, "the input"),
        result=await _value(engine, run.result, run, "the result"),
        steps=counts,
        waiting_for=await _waits(engine, principal, run),
        children=[RunSummary.of(c) for c in children],
        agent_status=run.state.get("status"),
        usage=run.state.get("metadata", {}).get("usage"),
    )


@router.get("/{run_id}/result", response_model=RunResult)
async def run_result(
    run_id: RunId,
    request: Request,
    principal: Reader,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, description="seconds")] = 0,
) -> RunResult:
    """The result of a run that succeeded (waiting up to ``wait`` seconds for it to end):
    409 when it failed or was cancelled (exit code 1) or has not ended (exit code 5)."""
    client = client_of(request)
    run = await run_of(client.engine, principal, run_id)
    if wait > 0 and not run.status.terminal:
        try:
            await client.get_handle(run_id, result_type=None).result(
                timeout=timedelta(seconds=wait)
            )
        except (RunFailed, RunStateError):
            pass  # told below, from the run as it is now
        run = await client.engine.store.get_run(run_id)
    if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise (
            RunFailed(run_id, run.error)
            if run.error
            else RunStateError(f"run {run_id} is {run.status} without a recorded error")
        )
    if not run.status.terminal:
        raise RunStateError(
            f"run {run_id} has not ended yet (it is {run.status}); ask again with ?wait=30,"
            f" or see GET /api/v1/runs/{run_id}"
        )
    return RunResult(
        run_id=run_id,
        status=run.status,
        result=await _value(client.engine, run.result, run, "the result"),
    )


@router.get("/{run_id}/history", response_model=list[HistoryEntry])
async def run_history(
    run_id: RunId,
    request: Request,
    principal: Reader,
    after_seq: Annotated[int, Query(ge=0)] = 0,
) -> list[HistoryEntry]:
    """Every event of the run in order, the audit trail (``ActionRequested``) included."""
    engine = _engine(request)
    await run_of(engine, principal, run_id)
    return [HistoryEntry.of(e) for e in await engine.store.history(run_id, after_seq=after_seq)]


@router.get("/{run_id}/state", response_model=dict[str, Any])
async def run_state(run_id: RunId, request: Request, principal: Reader) -> dict[str, Any]:
    """The run's agent state document (status, goal, plan, context, metadata)."""
    return (await run_of(_engine(request), principal, run_id)).state


@router.get("/{run_id}/callbacks", response_model=list[WaitOut])
async def run_callbacks(run_id: RunId, request: Request, principal: Reader) -> list[WaitOut]:
    """What the run and its open child runs wait on, each callback with the token that
    completes it (for keys with the ``approve`` scope)."""
    engine = _engine(request)
    return await _waits(engine, principal, await run_of(engine, principal, run_id))


async def _waits(engine: Engine, principal: Principal, run: RunRecord) -> list[WaitOut]:
    """What ``run`` waits on; the tokens only for keys that may complete callbacks."""
    waits = [WaitOut.of(w) for w in await engine.pending_callbacks(run)]
    if not principal.allows("approve"):
        waits = [w.model_copy(update={"token": None}) for w in waits]
    return waits


@router.post("/{run_id}/cancel", response_model=RunSummary)
async def cancel_run(run_id: RunId, request: Request, principal: Operator) -> RunSummary:
    """Cancel the run and its open child runs: at once when no worker holds it, else at
    its next checkpoint. 409 when it has already ended."""
    client = client_of(request)
    await run_of(client.engine, principal, run_id)
    await client.get_handle(run_id).cancel()
    await record_action(client.engine, run_id, "cancel", principal.audit())
    return RunSummary.of(await client.engine.store.get_run(run_id))


@router.post("/{run_id}/retry", response_model=RunSummary)
async def retry_run(
    run_id: RunId, request: Request, principal: Operator, body: RetryRun | None = None
) -> RunSummary:
    """Put a failed or cancelled run back to work from the operation that failed."""
    engine = _engine(request)
    await run_of(engine, principal, run_id)
    version = body.version if body else None
    by = f"key {principal.key_id} ({principal.name})"
    run = await engine.retry(run_id, version=version, by=by)
    await record_action(engine, run_id, "retry", principal.audit(), version=version)
    return RunSummary.of(run)


@router.post("/{run_id}/fork", status_code=201, response_model=RunSummary)
async def fork_run(
    run_id: RunId, body: ForkRun, request: Request, principal: Operator
) -> RunSummary:
    """A new run that replays this one's journal up to ``from_op`` and runs live from
    there (with another input or state document when given)."""
    engine = _engine(request)
    await run_of(engine, principal, run_id)
    forked = await engine.fork(
        run_id,
        from_op=body.from_op,
        input=body.input if "input" in body.model_fields_set else KEEP_INPUT,
        state=body.state,
        version=body.version,
    )
    await record_action(
        engine, forked.run_id, "fork", principal.audit(), source_run_id=run_id, op_id=body.from_op
    )
    await record_action(
        engine, run_id, "forked", principal.audit(), fork_run_id=forked.run_id, op_id=body.from_op
    )
    return RunSummary.of(forked)
