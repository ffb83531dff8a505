"""``ctx.map`` and ``ctx.parallel``: run branches as child contexts under a concurrency cap
until the completion rules decide, and record the index-ordered result.

A batch whose record is final returns the recorded result without calling any branch: its
record holds what the whole batch changed in the state document. While a batch is still
running, a finished branch is not called again either (its own record holds its result
and its changes); only branches that have not finished run again.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cadenza._signals import Abort, Fatal, Suspend
from cadenza.batch import BatchItem, BatchResult, CompletionConfig, CompletionReason, ItemStatus
from cadenza.errors import RunCancelled, WorkflowDefinitionError
from cadenza.history import HistoryEventType as H
from cadenza.journal import OpRecord, OpStatus, OpType
from cadenza.operations import brief, callable_name
from cadenza.serde import SerDes, convert

if TYPE_CHECKING:
    from cadenza.context import Context


# The state document as JSON text, as ``_state_changes.snapshot`` sees it (non-JSON values
# as str): a child context or batch compares the texts before and after it ran, and diffs
# the snapshots only when they differ.
state_text = json.JSONEncoder(default=str).encode

MAP_SHAPES = ("fn(ctx, item)", "fn(ctx, item, index)", "fn(ctx, item, index, items)")


def map_branches(
    items: list[Any],
    fn: Callable[..., Awaitable[Any]],
    item_namer: Callable[[Any, int], str] | None,
    what: str,
) -> tuple[list[Callable[[Context], Awaitable[Any]]], list[str] | None]:
    """The branch of each item, called with as many of (item, index, items) as ``fn``
    takes, and the child context name ``item_namer`` gives each item (None: defaults)."""
    arity = map_arity(fn, what)
    branches: list[Callable[[Context], Awaitable[Any]]] = [
        functools.partial(_call_with_item, fn, (item, index, items)[: arity - 1])
        for index, item in enumerate(items)
    ]
    if item_namer is None:
        return branches, None
    if not callable(item_namer):
        raise WorkflowDefinitionError(
            f"item_namer of {what} must be a function called as item_namer(item, index)"
            f" that returns the item's name; got {type(item_namer).__name__}"
        )
    names = []
    for index, item in enumerate(items):
        item_name = item_namer(item, index)
        if not isinstance(item_name, str) or not item_name:
            raise WorkflowDefinitionError(
                f"item_namer of {what} returned {item_name!r} for item {index}; it must"
                " return a non-empty str, the name of the item's child context"
            )
        names.append(item_name)
    return branches, names


def parallel_branches(
    branches: Sequence[Callable[[Context], Awaitable[Any]]]
    | Mapping[str, Callable[[Context], Awaitable[Any]]],
    what: str,
) -> tuple[list[Callable[[Context], Awaitable[Any]]], list[str] | None]:
    """The branches of ``ctx.parallel`` in order, and their names when given as a mapping."""
    if isinstance(branches, Mapping):
        names = list(branches)
        for key in names:
            if not isinstance(key, str) or not key:
                raise WorkflowDefinitionError(
                    f"{what} takes named branches as {{name: branch}} with non-empty str"
                    f" names; got the name {key!r}"
                )
            check_branch(branches[key], "fn(ctx)", f"branch {key!r} of {what}")
        return list(branches.values()), names
    listed = list(branches)
    for index, branch in enumerate(listed):
        check_branch(branch, "fn(ctx)", f"branch {index} of {what}")
    return listed, None


def map_arity(fn: Any, what: str) -> int:
    """How many arguments ``fn`` takes of (ctx, item, index, items): 2, 3 or 4."""
    others = f" (or {', '.join(MAP_SHAPES[1:])})"
    if not callable(fn):
        check_branch(fn, MAP_SHAPES[0], what, others)  # says what to pass instead
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a callable that hides its signature
        return 2
    kinds = [p.kind for p in parameters]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return 4
    positional = sum(
        k in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for k in kinds
    )
    arity = min(max(positional, 2), 4)
    check_branch(fn, MAP_SHAPES[arity - 2], what, others)  # e.g. a fifth parameter without default
    return arity


async def _call_with_item(
    fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], ctx: Context
) -> Any:
    return await fn(ctx, *args)


def check_branch(fn: Any, shape: str, what: str, others: str = "") -> None:
    """Refuse, at the call, a branch that cannot be called as ``shape`` (``fn(ctx)``,
    ``fn(ctx, item)``, …), rather than fail every item of the batch the same way;
    ``others`` names the other shapes the caller accepts."""
    arity = shape.count(",") + 1
    if not callable(fn):
        raise WorkflowDefinitionError(
            f"{what} must be an async function called as {shape};"
            f" got {type(fn).__name__} {repr(fn)[:60]}{others}"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a callable that hides its signature: let it run
        return
    try:
        signature.bind(*([None] * arity))
    except TypeError as exc:
        name = callable_name(fn)
        stars: dict[Any, str] = {
            inspect.Parameter.VAR_POSITIONAL: "*",
            inspect.Parameter.VAR_KEYWORD: "**",
        }
        takes = ", ".join(stars.get(p.kind, "") + p.name for p in signature.parameters.values())
        raise WorkflowDefinitionError(
            f"{what} is called as {shape}, but {name}({takes}) cannot be ({exc});"
            f" define it as async def {shape.replace('fn', name)}{others.replace('fn', name)}"
        ) from None


async def run_batch(
    ctx: Context,
    op_type: OpType,
    name: str,
    branches: Sequence[Callable[[Context], Awaitable[Any]]],
    types: list[Any],
    max_concurrency: int | None,
    completion: CompletionConfig | None,
    names: list[str] | None = None,
    item_serdes: SerDes[Any] | None = None,
    serdes: SerDes[Any] | None = None,
) -> BatchResult:
    """``names`` names each branch's child context; by default ``<batch name>[<index>]``.
    ``item_serdes`` stores each item's result, ``serdes`` the whole BatchResult."""
    if max_concurrency is not None and max_concurrency < 1:
        raise WorkflowDefinitionError(f"{op_type} '{name}': max_concurrency must be >= 1")
    completion = completion or CompletionConfig()
    op_id, rec = ctx._begin(op_type, name)
    act = ctx._runtime
    names = names or [f"{name}[{index}]" for index in range(len(branches))]
    # A branch's name is part of its identity, as for any operation: a branch that ran
    # under another name belongs to other code.
    for index, child_name in enumerate(names):
        child_rec = act.journal.get(f"{op_id}.{index + 1}")
        if child_rec is not None and child_rec.name != child_name:
            raise act.nondeterminism(child_rec.op_id, child_rec, str(OpType.CONTEXT), child_name)
    if rec is not None and rec.status.terminal:
        what = f"the result of {op_type} '{name}'"
        if "state_changes" in rec.data:
            await ctx._restore_child(rec, _nothing, ())
        else:  # recorded before batches kept their changes: replay the finished branches
            legacy = BatchResult.from_dict(await act.codec.decode(rec.result, what=what))
            finished = [
                i.index
                for i in legacy.items
                if i.status in (ItemStatus.SUCCEEDED, ItemStatus.FAILED)
            ]
            await asyncio.gather(
                *(ctx._replay_child(f"{op_id}.{i + 1}", branches[i], ()) for i in finished)
            )
        recorded = await _read_batch(ctx, rec, op_id, item_serdes, serdes, what)
        return typed_batch(
            recorded, types, names, convert_items=item_serdes is None and serdes is None
        )
    before = state_text(act.state.to_dict())
    if rec is None:
        rec = OpRecord(
            op_id,
            op_type,
            name,
            OpStatus.STARTED,
            ctx._parent,
            started_at=act.now(),
            data={"size": len(branches)},
        )
        act.record(rec)
        act.note(H.CONTEXT_STARTED, rec, operation=str(op_type), size=len(branches))
    total = len(branches)
    outcomes: dict[int, tuple[bool, Any]] = {}
    gate = asyncio.Semaphore(max_concurrency or max(total, 1))
    decided = asyncio.Event()
    reason: list[CompletionReason] = (
        [completion.verdict(0, 0, total) or CompletionReason.ALL_COMPLETED] if total == 0 else []
    )
    suspended = False
    escape: BaseException | None = None
    # An item counts as started once it ran here or in an earlier activation (its child
    # context has a record); one the decision beat to a slot never started at all.
    started = {i for i in range(total) if f"{op_id}.{i + 1}" in act.journal}
    # Items that finished in an earlier activation are not called again: their records
    # give back their results and, in the order they finished, their state changes, before
    # the unfinished items run again (whose writes then come after, as they did live).
    earlier = {
        i: child
        for i in range(total)
        if (child := act.journal.get(f"{op_id}.{i + 1}")) is not None
        and child.status.terminal
        and "state_changes" in child.data
    }
    for index, child in sorted(earlier.items(), key=lambda e: e[1].data.get("finished") or []):
        await ctx._restore_child(child, _nothing, ())
        ok = child.status == OpStatus.SUCCEEDED
        outcomes[index] = (True, child.result) if ok else (False, child.error)
    # Counted as outcomes arrive: recounting them after every item is quadratic in a map.
    succeeded = sum(1 for ok, _ in outcomes.values() if ok)
    if earlier:
        verdict = completion.verdict(succeeded, len(outcomes) - succeeded, total)
        if verdict is not None:
            reason.append(verdict)
            decided.set()

    async def run_item(index: int) -> None:
        nonlocal suspended, escape, succeeded
        async with gate:
            if decided.is_set():
                return
            child_id = f"{op_id}.{index + 1}"
            child_rec = act.journal.get(child_id)
            started.add(index)
            try:
                outcome = await ctx._run_child(
                    child_id, names[index], branches[index], (), child_rec, item_serdes
                )
            except Suspend:
                suspended = True
                return
            except (Abort, Fatal, RunCancelled) as exc:
                escape = escape or exc
                decide()
                return
            outcomes[index] = outcome
            succeeded += outcome[0]
        verdict = completion.verdict(succeeded, len(outcomes) - succeeded, total)
        if verdict is not None and not decided.is_set():
            reason.append(verdict)
            decide()

    # The batch waits until it is decided or every item's task has ended. One event and
    # a count of the tasks still running: asyncio.wait over the pending tasks after each
    # item would cost time in proportion to the batch size, per item.
    over = asyncio.Event()
    running = 0

    def decide() -> None:
        decided.set()
        over.set()

    def task_ended(_: asyncio.Task[None]) -> None:
        nonlocal running
        running -= 1
        if running == 0:
            over.set()

    tasks = [asyncio.create_task(run_item(i)) for i in range(total) if i not in earlier]
    running = len(tasks)
    for task in tasks:
        task.add_done_callback(task_ended)
    try:
        if tasks and not decided.is_set():
            await over.wait()
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if escape is not None:
        raise escape
    if not reason:
        if suspended:
            raise Suspend()
        reason.append(CompletionReason.ALL_COMPLETED)
    items = []
    kept = []  # as the batch record keeps them: an item_serdes item as its stored text
    for index in range(total):
        if index not in outcomes:
            status = ItemStatus.STARTED if index in started else ItemStatus.NOT_STARTED
            items.append(BatchItem(index, status, name=names[index]))
            kept.append(items[-1])
            continue
        ok, value = outcomes[index]
        if ok:
            # An item's result may be claim-checked: the batch records the value itself.
            what = f"the result of {name}[{index}]"
            data = await act.codec.decode_with(
                value, item_serdes, f"{op_id}.{index + 1}", what=what
            )
            items.append(BatchItem(index, ItemStatus.SUCCEEDED, data, name=names[index]))
            if item_serdes is not None and serdes is None:
                data = await act.codec.decode(value, what=what)
            kept.append(BatchItem(index, ItemStatus.SUCCEEDED, data, name=names[index]))
        else:
            items.append(BatchItem(index, ItemStatus.FAILED, error=value, name=names[index]))
            kept.append(items[-1])
    result = BatchResult(items, reason[0])
    first_failed = next((i for i in items if i.status == ItemStatus.FAILED and i.error), None)
    what = f"the result of {op_type} '{name}'"
    if serdes is not None:
        text = await act.codec.encode_with(result, serdes, op_id, what=what)
    else:
        text = await act.codec.encode(BatchResult(kept, reason[0]).to_dict(), what=what)
    done = rec.evolve(
        status=OpStatus.SUCCEEDED,
        result=text,
        ended_at=act.now(),
        data={**rec.data, **await ctx._state_changes(before, name)},
    )
    act.record(done)
    act.note(
        H.CONTEXT_SUCCEEDED,
        done,
        completion_reason=str(result.completion_reason),
        succeeded=result.success_count,
        failed=result.failure_count,
        started=result.started_count,
        not_started=result.not_started_count,
        first_error=brief(first_failed.error) if first_failed and first_failed.error else None,
    )
    return typed_batch(result, types, names, convert_items=item_serdes is None and serdes is None)


async def _nothing(ctx: Context) -> None:
    """Stands for the function of a batch whose record holds its changes (never called)."""


async def _read_batch(
    ctx: Context,
    rec: OpRecord,
    op_id: str,
    item_serdes: SerDes[Any] | None,
    serdes: SerDes[Any] | None,
    what: str,
) -> BatchResult:
    """The BatchResult a finished batch recorded, its items' values rebuilt."""
    codec = ctx._runtime.codec
    if serdes is not None:
        result = await codec.decode_with(rec.result, serdes, op_id, what=what)
        if not isinstance(result, BatchResult):
            raise WorkflowDefinitionError(
                f"{type(serdes).__name__}.deserialize returned {type(result).__name__} for"
                f" {what}; the serdes of a batch must give back a BatchResult"
            )
        return result
    recorded = BatchResult.from_dict(await codec.decode(rec.result, what=what))
    if item_serdes is None:
        return recorded
    items = []
    for item in recorded.items:
        if item.status == ItemStatus.SUCCEEDED and isinstance(item.result, str):
            # The batch keeps each item as the text its SerDes wrote, as a JSON string.
            text = json.dumps(item.result)
            child_id = f"{op_id}.{item.index + 1}"
            value = await codec.decode_with(text, item_serdes, child_id, what=what)
            item = BatchItem(item.index, item.status, value, item.error, item.name)
        items.append(item)
    return BatchResult(items, recorded.completion_reason)


def typed_batch(
    result: BatchResult, types: list[Any], names: list[str], *, convert_items: bool = True
) -> BatchResult:
    """The result with each item's value converted to its branch's return type (unless a
    SerDes rebuilt it: ``convert_items`` False), and each item named as its branch is now
    (a result recorded before names were kept has none)."""
    if not convert_items:
        types = [None] * len(types)
    items = [
        BatchItem(
            i.index,
            i.status,
            convert(i.result, types[i.index], what=f"the result of item {i.index}")
            if i.status == ItemStatus.SUCCEEDED and i.index < len(types)
            else i.result,
            i.error,
            names[i.index] if i.index < len(names) else i.name,
        )
        for i in result.items
    ]
    return BatchResult(items, result.completion_reason)
