"""Checkpoints too large for one transaction: an intent, committed, then rolled forward.

A checkpoint that starts many children or callbacks at once (a map whose 150 items each
wait for a callback) can need more items than DynamoDB's 100 per transaction, even after
its journal records are paged. Then the new items — callbacks, child runs, outbox events —
are recorded in an *intent* item (its body stashed when large) that commits in the
fenced transaction with the rest of the checkpoint, and are written right after, item by
item, each only if it is not there yet. Whatever happens, the checkpoint is all or
nothing: refused, nothing of it is stored; committed, its intent is applied before
``commit`` returns, or, if the process died in between, by whoever next loads the run's
activation (the run's next worker, which must read it before going on). Until then the
new items are not there, which is what the run's own journal, not yet replayed, expects.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cadenza.adapters.dynamodb import _items as it
from cadenza.adapters.dynamodb._table import (
    TRANSACTION_BYTES,
    TRANSACTION_ITEMS,
    ConditionFailed,
    Table,
    TransactionCancelled,
    put,
)
from cadenza.adapters.dynamodb._unit import Tagged, Unit, load_doc

INTENT = "K~I#"  # sorts after the callbacks, inside the activation's key range
_NEW_ITEMS = ("new-callback", "new-run", "key", "body", "history")
_OUTBOX = ("event", "outbox", "counter")


def fits(tagged: Sequence[Tagged]) -> bool:
    size = sum(t.write.size for t in tagged)
    return len(tagged) <= TRANSACTION_ITEMS and size <= TRANSACTION_BYTES - 64 * 1024


def deferrable(tag: tuple[str, str], children: set[str]) -> bool:
    kind, name = tag
    if kind in _OUTBOX or kind in ("new-callback", "key"):
        return True
    return kind in _NEW_ITEMS and name in children  # a child's head, body, first history


async def intent(
    unit: Unit,
    run_id: str,
    tagged: Sequence[Tagged],
    children: set[str],
    events: Sequence[dict[str, Any]],
    now: datetime,
) -> tuple[list[Tagged], list[Tagged]]:
    """Split ``tagged`` into what the transaction keeps (with the intent item) and what
    the intent defers; the events are re-planned when it is applied."""
    kept = [t for t in tagged if not deferrable(t.tag, children)]
    deferred = [t for t in tagged if deferrable(t.tag, children) and t.tag[0] not in _OUTBOX]
    # Callbacks are findable once their locators are written, runs claimable once their
    # heads are: those go last, heads after locators, so that a child that runs at once
    # finds the callback its end resolves.
    deferred.sort(key=_order)
    puts = []
    for t in deferred:
        body = dict(t.write.entry["Put"])
        body.pop("TableName", None)
        body.pop("ExpressionAttributeValues", None)
        body["ConditionExpression"] = "attribute_not_exists(pk)"  # applied once, at most
        puts.append(body)
    doc = {"puts": puts, "events": list(events)}
    sk = f"{INTENT}{uuid.uuid4().hex}"
    item: it.Item = {"pk": it.run_pk(run_id), "sk": sk, "at": it.iso(now)}
    stored = await unit.stashed(run_id, item, doc)
    kept.append(Tagged(put(stored, "attribute_not_exists(pk)"), ("intent", sk)))
    return kept, deferred


def _order(t: Tagged) -> int:
    sk = t.write.entry["Put"]["Item"]["sk"]["S"]
    return {"CB": 1, it.HEAD: 2}.get(sk, 0)


async def apply_intent(table: Table, run_id: str, item: it.Item) -> list[dict[str, Any]]:
    """Write what an intent defers (each item once); return its events to publish."""
    doc = await load_doc(table, run_id, item)
    puts: list[dict[str, Any]] = doc["puts"]
    for start in range(0, len(puts), TRANSACTION_ITEMS):
        chunk = puts[start : start + TRANSACTION_ITEMS]
        try:  # a chunk at once when none of it was written before
            await table.call(
                "transact_write_items",
                TransactItems=[{"Put": {**body, "TableName": table.name}} for body in chunk],
            )
            continue
        except TransactionCancelled:
            pass
        for body in chunk:  # else item by item, each at most once
            try:
                await table.call("put_item", TableName=table.name, **body)
            except ConditionFailed:
                pass
    events: list[dict[str, Any]] = json.loads(json.dumps(doc["events"]))
    return events


async def finish_intent(table: Table, item: it.Item) -> None:
    await table.call("delete_item", TableName=table.name, Key=it.key(item["pk"], item["sk"]))
