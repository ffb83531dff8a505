"""Retention in the DynamoDB run store: which ended runs may go, and deleting them whole.

Ended runs sit in the index ``gsi1`` under ``ENDED``, by their last update, so
``ended_runs`` reads them oldest first without a scan. ``prune_runs`` re-checks the
engine's decision against the table and deletes a run's head first, in a transaction
conditioned on the status and update time it read (and on its parent's status): from
that moment the run no longer exists for any reader. Its other items (body, journal,
history, callbacks and their locators, its idempotency key, the delivered outbox entries
it emitted) are deleted after, in batches. A process that dies in between leaves items no
reader reaches, under a partition key no run has any more.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cadenza.adapters.dynamodb import _items as it
from cadenza.adapters.dynamodb._journal import read_activation
from cadenza.adapters.dynamodb._table import (
    STASH_ABOVE,
    Table,
    TransactionCancelled,
    Write,
    check,
    delete,
    put,
)
from cadenza.adapters.dynamodb._unit import load_doc, read_runs
from cadenza.ports.run_store import HistoryCompaction, PrunedRuns, RunRecord, RunStatus

_ENDED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class DynamoDbRetention:
    """The retention methods of :class:`DynamoDbRunStore`."""

    table: Table

    async def ended_runs(
        self,
        *,
        updated_before: datetime,
        limit: int,
        workflow: str | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[RunRecord]:
        if limit <= 0:
            return []
        low = f"{it.time_key(after[0])}#{after[1]}" if after is not None else "0"
        found: list[RunRecord] = []
        start: dict[str, Any] | None = None
        while len(found) < limit:
            params: dict[str, Any] = {
                "TableName": self.table.name,
                "IndexName": "gsi1",
                "KeyConditionExpression": "g1pk = :p AND g1sk BETWEEN :lo AND :hi",
                "ExpressionAttributeValues": it.to_item(
                    {":p": it.ENDED, ":lo": low, ":hi": it.time_key(updated_before)}
                ),
                "Limit": 100,
            }
            if start is not None:
                params["ExclusiveStartKey"] = start
            reply = await self.table.call("query", **params)
            heads = [
                h
                for h in map(it.from_item, reply.get("Items", []))
                if h["g1sk"] != low and (workflow is None or h["wf"] == workflow)
            ]
            for run in await read_runs(self.table, heads):
                if (
                    run.status.terminal
                    and run.updated_at < updated_before
                    and (after is None or (run.updated_at, run.run_id) > after)
                ):
                    found.append(run)
            start = reply.get("LastEvaluatedKey")
            if not start:
                break
        found.sort(key=lambda r: (r.updated_at, r.run_id))
        return found[:limit]

    async def prune_runs(self, run_ids: Sequence[str], *, ended_before: datetime) -> PrunedRuns:
        pruned: list[str] = []
        counts = [0, 0, 0, 0]  # journal records, history events, callbacks, events
        for run_id in dict.fromkeys(run_ids):
            done = await self._prune_one(run_id, ended_before)
            if done is not None:
                pruned.append(run_id)
                counts = [a + b for a, b in zip(counts, done, strict=True)]
        return PrunedRuns(tuple(pruned), *counts)

    async def _prune_one(self, run_id: str, ended_before: datetime) -> list[int] | None:
        """Delete one run if the decision still holds; what went with it, or None."""
        pk = it.run_pk(run_id)
        head = await self.table.get(pk, it.HEAD)
        if head is None or head["st"] not in _ENDED:
            return None
        if datetime.fromisoformat(head["up"]) >= ended_before:
            return None
        writes = [
            delete(pk, it.HEAD),
        ]
        writes[0].entry["Delete"].update(
            ConditionExpression="st = :st AND up = :up",
            ExpressionAttributeValues=it.to_item({":st": head["st"], ":up": head["up"]}),
        )
        parent_id = head.get("pa")
        if parent_id is not None:
            parent = await self.table.get(it.run_pk(parent_id), it.HEAD)
            if parent is not None and parent["st"] not in _ENDED:
                return None  # an open parent still reads its child
            if parent is None:
                writes.append(check(it.run_pk(parent_id), it.HEAD, "attribute_not_exists(pk)"))
            else:
                writes.append(
                    check(it.run_pk(parent_id), it.HEAD, "st = :st", {":st": parent["st"]})
                )
        ops, callbacks, _ = await read_activation(self.table, run_id)
        items = await self.table.partition(pk, "!", "~~")
        body = next((i for i in items if i["sk"] == it.BODY), None)
        key = (await load_doc(self.table, run_id, body)).get("idempotency_key") if body else None
        history = sum(i.get("n", 0) for i in items if i["sk"].startswith("H#"))
        events = await self._delivered_events(run_id)
        try:
            await self.table.transact(writes)
        except TransactionCancelled:
            return None  # the run (or its parent) changed since it was read: keep it
        doomed = [(i["pk"], i["sk"]) for i in items if i["sk"] != it.HEAD]
        doomed += [(f"CB#{cb.callback_id}", "CB") for cb in callbacks]
        doomed += [(it.OUTBOX, sk) for sk in events]
        if key is not None:
            owner = await self.table.get(f"IK#{key}", "IK")
            if owner is not None and owner.get("run") == run_id:
                doomed.append((f"IK#{key}", "IK"))
        await self.table.delete_plain(doomed)
        return [len(ops), history, len(callbacks), len(events)]

    async def _delivered_events(self, run_id: str) -> list[str]:
        """The sort keys of the delivered outbox entries ``run_id`` emitted."""
        listed = await self.table.query("g2pk = :p", {":p": f"EVENTS#{run_id}"}, index="gsi2")
        entries = await self.table.batch_get([(it.OUTBOX, i["sk"]) for i in listed])
        return [sk for (_, sk), entry in entries.items() if entry.get("dl") is not None]

    async def compact_history(self, compaction: HistoryCompaction) -> bool:
        """Rewrite the history pages holding the dropped events, fenced by the run's
        epoch and by each page's version, in one transaction."""
        pk = it.run_pk(compaction.run_id)
        head = await self.table.get(pk, it.HEAD)
        drop = set(compaction.drop)
        if head is None or head["ep"] != compaction.expected_epoch or not drop:
            return False
        first_dropped = min(drop)
        pages = await self.table.partition(pk, "H#", "H#~")
        writes: list[Write] = [check(pk, it.HEAD, "ep = :ep", {":ep": compaction.expected_epoch})]
        found: set[int] = set()
        for page in pages:
            first = int(page["sk"][2:])
            docs = await load_doc(self.table, compaction.run_id, page)
            seqs = [doc.get("seq", first + i) for i, doc in enumerate(docs)]
            if not drop & set(seqs):
                continue
            kept = []
            for seq, doc in zip(seqs, docs, strict=True):
                if seq == first_dropped:
                    kept.append({**it.event_doc(compaction.summary), "seq": seq})
                elif seq not in drop:
                    kept.append({**doc, "seq": seq})
                if seq in drop:
                    found.add(seq)
            version = page.get("v", 0)
            condition = "v = :v" if version else "attribute_not_exists(v)"
            values = {":v": version} if version else None
            if not kept:
                write = delete(pk, page["sk"])
                write.entry["Delete"]["ConditionExpression"] = condition
                if values:
                    write.entry["Delete"]["ExpressionAttributeValues"] = it.to_item(values)
                writes.append(write)
                continue
            text = it.dumps(kept)
            item: it.Item = {"pk": pk, "sk": page["sk"], "n": page["n"], "v": version + 1}
            if len(text.encode()) > STASH_ABOVE:
                item["b"] = await self.table.stash(compaction.run_id, text)
            else:
                item["d"] = text
            writes.append(put(item, condition, values))
        if found != drop:
            return False  # an event is gone: compacted before
        try:
            await self.table.transact(writes)
        except TransactionCancelled:
            return False
        return True
