"""Events, rules and API keys in the DynamoDB run store.

Every event gets the next number of the counter item ``OUTBOX``/``#SEQ`` (a conditional
write on the value read, so concurrent publishers never share a number) and three items:
its id under ``EV#`` (so an event id is published once), the entry under ``OUTBOX``
(kept, for listing) and a copy under ``OUTBOX#NEW`` that delivery deletes, so fetching
undelivered events reads only those.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cadenza.adapters.dynamodb import _items as it
from cadenza.adapters.dynamodb._table import (
    ConditionFailed,
    Table,
    TransactionCancelled,
    delete,
    put,
    update,
)
from cadenza.adapters.dynamodb._unit import Again, Tagged, Unit, apply, retrying
from cadenza.ports.run_store import ApiKeyRecord, OutboxEntry, Rule


class DynamoDbEvents:
    """The outbox, rule and API-key methods of :class:`DynamoDbRunStore`."""

    table: Table

    async def _outbox(self, events: Sequence[dict[str, Any]], now: datetime) -> list[Tagged]:
        """Outbox writes for the events whose ids are new, behind the sequence counter."""
        fresh: dict[str, dict[str, Any]] = {}
        for event in events:
            fresh.setdefault(str(event["id"]), json.loads(json.dumps(event)))
        if not fresh:
            return []
        known = await self.table.batch_get([(f"EV#{i}", "EV") for i in fresh])
        fresh = {i: e for i, e in fresh.items() if (f"EV#{i}", "EV") not in known}
        if not fresh:
            return []
        counter = await self.table.get(it.OUTBOX, it.SEQ)
        last = counter["n"] if counter is not None else 0
        next_counter = {"pk": it.OUTBOX, "sk": it.SEQ, "n": last + len(fresh)}
        if counter is None:
            writes = [Tagged(put(next_counter, "attribute_not_exists(pk)"), ("counter", ""))]
        else:
            writes = [Tagged(put(next_counter, "n = :n", {":n": last}), ("counter", ""))]
        for seq, (event_id, event) in enumerate(fresh.items(), start=last + 1):
            text = it.dumps(event)
            entry = {"pk": it.OUTBOX, "sk": it.seq_sk(seq), "d": text, "at": it.iso(now)}
            pending = dict(entry, pk=it.OUTBOX_NEW)
            if isinstance(event.get("run_id"), str):  # found again when its run is pruned
                entry.update(g2pk=f"EVENTS#{event['run_id']}", g2sk=it.seq_sk(seq))
            writes += [
                Tagged(
                    put({"pk": f"EV#{event_id}", "sk": "EV"}, "attribute_not_exists(pk)"),
                    ("event", event_id),
                ),
                Tagged(put(entry), ("outbox", "")),
                Tagged(put(pending), ("outbox", "")),
            ]
        return writes

    async def publish(self, events: Sequence[dict[str, Any]], *, now: datetime) -> None:
        async def attempt() -> None:
            writes = await self._outbox(events, now)
            if writes and await apply(self.table, Unit(self.table), writes):
                raise Again  # a concurrent publisher took the sequence numbers

        await retrying(attempt)

    async def fetch_outbox(self, *, limit: int) -> list[OutboxEntry]:
        if limit <= 0:
            return []
        items = await self.table.query("pk = :p", {":p": it.OUTBOX_NEW}, limit=limit)
        return [it.outbox_of(i) for i in items]

    async def mark_delivered(self, seqs: Sequence[int], *, now: datetime) -> None:
        keys = [(it.OUTBOX_NEW, it.seq_sk(s)) for s in dict.fromkeys(seqs)]
        waiting = await self.table.batch_get(keys)
        writes = []
        for _, sk in waiting:
            writes += [
                update(it.OUTBOX, sk, "SET dl = :now", {":now": it.iso(now)}),
                delete(it.OUTBOX_NEW, sk),
            ]
        for start in range(0, len(writes), 50):
            for _ in range(5):  # nothing here is conditional: only a conflict can refuse it
                try:
                    await self.table.transact(writes[start : start + 50])
                    break
                except TransactionCancelled:
                    continue

    async def list_events(self, *, limit: int = 50) -> list[OutboxEntry]:
        if limit <= 0:
            return []
        items = await self.table.query(
            "pk = :p AND sk BETWEEN :lo AND :hi",
            {":p": it.OUTBOX, ":lo": "0", ":hi": "9~"},
            forward=False,
            limit=limit,
        )
        return [it.outbox_of(i) for i in items]

    async def put_rule(self, rule: Rule) -> None:
        known = await self.table.get(it.RULES, rule.name)
        if known is not None:  # a replaced rule keeps the time it was created
            rule = Rule(**{**_fields(rule), "created_at": it.rule_of(known).created_at})
        await self.table.call(
            "put_item", TableName=self.table.name, Item=it.to_item(it.rule_item(rule))
        )

    async def list_rules(self) -> list[Rule]:
        return [it.rule_of(i) for i in await self.table.query("pk = :p", {":p": it.RULES})]

    async def delete_rule(self, name: str) -> bool:
        reply = await self.table.call(
            "delete_item",
            TableName=self.table.name,
            Key=it.key(it.RULES, name),
            ReturnValues="ALL_OLD",
        )
        return bool(reply.get("Attributes"))

    # --- API keys -----------------------------------------------------------------------

    async def put_api_key(self, key: ApiKeyRecord) -> None:
        await self.table.call(
            "put_item", TableName=self.table.name, Item=it.to_item(it.api_key_item(key))
        )

    async def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        item = await self.table.get(it.APIKEYS, key_id)
        return it.api_key_of(item) if item is not None else None

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        keys = [it.api_key_of(i) for i in await self.table.query("pk = :p", {":p": it.APIKEYS})]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    async def revoke_api_key(self, key_id: str, *, now: datetime) -> bool:
        item = await self.table.get(it.APIKEYS, key_id)
        if item is None:
            return False
        key = it.api_key_of(item)
        if key.revoked_at is not None:
            return False
        try:
            await self.table.call(
                "put_item",
                TableName=self.table.name,
                Item=it.to_item(it.api_key_item(it.revoked(key, now))),
                ConditionExpression="d = :d",
                ExpressionAttributeValues=it.to_item({":d": item["d"]}),
            )
        except ConditionFailed:
            return False  # revoked meanwhile by someone else
        return True


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}
