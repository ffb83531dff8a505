"""``/api/v1`` callbacks, events, rules, queues and workflows."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import TypeAdapter

from cadenza.engine.engine import Engine
from cadenza.errors import NotFound
from cadenza.events.envelope import Event
from cadenza.events.relay import relay_outbox, tenant_of, validate_rule
from cadenza.ports.run_store import DEFAULT_TENANT, QueueConfig, QueueStats, Rule
from cadenza.service._access import callback_of, rule_key, visible_rule_name
from cadenza.service._audit import record_action
from cadenza.service._auth import Principal, client_of, require
from cadenza.service._models import (
    NAME,
    CallbackDone,
    EventIn,
    EventOut,
    FailCallback,
    QueueIn,
    QueueOut,
    QueueStatusOut,
    RuleIn,
    RuleOut,
    SucceedCallback,
    WorkflowOut,
)
from cadenza.service._runs import workflow_named
from cadenza.workflow import WorkflowDefinition, registered

router = APIRouter()

Reader = Annotated[Principal, Depends(require("read"))]
Approver = Annotated[Principal, Depends(require("approve"))]
Starter = Annotated[Principal, Depends(require("start"))]
Operator = Annotated[Principal, Depends(require("operate"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Token = Annotated[str, Path(min_length=1, max_length=4096, description="the callback token")]
Name = Annotated[str, Path(pattern=NAME)]
RuleName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


def _engine(request: Request) -> Engine:
    return client_of(request).engine


# --- callbacks ---------------------------------------------------------------------------


@router.post("/callbacks/{token}/succeed", response_model=CallbackDone, tags=["callbacks"])
async def succeed_callback(
    token: Token, request: Request, principal: Approver, body: SucceedCallback | None = None
) -> CallbackDone:
    """Complete the callback the token names; the run continues with ``payload``
    (422 when it does not fit the payload type the workflow declared)."""
    engine = _engine(request)
    await callback_of(engine, principal, token)
    callback = await engine.succeed_callback(token, body.payload if body else None)
    await record_action(
        engine, callback.run_id, "callback.succeed", principal.audit(), op_id=callback.op_id
    )
    return CallbackDone(run_id=callback.run_id, op_id=callback.op_id, callback="succeeded")


@router.post("/callbacks/{token}/fail", response_model=CallbackDone, tags=["callbacks"])
async def fail_callback(
    token: Token, request: Request, principal: Approver, body: FailCallback | None = None
) -> CallbackDone:
    """Fail the callback; the waiting run sees a CallbackFailed error."""
    engine = _engine(request)
    await callback_of(engine, principal, token)
    body = body or FailCallback()
    callback = await engine.fail_callback(token, error=body.error, message=body.message)
    await record_action(
        engine,
        callback.run_id,
        "callback.fail",
        principal.audit(),
        op_id=callback.op_id,
        error=body.error,
    )
    return CallbackDone(run_id=callback.run_id, op_id=callback.op_id, callback="failed")


@router.post("/callbacks/{token}/heartbeat", response_model=CallbackDone, tags=["callbacks"])
async def heartbeat_callback(token: Token, request: Request, principal: Approver) -> CallbackDone:
    """Tell a run with a heartbeat timeout that the work behind the callback is alive."""
    engine = _engine(request)
    await callback_of(engine, principal, token)
    callback = await engine.heartbeat_callback(token)
    return CallbackDone(run_id=callback.run_id, op_id=callback.op_id, callback="heartbeat")


# --- events ------------------------------------------------------------------------------


@router.post(
    "/events",
    status_code=201,
    response_model=EventOut,
    response_model_exclude_none=True,
    tags=["events"],
)
async def put_event(body: EventIn, request: Request, principal: Starter) -> EventOut:
    """Publish an event; the tenant's matching rules and waiting runs receive it. Event
    ids are unique per store, so those of tenants other than the default one are kept
    as ``<tenant>:<id>``."""
    engine = _engine(request)
    event_id = body.id
    if event_id is not None and principal.tenant != DEFAULT_TENANT:
        event_id = f"{principal.tenant}:{event_id}"
    event = Event.new(body.detail_type, body.detail, source=body.source, id=event_id)
    envelope = event.to_dict()
    if principal.tenant != DEFAULT_TENANT:
        envelope["tenant"] = principal.tenant
    await engine.publish([envelope])
    await relay_outbox(engine)
    return EventOut.of(envelope)


@router.get("/events", response_model=list[EventOut], tags=["events"])
async def list_events(
    request: Request, principal: Reader, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> list[EventOut]:
    """The tenant's recent events, newest first."""
    # The outbox is shared: read deeper than asked, then keep the tenant's own.
    entries = await _engine(request).store.list_events(limit=min(limit * 10, 2000))
    own = [e for e in entries if tenant_of(e.event) == principal.tenant]
    return [EventOut.of(e.event, delivered=e.delivered_at is not None) for e in own[:limit]]


# --- rules -------------------------------------------------------------------------------


async def _rule(engine: Engine, principal: Principal, name: str) -> Rule:
    key = rule_key(principal, name)
    for rule in await engine.store.list_rules():
        if rule.name == key and rule.tenant == principal.tenant:
            return rule
    raise NotFound(f"no rule named {name!r}; list rules with GET /api/v1/rules")


@router.get("/rules", response_model=list[RuleOut], tags=["rules"])
async def list_rules(request: Request, principal: Reader) -> list[RuleOut]:
    rules = await _engine(request).store.list_rules()
    return [RuleOut.of(r, visible_rule_name(r)) for r in rules if r.tenant == principal.tenant]


@router.get("/rules/{name}", response_model=RuleOut, tags=["rules"])
async def get_rule(name: RuleName, request: Request, principal: Reader) -> RuleOut:
    return RuleOut.of(await _rule(_engine(request), principal, name), name)


@router.put("/rules/{name}", response_model=RuleOut, tags=["rules"])
async def put_rule(
    name: RuleName, body: RuleIn, request: Request, response: Response, principal: Operator
) -> RuleOut:
    """Create or replace a rule: events of the tenant matching ``pattern`` start a
    workflow (``start_workflow``) or complete a callback (``complete_callback``)."""
    engine = _engine(request)
    key = rule_key(principal, name)
    existing = {r.name: r for r in await engine.store.list_rules()}.get(key)
    if existing is not None and existing.tenant != principal.tenant:
        raise NotFound(f"rule name {name!r} cannot be used; choose another name")
    rule = Rule(
        name=key,
        pattern=body.pattern,
        target=body.target,
        params=body.params,
        enabled=body.enabled,
        created_at=existing.created_at if existing else engine.clock.now(),
        tenant=principal.tenant,
    )
    validate_rule(rule)
    await engine.store.put_rule(rule)
    response.status_code = 200 if existing else 201
    return RuleOut.of(rule, name)


@router.delete("/rules/{name}", status_code=204, tags=["rules"])
async def delete_rule(name: RuleName, request: Request, principal: Operator) -> Response:
    engine = _engine(request)
    rule = await _rule(engine, principal, name)
    await engine.store.delete_rule(rule.name)
    return Response(status_code=204)


# --- queues ------------------------------------------------------------------------------


@router.get("/queues", response_model=list[QueueStatusOut], tags=["queues"])
async def list_queues(request: Request, principal: Reader) -> list[QueueStatusOut]:
    """Queues (shared by every tenant): those with flow control and those with open runs,
    each with its limits, its depth (runnable, running, waiting) and how long its oldest
    runnable run has waited, counted over all tenants."""
    engine = _engine(request)
    now = engine.clock.now()
    configs = {q.name: q for q in await engine.store.list_queues()}
    stats = {s.queue: s for s in await engine.store.queue_stats(now=now)}
    return [
        QueueStatusOut.of_queue(
            configs.get(name) or QueueConfig(name), stats.get(name) or QueueStats(name), now
        )
        for name in sorted(configs.keys() | stats.keys())
    ]


@router.put("/queues/{name}", response_model=QueueOut, tags=["queues"])
async def put_queue(name: Name, body: QueueIn, request: Request, principal: Admin) -> QueueOut:
    """Set a queue's concurrency and rate limit. Queues hold across tenants, so this
    takes the ``admin`` scope."""
    config = QueueConfig(
        name=name,
        concurrency=body.concurrency,
        rate_limit=body.rate_limit,
        rate_period=timedelta(seconds=body.rate_period_seconds),
    )
    await _engine(request).store.put_queue(config)
    return QueueOut.of(config)


# --- workflows ---------------------------------------------------------------------------


def _schema(tp: Any) -> dict[str, Any] | None:
    if tp is None:
        return None
    try:
        schema: dict[str, Any] = TypeAdapter(tp).json_schema()
    except Exception:  # a type pydantic cannot describe: no schema rather than no listing
        return None
    return schema


def _workflow(d: WorkflowDefinition) -> WorkflowOut:
    return WorkflowOut(
        name=d.name,
        version=d.version,
        description=d.description,
        queue=d.queue,
        module=d.module,
        takes_input=d.takes_input,
        input_schema=_schema(d.input_type) if d.takes_input else None,
        output_schema=_schema(d.output_type),
    )


@router.get("/workflows", response_model=list[WorkflowOut], tags=["workflows"])
async def list_workflows(principal: Reader) -> list[WorkflowOut]:
    """The workflows this service can start, each with the JSON Schema of its input."""
    return [_workflow(d) for d in sorted(registered(), key=lambda d: (d.name, d.version))]


@router.get("/workflows/{name}", response_model=WorkflowOut, tags=["workflows"])
async def get_workflow(
    name: Annotated[str, Path(max_length=200)],
    principal: Reader,
    version: Annotated[str | None, Query(max_length=50)] = None,
) -> WorkflowOut:
    return _workflow(workflow_named(name, version))
