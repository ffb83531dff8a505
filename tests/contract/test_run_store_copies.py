"""The run-store contract for what callers hand over and get back: stored records are the
store's own (changing a record read or written changes nothing stored), documents come back
as JSON, and a cancellation the store cannot finish writes nothing."""

from __future__ import annotations

import pytest

from cadenza.errors import CallbackNotFound, ErrorInfo
from cadenza.history import HistoryEventType
from cadenza.journal import OpStatus
from cadenza.ports.run_store import CallbackKind, Rule, RunStatus, RunStore
from tests.contract._support import (
    at,
    callback,
    cancel_tree,
    checkpoint,
    child,
    claim_one,
    create,
    envelope,
    new_run,
    started,
    step,
)


async def test_records_read_or_written_are_copies(store: RunStore) -> None:
    written = new_run("r-1", state={"plan": ["a"]})
    returned = await store.create_run(written, started())
    written.state["plan"].append("written")
    returned.state["plan"].append("returned")
    (await store.get_run("r-1")).state["plan"].append("read")
    assert (await store.get_run("r-1")).state == {"plan": ["a"]}

    run = await claim_one(store, "r-1")
    op = step("1")
    cb = callback("cb-1", "r-1", kind=CallbackKind.EVENT, pattern={"source": ["x"]})
    event = envelope("e-1", n=1)
    await store.commit(checkpoint(run, ops=[op], callbacks=[cb], events=[event]))
    op.data["k"].append(3)
    assert cb.pattern is not None
    cb.pattern["source"].append("y")
    event["detail"]["n"] = 2
    (await store.load_journal("r-1"))[0].data["k"].append(4)
    (await store.get_callback("cb-1")).pattern["source"].append("z")  # type: ignore[index]
    (await store.fetch_outbox(limit=1))[0].event["detail"]["n"] = 3
    assert [o.data for o in await store.load_journal("r-1")] == [{"k": [1, 2]}]
    assert (await store.get_callback("cb-1")).pattern == {"source": ["x"]}
    assert [e.event["detail"] for e in await store.list_events()] == [{"n": 1}]

    rule = Rule("r", {"source": ["x"]}, "start_workflow", {"workflow": "w"}, created_at=at(0))
    await store.put_rule(rule)
    rule.params["workflow"] = "changed"
    (await store.list_rules())[0].pattern["source"].append("y")
    assert await store.list_rules() == [
        Rule("r", {"source": ["x"]}, "start_workflow", {"workflow": "w"}, created_at=at(0))
    ]


async def test_documents_come_back_as_json(store: RunStore) -> None:
    await create(store, "r-1", state={"pair": (1, 2)})
    assert (await store.get_run("r-1")).state == {"pair": [1, 2]}
    run = await claim_one(store, "r-1")
    failed = step("1", status=OpStatus.FAILED).evolve(
        error=ErrorInfo("ValueError", "bad", details={"span": (3, 4)})
    )
    await store.commit(checkpoint(run, ops=[failed]))
    [stored] = await store.load_journal("r-1")
    assert stored.error is not None and stored.error.details == {"span": [3, 4]}


async def test_a_cancellation_that_cannot_finish_writes_nothing(store: RunStore) -> None:
    """A child whose parent holds no callback for it cannot report its end: nothing of
    the cancellation of the tree is kept, not even the flag on the parent."""
    await create(store, "r-parent")
    parent = await claim_one(store, "r-parent", lease=100)
    orphan = new_run("r-kid", parent_run_id="r-parent", parent_op_id="1")
    await store.commit(checkpoint(parent, children=[child(orphan)]))
    with pytest.raises(CallbackNotFound):
        await cancel_tree(store, "r-parent", 2)
    assert not (await store.get_run("r-parent")).cancel_requested
    kid = await store.get_run("r-kid")
    assert (kid.status, kid.cancel_requested) == (RunStatus.PENDING, False)
    assert [e.type for e in await store.history("r-kid")] == [HistoryEventType.EXECUTION_STARTED]
