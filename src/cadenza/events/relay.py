"""The outbox relay: deliver published events to rules and to runs waiting for them.

Events reach the outbox in the same transaction as the checkpoint that emitted them (or
through ``cadenza events put``). The relay reads undelivered ones in order, matches each
against the rules and the open ``wait_for_event`` waiters, acts, and marks it delivered.
A crash between acting and marking delivers the event again (at least once); each target
deduplicates by event id: a started run's idempotency key is ``rule:<name>:<event id>``,
and a callback completes once.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from cadenza.errors import (
    CadenzaError,
    ConfigurationError,
    ErrorInfo,
    InvalidCallbackToken,
    StoreUnavailable,
    WorkflowNotFound,
)
from cadenza.events.patterns import EventPattern, compile_pattern
from cadenza.ports.run_store import (
    DEFAULT_TENANT,
    CallbackRecord,
    CallbackResolution,
    CallbackStatus,
    Rule,
    RunStatus,
)
from cadenza.workflow import load, lookup

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine

log = logging.getLogger("cadenza.events")

TARGETS = ("start_workflow", "complete_callback")


def validate_rule(rule: Rule) -> None:
    """Fail when a rule is defined wrongly, not when its first event arrives."""
    _compiled(json.dumps(rule.pattern, sort_keys=True))
    if rule.target not in TARGETS:
        raise ConfigurationError(
            f"rule {rule.name!r}: unknown target {rule.target!r}; use one of {', '.join(TARGETS)}"
        )
    if rule.target == "start_workflow" and not rule.params.get("workflow"):
        raise ConfigurationError(f"rule {rule.name!r}: start_workflow needs params.workflow")
    if rule.params.get("input", "detail") not in ("detail", "event"):
        raise ConfigurationError(f"rule {rule.name!r}: params.input is 'detail' or 'event'")


@lru_cache(maxsize=1024)
def _compiled(pattern_json: str) -> EventPattern:
    return compile_pattern(json.loads(pattern_json))


def _pattern(pattern: dict[str, Any]) -> EventPattern:
    return _compiled(json.dumps(pattern, sort_keys=True))


async def relay_outbox(engine: Engine, *, limit: int = 200) -> int:
    """Deliver up to ``limit`` undelivered events; return how many."""
    store = engine.store
    entries = await store.fetch_outbox(limit=limit)
    if not entries:
        return 0
    rules = [r for r in await store.list_rules() if r.enabled]
    waiters = await store.open_event_waiters()
    taken: set[str] = set()
    tenants: dict[str, str] = {}  # run id -> tenant, for the waiters an event matches
    for entry in entries:
        event = entry.event
        tenant = tenant_of(event)
        for rule in rules:
            if rule.tenant != tenant:  # a tenant's rules see only its own events
                continue
            try:
                if _pattern(rule.pattern).matches(event):
                    await deliver(engine, rule, event)
            except StoreUnavailable:
                raise  # the batch stays undelivered and comes round again once it is back
            except CadenzaError as exc:
                log.warning("rule %s: event %s not delivered: %s", rule.name, event.get("id"), exc)
        for waiter in waiters:
            if waiter.callback_id in taken:
                continue
            resolution = await waiter_resolution(engine, waiter, event, tenants=tenants)
            if resolution is not None:
                taken.add(waiter.callback_id)
                await complete_waiter(engine, resolution, event)
    await store.mark_delivered([e.seq for e in entries], now=engine.clock.now())
    engine.poke()
    return len(entries)


async def waiter_resolution(
    engine: Engine, waiter: CallbackRecord, event: dict[str, Any], *, tenants: dict[str, str]
) -> CallbackResolution | None:
    """How ``event`` completes the open ``wait_for_event`` ``waiter``: None when it does
    not (its pattern does not match, or its run is another tenant's). ``tenants`` caches
    the tenant of each waiting run across the waiters and events of one delivery."""
    if waiter.pattern is None:
        return None
    try:
        if not _pattern(waiter.pattern).matches(event):
            return None
        if waiter.run_id not in tenants:
            tenants[waiter.run_id] = (await engine.store.get_run(waiter.run_id)).tenant
        if tenants[waiter.run_id] != tenant_of(event):  # another tenant's run: not its event
            return None
        return CallbackResolution(
            waiter.callback_id, CallbackStatus.SUCCEEDED, result=json.dumps(event)
        )
    except StoreUnavailable:
        raise
    except CadenzaError as exc:
        # A pattern stored by an older cadenza that this one refuses: fail the wait (the
        # run sees why) rather than stop delivering every other event.
        return CallbackResolution(
            waiter.callback_id,
            CallbackStatus.FAILED,
            error=ErrorInfo(type(exc).__name__, f"the event pattern is invalid: {exc}"),
        )


async def complete_waiter(
    engine: Engine, resolution: CallbackResolution, event: dict[str, Any]
) -> bool:
    """Complete a waiter as ``resolution`` says; False when it was completed before or its
    run has ended meanwhile."""
    try:
        return await engine.store.complete_callback(resolution, now=engine.clock.now())
    except StoreUnavailable:
        raise
    except CadenzaError as exc:  # the waiting run ended meanwhile
        log.info("event %s: waiter %s gone: %s", event.get("id"), resolution.callback_id, exc)
        return False


async def deliver(engine: Engine, rule: Rule, event: dict[str, Any]) -> str | None:
    """Act on ``event`` with ``rule``, which matches it: start the rule's workflow once per
    event (a repeated delivery finds the run the first one started) or complete the
    callback whose token the event carries. Return the id of the run made runnable, None
    when a repeated delivery found its run already going."""
    params = rule.params
    if rule.target == "start_workflow":
        name = params["workflow"]
        definition = lookup(name, params.get("version"))
        if definition is None and params.get("module"):
            load(params["module"])
            definition = lookup(name, params.get("version"))
        if definition is None:
            raise WorkflowNotFound(
                f"rule {rule.name!r}: workflow {name!r} is not registered in this process;"
                " give the rule params.module (MODULE:WORKFLOW) so any worker can import it"
            )
        value = event if params.get("input", "detail") == "event" else event.get("detail")
        run = await engine.start(
            definition,
            value,
            idempotency_key=f"rule:{rule.name}:{event['id']}",
            trace_id=event.get("trace_id"),
            causation_id=event.get("causation_id"),
            tenant=rule.tenant,
        )
        return run.run_id if run.status == RunStatus.PENDING else None
    if rule.target == "complete_callback":
        token = _at(event, params.get("token_path", "detail.token"))
        if not isinstance(token, str):
            raise ConfigurationError(
                f"rule {rule.name!r}: no token at {params.get('token_path', 'detail.token')}"
            )
        callback = await engine.callback_for(token)
        if (await engine.store.get_run(callback.run_id)).tenant != rule.tenant:
            raise InvalidCallbackToken(
                f"rule {rule.name!r}: the token in event {event.get('id')} completes a callback"
                " of another tenant's run; a rule completes its own tenant's callbacks only"
            )
        if params.get("outcome", "succeed") == "fail":
            await engine.fail_callback(
                token,
                error=str(_at(event, "detail.error") or "CallbackFailed"),
                message=str(_at(event, "detail.message") or ""),
            )
        else:
            await engine.succeed_callback(token, _at(event, params.get("payload_path", "detail")))
        return callback.run_id
    return None


def tenant_of(event: dict[str, Any]) -> str:
    """The tenant an outbox event belongs to: the service and runs of other tenants mark
    theirs, events published without one belong to the default tenant."""
    tenant = event.get("tenant")
    return tenant if isinstance(tenant, str) and tenant else DEFAULT_TENANT


def _at(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data
