"""Journal records as items: one item per record, or pages when a checkpoint is too big.

A record is upserted with an UpdateItem that keeps its first place, type, name and parent
(``if_not_exists``), as the SQL stores keep a row's. Each write carries ``w``, the run's
journal write counter, so that records written as *pages* (one item holding many
records, used when a checkpoint's records would pass DynamoDB's 100 items or 4 MB per
transaction) merge with item records on reading: the latest write of a record wins, and a
tombstone (``x``, written when a retry drops a record) hides what was written before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cadenza.adapters.dynamodb import _items as it
from cadenza.adapters.dynamodb._table import (
    STASH_ABOVE,
    TRANSACTION_BYTES,
    TRANSACTION_ITEMS,
    Table,
    Write,
    put,
    update,
)
from cadenza.adapters.dynamodb._unit import RunState, Unit, load_doc
from cadenza.journal import OpRecord
from cadenza.ports.run_store import CallbackRecord


async def op_writes(unit: Unit, state: RunState, ops: Sequence[OpRecord]) -> list[Write]:
    """Upserts of ``ops`` as one item each (the run's write counter moves on)."""
    if not ops:
        return []
    state.writes += 1
    state.head_dirty = True
    run_id = state.run.run_id
    writes = []
    for index, op in enumerate(ops):
        text = it.dumps(it.op_doc(op))
        values: dict[str, Any] = {
            ":w": state.writes,
            ":p": f"{state.writes:012d}#{index:05d}",
            ":ty": str(op.type),
            ":nm": op.name,
        }
        sets = ["w = :w", "p = if_not_exists(p, :p)", "ty = if_not_exists(ty, :ty)"]
        sets.append("nm = if_not_exists(nm, :nm)")
        if op.parent_id is not None:
            values[":pa"] = op.parent_id
            sets.append("pa = if_not_exists(pa, :pa)")
        if len(text.encode()) > STASH_ABOVE:
            values[":b"] = await unit.table.stash(run_id, text)
            expression = f"SET {', '.join([*sets, 'b = :b'])} REMOVE d, x"
        else:
            values[":d"] = text
            expression = f"SET {', '.join([*sets, 'd = :d'])} REMOVE b, x"
        size = it.item_size(values) + len(op.op_id) + 40
        writes.append(update(it.run_pk(run_id), it.op_sk(op.op_id), expression, values, size=size))
    return writes


async def page_writes(
    unit: Unit, state: RunState, ops: Sequence[OpRecord], budget: int
) -> list[Write]:
    """``ops`` as pages of records, each one item of at most ~300 KB; the largest pages
    are stashed (claim-checked) until the pages fit in ``budget`` bytes."""
    state.writes += 1
    state.head_dirty = True
    run_id = state.run.run_id
    pages: list[list[dict[str, Any]]] = [[]]
    size = 0
    for op in ops:
        doc = it.page_doc(op)
        doc_size = len(it.dumps(doc).encode())
        if pages[-1] and size + doc_size > STASH_ABOVE:
            pages.append([])
            size = 0
        pages[-1].append(doc)
        size += doc_size
    texts = [it.dumps(page) for page in pages]
    sizes = [len(t.encode()) for t in texts]
    stash = set()
    for n in sorted(range(len(pages)), key=lambda n: -sizes[n]):
        if sum(sizes) <= budget and sizes[n] <= STASH_ABOVE:
            break
        stash.add(n)
        sizes[n] = 200
    writes = []
    for n, text in enumerate(texts):
        item: it.Item = {"pk": it.run_pk(run_id), "sk": f"{it.page_sk(state.writes)}#{n:05d}"}
        if n in stash:
            item["b"] = await unit.table.stash(run_id, text)
        else:
            item["d"] = text
        writes.append(put(item, "attribute_not_exists(pk)"))
    return writes


async def journal_writes(
    unit: Unit, state: RunState, ops: Sequence[OpRecord], others: Sequence[Write]
) -> list[Write]:
    """The writes of ``ops``: an item each when the transaction stays within DynamoDB's
    limits beside ``others``, else pages."""
    if not ops:
        return []
    writes_before = state.writes
    items = await op_writes(unit, state, ops)
    count = len(others) + len(items) + 1  # the run's head, written with them
    size = sum(w.size for w in (*others, *items)) + 2048
    if count <= TRANSACTION_ITEMS and size <= TRANSACTION_BYTES - 64 * 1024:
        return items
    state.writes = writes_before
    budget = TRANSACTION_BYTES - 64 * 1024 - sum(w.size for w in others)
    return await page_writes(unit, state, ops, budget)


def tombstone(state: RunState, op_id: str) -> Write:
    """Drop a record (and any paged copy of it) as of the run's current write, which the
    caller has moved past every earlier write of the record."""
    item = {"pk": it.run_pk(state.run.run_id), "sk": it.op_sk(op_id), "x": True, "w": state.writes}
    return put(item)


async def read_activation(
    table: Table, run_id: str
) -> tuple[list[OpRecord], list[CallbackRecord], list[it.Item]]:
    """The journal (in first-write order), the callbacks and the unapplied intents of a
    run, in one Query."""
    items = await table.partition(it.run_pk(run_id), "J#", "K~~")
    intents = [i for i in items if i["sk"].startswith("K~I#")]
    items = [i for i in items if not i["sk"].startswith("K~I#")]
    seen: dict[str, list[tuple[int, str, OpRecord | None]]] = {}
    callbacks: list[CallbackRecord] = []
    for item in items:
        sk: str = item["sk"]
        if sk.startswith("K#"):
            callbacks.append(it.callback_of(item))
        elif sk.startswith("JP#"):
            write = int(sk[3:].split("#")[0])
            for index, doc in enumerate(await load_doc(table, run_id, item)):
                op = it.op_of(doc["op_id"], doc["type"], doc["name"], doc.get("parent_id"), doc)
                place = f"{write:012d}#{sk}#{index:05d}"
                seen.setdefault(op.op_id, []).append((write, place, op))
        elif item.get("x"):
            seen.setdefault(sk[2:], []).append((item["w"], "", None))
        else:
            doc = await load_doc(table, run_id, item)
            op = it.op_of(sk[2:], item["ty"], item["nm"], item.get("pa"), doc)
            seen.setdefault(op.op_id, []).append((item["w"], item["p"], op))
    placed: list[tuple[str, OpRecord]] = []
    for writes in seen.values():
        writes.sort(key=lambda w: (w[0], w[2] is not None))
        live: list[tuple[int, str, OpRecord | None]] = []
        for entry in writes:
            live = [] if entry[2] is None else [*live, entry]
        if not live:
            continue
        first, last = live[0][2], live[-1][2]
        assert first is not None and last is not None
        merged = last.evolve(type=first.type, name=first.name, parent_id=first.parent_id)
        placed.append((min(w[1] for w in live), merged))
    placed.sort(key=lambda p: p[0])
    callbacks.sort(key=lambda c: (c.created_at, c.callback_id))
    return [op for _, op in placed], callbacks, intents
