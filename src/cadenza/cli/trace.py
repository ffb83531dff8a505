"""``cadenza runs trace RUN``: every run of RUN's trace as one terminal waterfall.

One line per run and per operation, indented as they nest (child contexts, map items,
invoked and rule-started runs), with a bar placed on the trace's time axis, the duration,
retries, waits and the model cost of each.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import click
from rich.text import Text

from cadenza.cli._common import console, emit_json, json_option, money, run_async
from cadenza.engine.engine import Engine
from cadenza.telemetry._spans import OpSpan
from cadenza.telemetry._trace import TraceNode, TraceTree, load_trace

BAR = 32
LABEL = 72  # widest operation column; longer labels end with …
_STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "timedout": "red",
    "stopped": "yellow",
    "running": "cyan",
    "retrying": "yellow",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "yellow",
}


@click.command("trace")
@click.argument("run_id")
@json_option
def trace_command(run_id: str, as_json: bool) -> None:
    """The waterfall of RUN_ID's trace: its runs and their operations on one time axis."""

    @run_async
    async def body(engine: Engine) -> tuple[TraceTree, datetime]:
        return await load_trace(engine, run_id), engine.clock.now()

    tree, now = body()
    if as_json:
        emit_json(_as_json(tree, now))
        return
    console.print(_waterfall(tree, now), no_wrap=True, overflow="ignore", crop=False)
    runs = sum(1 for _ in tree.nodes())
    ops = list(tree.ops())
    retries = sum(op.retries for op in ops)
    summary = (
        f"trace {tree.trace_id}: {runs} run(s), {len(ops)} operation(s), {retries} retries,"
        f" {_span(tree.end(now) - tree.start)}, {money(tree.cost_usd)}"
    )
    if tree.truncated:
        summary += " (cut at the first 500 runs)"
    console.print(summary, highlight=False, markup=False)


@dataclass
class _Row:
    label: Text
    bar: Text
    took: str
    status: Text
    cost: str


def _waterfall(tree: TraceTree, now: datetime) -> Text:
    """The trace as aligned lines of text. Built by hand rather than as a rich Table: a
    run of 10,000 operations is 10,000 lines, and a table lays out every cell twice."""
    start, total = tree.start, max((tree.end(now) - tree.start).total_seconds(), 1e-6)
    rows: list[_Row] = []

    def bar(begin: datetime, end: datetime | None, style: str) -> Text:
        offset = int((begin - start).total_seconds() / total * BAR)
        width = max(1, round(((end or now) - begin).total_seconds() / total * BAR))
        offset = min(offset, BAR - 1)
        width = min(width, BAR - offset)
        return Text.assemble(" " * offset, ("█" * width, style), " " * (BAR - offset - width))

    def add_run(node: TraceNode, depth: int) -> None:
        span = node.span
        label = Text.assemble("  " * depth, (f"{span.run.workflow} ", "bold"))
        label.append(span.run.run_id, style="dim")
        if node.started_by:
            label.append(f" ({node.started_by})", style="dim")
        status = str(span.run.status)
        extra = f" · {span.activations} activations" if span.activations > 1 else ""
        rows.append(
            _Row(
                label,
                bar(span.start, span.end, _STATUS_STYLE.get(status, "white")),
                _span(span.duration(now)),
                Text(status.lower() + extra, style=_STATUS_STYLE.get(status, "")),
                money(span.cost_usd) if span.cost_usd else "",
            )
        )
        by_parent: dict[str | None, list[OpSpan]] = defaultdict(list)
        for op in span.ops:
            by_parent[op.parent_id].append(op)
        children_at: dict[str | None, list[TraceNode]] = defaultdict(list)
        for child in node.children:
            children_at[child.parent_op].append(child)

        def add_ops(parent: str | None, level: int) -> None:
            for op in sorted(by_parent.get(parent, []), key=lambda o: (o.start, o.op_id)):
                add_op(op, level)
                add_ops(op.op_id, level + 1)
                for child in children_at.pop(op.op_id, []):
                    add_run(child, level + 1)

        add_ops(None, depth + 1)
        for rest in children_at.values():  # runs whose starting operation is not known
            for child in rest:
                add_run(child, depth + 1)

    def add_op(op: OpSpan, level: int) -> None:
        style = _STATUS_STYLE.get(op.status, "white")
        label = Text.assemble("  " * level, op.name, (f" {op.kind} {op.op_id}", "dim"))
        notes = [op.status]
        if op.retries:
            notes.append(f"↻{op.retries}")
        if op.model is not None:
            notes.append(f"{op.model.input_tokens}→{op.model.output_tokens} tok")
        if op.error and op.status != "succeeded":
            notes.append(op.error[:60])
        cost = op.model.cost_usd if op.model is not None else 0.0
        rows.append(
            _Row(
                label,
                bar(op.start, op.end, style),
                _span(op.duration(now)),
                Text(" ".join(notes), style=style),
                money(cost) if cost else "",
            )
        )

    for root in tree.roots:
        add_run(root, 0)
    return _aligned(rows)


def _aligned(rows: list[_Row]) -> Text:
    header = _Row(Text("operation"), Text("timeline".ljust(BAR)), "took", Text("status"), "cost")
    label_width = min(max(len(row.label) for row in [header, *rows]), LABEL)
    took_width = max(len(row.took) for row in [header, *rows])
    status_width = min(max(len(row.status) for row in [header, *rows]), 48)
    out = Text()
    for index, row in enumerate([header, *rows]):
        label = row.label
        if len(label) > label_width:
            label = label[: label_width - 1] + Text("…")
        line = Text.assemble(
            label, " " * (label_width - len(label) + 2), row.bar, "  ", row.took.ljust(took_width)
        )
        line += Text("  ") + row.status[:status_width]
        if row.cost:
            line.append(" " * (status_width - min(len(row.status), status_width) + 2) + row.cost)
        if index == 0:
            line.stylize("bold")
        out.append(line)
        out.append("\n")
    out.rstrip()
    return out


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _as_json(tree: TraceTree, now: datetime) -> dict[str, Any]:
    def node(item: TraceNode) -> dict[str, Any]:
        span = item.span
        return {
            "run_id": span.run.run_id,
            "workflow": span.run.workflow,
            "status": str(span.run.status),
            "started_by": item.started_by,
            "parent_op": item.parent_op,
            "start": span.start.isoformat(),
            "end": span.end.isoformat() if span.end else None,
            "duration_ms": round(span.duration(now).total_seconds() * 1000, 3),
            "activations": span.activations,
            "cost_usd": round(span.cost_usd, 8),
            "operations": [
                {
                    **{k: v for k, v in asdict(op).items() if k not in ("start", "end", "model")},
                    "start": op.start.isoformat(),
                    "end": op.end.isoformat() if op.end else None,
                    "duration_ms": round(op.duration(now).total_seconds() * 1000, 3),
                    "retries": op.retries,
                    "model": asdict(op.model) if op.model is not None else None,
                }
                for op in span.ops
            ],
            "children": [node(child) for child in item.children],
        }

    return {
        "trace_id": tree.trace_id,
        "truncated": tree.truncated,
        "cost_usd": round(tree.cost_usd, 8),
        "runs": [node(root) for root in tree.roots],
    }
