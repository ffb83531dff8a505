"""Events delivered from the bus, acted on as the in-process relay acts on the outbox.

EventBridge rules select the events (the cheap part: only matching events reach a queue);
cadenza's own matcher decides what each event does, since its pattern language is
EventBridge's. Two deliveries, two queues:

- the **rules** queue receives events matching a deployed cadenza rule: each enabled rule
  of the event's tenant whose pattern matches acts, starting a workflow (idempotency key
  ``rule:<name>:<event id>``, so a duplicate delivery finds the run it started) or
  completing a callback (which completes once);
- the **waiters** queue receives every cadenza event: each open ``wait_for_event`` of the
  event's tenant whose pattern matches is completed with the event, which wakes its run.

Both return the runs they made runnable, for the caller to put on the work queue.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cadenza.errors import CadenzaError, StoreUnavailable
from cadenza.events.relay import (
    _pattern,
    complete_waiter,
    deliver,
    tenant_of,
    waiter_resolution,
)
from cadenza.ports.run_store import Rule

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine

log = logging.getLogger("cadenza.aws")


async def apply_rules(
    engine: Engine, event: dict[str, Any], *, deployed: Sequence[Rule] = ()
) -> list[str]:
    """Act on ``event`` with every matching rule (the store's and the ``deployed`` ones,
    by name); return the ids of runs made runnable."""
    tenant = tenant_of(event)
    woken: list[str] = []
    rules = {(r.tenant, r.name): r for r in deployed}
    rules.update({(r.tenant, r.name): r for r in await engine.store.list_rules()})
    for rule in rules.values():
        if not rule.enabled or rule.tenant != tenant:
            continue
        if not _pattern(rule.pattern).matches(event):
            continue
        try:
            run_id = await deliver(engine, rule, event)
        except StoreUnavailable:
            raise
        except CadenzaError as exc:
            if rule.target == "start_workflow":
                raise  # the message fails, is retried, and ends in the dead-letter queue
            log.info("rule %s: event %s: %s", rule.name, event.get("id"), exc)
            continue  # completed before (a duplicate delivery), expired, …
        if run_id is not None:
            woken.append(run_id)
    return woken


async def resume_waiters(engine: Engine, event: dict[str, Any]) -> list[str]:
    """Complete every open ``wait_for_event`` that ``event`` matches; return their runs."""
    woken: list[str] = []
    tenants: dict[str, str] = {}
    for waiter in await engine.store.open_event_waiters():
        resolution = await waiter_resolution(engine, waiter, event, tenants=tenants)
        if resolution is not None and await complete_waiter(engine, resolution, event):
            woken.append(waiter.run_id)
    return woken
