"""The audit trail: who asked the service to act on a run, written into its history.

Each request that changes a run (start, cancel, retry, fork, a callback's completion) adds
an ``ActionRequested`` event naming the action and the caller: an API key (its id, name
and tenant) or an approval link. The history is append-only, so the trail is too.
"""

from __future__ import annotations

from typing import Any

from cadenza.engine.engine import Engine
from cadenza.history import HistoryEvent, HistoryEventType

__all__ = ["record_action"]


async def record_action(
    engine: Engine, run_id: str, action: str, by: dict[str, Any], **details: Any
) -> None:
    """Append ``action`` done ``by`` someone to ``run_id``'s history.

    ``by`` names the caller: ``{"key_id": …, "name": …, "tenant": …}`` for an API key,
    ``{"link": …}`` for an approval link.

    >>> await record_action(engine, "r-1", "cancel", principal.audit())
    """
    event = HistoryEvent(
        seq=0,
        type=HistoryEventType.ACTION_REQUESTED,
        timestamp=engine.clock.now(),
        details={"action": action, "by": by, **details},
    )
    await engine.store.append_history(run_id, [event])
