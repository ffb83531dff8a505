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
    StoreUnavailable,
    WorkflowNotFound,
)
from cadenza.events.patterns import EventPattern, compile_pattern
from cadenza.ports.run_store import CallbackResolution, CallbackStatus, Rule
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
    for entry in entries:
        event = entry.event
        for rule in rules:
            try:
                if _pattern(rule.pattern).matches(event):
                    await _deliver(engine, rule, event)
            except StoreUnavailable:
                raise  # the batch stays undelivered and comes round again once it is back
            except CadenzaError as exc:
                log.warning("rule %s: event %s not delivered: %s", rule.name, event.get("id"), exc)
        for waiter in waiters:
            if waiter.callback_id in taken or waiter.pattern is None:
                continue
            try:
                if not _pattern(waiter.pattern).matches(event):
                    continue
                resolution = CallbackResolution(
                    waiter.callback_id, CallbackStatus.SUCCEEDED, result=json.dumps(event)
                )
            except CadenzaError as exc:
                # A pattern stored by an older cadenza that this one refuses: fail the wait
                # (the run sees why) rather than stop delivering every other event.
                resolution = CallbackResolution(
                    waiter.callback_id,
                    CallbackStatus.FAILED,
                    error=ErrorInfo(type(exc).__name__, f"the event pattern is invalid: {exc}"),
                )
            taken.add(waiter.callback_id)
            try:
                await store.complete_callback(resolution, now=engine.clock.now())
            except StoreUnavailable:
                raise
            except CadenzaError as exc:  # the waiting run ended meanwhile
                log.info("event %s: waiter %s gone: %s", event.get("id"), waiter.callback_id, exc)
    await store.mark_delivered([e.seq for e in entries], now=engine.clock.now())
    engine.poke()
    return len(entries)


async def _deliver(engine: Engine, rule: Rule, event: dict[str, Any]) -> None:
    params = rule.params
    if rule.target == "start_workflow":
        name = params["workflow"]
        definition = lookup(name, params.get("version"))
        if definition is None and params.get("module"):
            load(params["module"])
            definition = lookup(name, params.get("version"))
        if definition is None:
            raise WorkflowNotFound(
                f"workflow {name!r} is not registered in this process; give the rule"
                " params.module (MODULE:WORKFLOW) so any worker can import it"
            )
        value = event if params.get("input", "detail") == "event" else event.get("detail")
        await engine.start(
            definition,
            value,
            idempotency_key=f"rule:{rule.name}:{event['id']}",
            trace_id=event.get("trace_id"),
        )
    elif rule.target == "complete_callback":
        token = _at(event, params.get("token_path", "detail.token"))
        if not isinstance(token, str):
            raise ConfigurationError(
                f"rule {rule.name!r}: no token at {params.get('token_path', 'detail.token')}"
            )
        if params.get("outcome", "succeed") == "fail":
            await engine.fail_callback(
                token,
                error=str(_at(event, "detail.error") or "CallbackFailed"),
                message=str(_at(event, "detail.message") or ""),
            )
        else:
            await engine.succeed_callback(token, _at(event, params.get("payload_path", "detail")))


def _at(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data
