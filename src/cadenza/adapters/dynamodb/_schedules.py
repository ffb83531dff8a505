"""Schedules in the DynamoDB run store: one item each under the partition ``SCHEDULES``.

The item holds the schedule as a JSON document beside its ``rev`` (revision), which every
write conditions on: a firing decided from a schedule that changed meanwhile is refused
whole, its runs included (they are Puts of the same transaction). Run ids the firing
names that exist already (the tick fired before) are left out of the transaction rather
than failing it. Schedules are few, so due ones are found with a consistent Query of the
partition instead of an index.
"""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import datetime, timedelta
from typing import Any

from cadenza.adapters.dynamodb import _items as it
from cadenza.adapters.dynamodb._table import ConditionFailed, Table, put
from cadenza.adapters.dynamodb._unit import Tagged, Unit
from cadenza.errors import ScheduleNotFound
from cadenza.ports.run_store import CatchUp, Overlap, Schedule, ScheduleFiring

SCHEDULES = "SCHEDULES"


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, timedelta):
        return {"$td": value.total_seconds()}
    if isinstance(value, CatchUp | Overlap):
        return str(value)
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "$dt" in value:
        return datetime.fromisoformat(value["$dt"])
    if isinstance(value, dict) and "$td" in value:
        return timedelta(seconds=value["$td"])
    return value


def schedule_item(schedule: Schedule) -> it.Item:
    doc = {f.name: _encode(getattr(schedule, f.name)) for f in fields(Schedule)}
    return {"pk": SCHEDULES, "sk": schedule.name, "d": it.dumps(doc), "rev": schedule.revision}


def schedule_of(item: it.Item) -> Schedule:
    known = {f.name for f in fields(Schedule)}
    doc = {k: _decode(v) for k, v in json.loads(item["d"]).items() if k in known}
    doc["catch_up"] = CatchUp(doc.get("catch_up", CatchUp.LATEST))
    doc["overlap"] = Overlap(doc.get("overlap", Overlap.SKIP))
    return Schedule(**doc)


class DynamoDbSchedules:
    """The schedule methods of :class:`DynamoDbRunStore`."""

    table: Table

    async def _schedule(self, name: str) -> Schedule:
        item = await self.table.get(SCHEDULES, name)
        if item is None:
            raise ScheduleNotFound(name)
        return schedule_of(item)

    async def _replace(self, known: Schedule | None, stored: Schedule) -> bool:
        """Write ``stored`` if the schedule is still ``known`` (None: still absent)."""
        item = schedule_item(stored)
        try:
            if known is None:
                await self.table.call(
                    "put_item",
                    TableName=self.table.name,
                    Item=it.to_item(item),
                    ConditionExpression="attribute_not_exists(pk)",
                )
            else:
                await self.table.call(
                    "put_item",
                    TableName=self.table.name,
                    Item=it.to_item(item),
                    ConditionExpression="rev = :rev",
                    ExpressionAttributeValues=it.to_item({":rev": known.revision}),
                )
        except ConditionFailed:
            return False
        return True

    async def put_schedule(self, schedule: Schedule) -> Schedule:
        json.loads(schedule.input)  # as a database column would, refuse what is not JSON
        while True:
            item = await self.table.get(SCHEDULES, schedule.name)
            known = schedule_of(item) if item is not None else None
            stored = schedule.evolve(
                revision=(known.revision if known else 0) + 1,
                created_at=known.created_at if known else schedule.created_at,
            )
            if await self._replace(known, stored):
                return stored

    async def get_schedule(self, name: str) -> Schedule:
        return await self._schedule(name)

    async def list_schedules(self) -> list[Schedule]:
        items = await self.table.query("pk = :p", {":p": SCHEDULES})
        return [schedule_of(i) for i in items]

    async def delete_schedule(self, name: str) -> bool:
        reply = await self.table.call(
            "delete_item",
            TableName=self.table.name,
            Key=it.key(SCHEDULES, name),
            ReturnValues="ALL_OLD",
        )
        return bool(reply.get("Attributes"))

    async def pause_schedule(self, name: str, *, paused: bool, now: datetime) -> Schedule:
        while True:
            known = await self._schedule(name)
            resumed = now if known.paused and not paused else known.resumed_at
            stored = known.evolve(
                paused=paused, resumed_at=resumed, revision=known.revision + 1, updated_at=now
            )
            if await self._replace(known, stored):
                return stored

    async def due_schedules(self, *, now: datetime, limit: int) -> list[Schedule]:
        due = [
            s
            for s in await self.list_schedules()
            if not s.paused and s.due_at is not None and s.due_at <= now
        ]
        return sorted(due, key=lambda s: (s.due_at or now, s.name))[: max(limit, 0)]

    async def next_schedule_due_at(self) -> datetime | None:
        times = [s.due_at for s in await self.list_schedules() if not s.paused and s.due_at]
        return min(times, default=None)

    async def fire_schedule(self, firing: ScheduleFiring) -> bool:
        for _ in range(12):
            item = await self.table.get(SCHEDULES, firing.name)
            if item is None:
                return False
            known = schedule_of(item)
            if known.revision != firing.expected_revision:
                return False
            taken = await self.table.batch_get(
                [(it.run_pk(run.run_id), it.HEAD) for run, _ in firing.runs]
            )
            unit = Unit(self.table)
            fresh = [
                (run, started)
                for run, started in firing.runs
                if (it.run_pk(run.run_id), it.HEAD) not in taken
            ]
            for run, started in dict((r.run_id, (r, s)) for r, s in fresh).values():
                unit.add_run(run, started)  # a tick fired before keeps its run
            stored = firing.applied_to(known)
            moved = put(schedule_item(stored), "rev = :rev", {":rev": known.revision})
            writes = [*await unit.writes(), Tagged(moved, ("schedule", firing.name))]
            try:
                await self.table.transact([t.write for t in writes])
            except Exception as exc:
                from cadenza.adapters.dynamodb._table import TransactionCancelled

                if not isinstance(exc, TransactionCancelled):
                    raise
                if exc.failed(len(writes) - 1):
                    return False  # the schedule moved on: another worker fired it
                continue  # a run id was taken meanwhile: leave it out and try again
            return True
        return False
