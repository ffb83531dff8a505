"""Live progress of the runs ``cadenza run`` drives in this process.

:class:`ProgressBoard` follows them: operations as they start (the engine's activity feed,
before anything is committed), what each checkpoint finished, and the text models stream.
It answers two questions: which lines are done (they scroll by, a log), and what runs now
(the status area: each operation with its elapsed time, N of M for a batch, the latest
words of each model stream under its operation's name).

On a terminal, :class:`LiveProgress` keeps the status area at the bottom with rich's
``Live`` (transient: it goes away when the run settles, the log of finished operations
stays). Elsewhere (a pipe, a CI log) :class:`LineProgress` prints the log alone, with each
model stream labelled by its operation.

Every name, error and streamed word is untrusted text: it is shown literally, never read
as markup, with control characters made visible.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from cadenza.cli._common import visible
from cadenza.history import HistoryEvent
from cadenza.history import HistoryEventType as H
from cadenza.journal import OpRecord
from cadenza.ports.run_store import Checkpoint, RunRecord

__all__ = ["LineProgress", "LiveProgress", "ProgressBoard", "finished_line"]

#: Rows of running operations the status area shows before it summarises the rest.
MAX_ROWS = 8
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_STARTS = {
    H.STEP_STARTED: "step",
    H.WAIT_STARTED: "wait",
    H.INVOKE_STARTED: "child run",
}
_ENDS = {
    H.STEP_SUCCEEDED,
    H.STEP_FAILED,
    H.WAIT_SUCCEEDED,
    H.CONTEXT_SUCCEEDED,
    H.CONTEXT_FAILED,
    H.INVOKE_SUCCEEDED,
    H.INVOKE_FAILED,
}


@dataclass
class Running:
    """One operation in flight, as the status area shows it."""

    run_id: str
    op_id: str
    kind: str
    name: str
    since: float
    size: int | None = None  # a batch's item count
    done: set[str] = field(default_factory=set)  # a batch's finished items
    failed: set[str] = field(default_factory=set)  # those of them that failed
    streamed: list[str] = field(default_factory=list)


class ProgressBoard:
    """What the runs driven here are doing: the state behind both displays."""

    def __init__(self, root: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self._clock = clock
        self._running: dict[tuple[str, str], Running] = {}
        self._lock = threading.Lock()

    # --- what happens ---------------------------------------------------------------------

    def noted(self, run_id: str, event: HistoryEvent) -> None:
        """An operation began, or an item of a batch finished: from the activity feed as
        it happens, or found in a checkpoint (whichever comes first counts)."""
        if event.op_id is None:
            return
        with self._lock:
            batch = self._running.get((run_id, event.parent_id or ""))
            if batch is not None and batch.size is not None:  # an item of a batch
                if event.type in (H.CONTEXT_SUCCEEDED, H.CONTEXT_FAILED):
                    batch.done.add(event.op_id)
                    if event.type == H.CONTEXT_FAILED:
                        batch.failed.add(event.op_id)
                return
            key = (run_id, event.op_id)
            kind = _STARTS.get(event.type)
            size = None
            if event.type == H.CONTEXT_STARTED:
                operation = event.details.get("operation")
                is_batch = operation in ("map", "parallel")
                kind = str(operation) if is_batch else "context"
                size = int(event.details.get("size") or 0) if is_batch else None
            if kind is None or key in self._running:
                return
            name = event.name or event.op_id
            self._running[key] = Running(run_id, event.op_id, kind, name, self._clock(), size)

    def committed(
        self, run: RunRecord, checkpoint: Checkpoint, *, with_streams: bool = True
    ) -> list[Text]:
        """The lines a checkpoint finished, in order (with the whole text each finished
        operation streamed, when ``with_streams``); updates what is running."""
        ops = {op.op_id: op for op in checkpoint.ops}
        prefix = "" if run.run_id == self.root else f"{visible(run.run_id)} "
        lines: list[Text] = []
        for event in checkpoint.history:
            self.noted(run.run_id, event)
            with self._lock:
                ended = self._end(run.run_id, event)
            if with_streams and ended is not None and ended.streamed:
                lines.append(_stream_block(ended, self._label(run.run_id, ended.name)))
            line = finished_line(event, ops.get(event.op_id or ""))
            if line is not None:
                lines.append(Text.assemble("  ", (prefix, "dim"), line))
        if checkpoint.releases:  # suspended or ended: nothing of this run runs any more
            with self._lock:
                for key in [k for k in self._running if k[0] == run.run_id]:
                    del self._running[key]
        return lines

    def streamed(self, run_id: str, op_id: str, text: str) -> None:
        with self._lock:
            running = self._running.get((run_id, op_id))
            if running is None:  # its start is not known yet: show it under its id
                running = Running(run_id, op_id, "step", op_id, self._clock())
                self._running[(run_id, op_id)] = running
            running.streamed.append(text)

    def name_of(self, run_id: str, op_id: str) -> str:
        with self._lock:
            running = self._running.get((run_id, op_id))
        return self._label(run_id, running.name if running else op_id)

    def _end(self, run_id: str, event: HistoryEvent) -> Running | None:
        if event.type not in _ENDS or event.op_id is None:
            return None
        batch = self._running.get((run_id, event.parent_id or ""))
        if batch is not None and batch.size is not None:
            return None  # an item: counted by noted()
        # A step that failed and backs off is not running either: its retry starts anew.
        return self._running.pop((run_id, event.op_id), None)

    def _label(self, run_id: str, name: str) -> str:
        return name if run_id == self.root else f"{run_id} {name}"

    # --- what is shown --------------------------------------------------------------------

    def status(self, width: int = 80) -> list[Text]:
        """The status area: one row per running operation (oldest first), each model
        stream's latest words under its operation's name."""
        now = self._clock()
        with self._lock:
            running = sorted(self._running.values(), key=lambda r: r.since)
            rows = [_row(r, now, self._label(r.run_id, r.name), width) for r in running]
        shown = [line for row in rows[:MAX_ROWS] for line in row]
        if len(rows) > MAX_ROWS:
            shown.append(Text(f"  … and {len(rows) - MAX_ROWS} more running", style="dim"))
        return shown


def _row(r: Running, now: float, label: str, width: int) -> list[Text]:
    elapsed = max(now - r.since, 0.0)
    spinner = _SPINNER[int(elapsed * 10) % len(_SPINNER)]
    row = Text.assemble(("  " + spinner + " ", "cyan"), f"{r.kind} ", visible(label))
    if r.size is not None:
        row.append(f"  {len(r.done)}/{r.size}")
        if r.failed:
            row.append(f" ({len(r.failed)} failed)", style="red")
    row.append(f"  {_elapsed(elapsed)}", style="dim")
    lines = [row]
    if r.streamed:
        head = f"    {label}: "
        tail = visible("".join(r.streamed).rstrip().rsplit("\n", 1)[-1])
        room = max(width - len(head) - 1, 10)
        if len(tail) > room:
            tail = "…" + tail[-(room - 1) :]
        lines.append(Text.assemble((visible(head), "dim"), (tail, "italic")))
    return lines


def _elapsed(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _stream_block(running: Running, label: str) -> Text:
    text = "".join(running.streamed).strip()
    return Text.assemble(
        (f"  {visible(label)}: ", "dim"), (visible(text, multiline=True), "dim italic")
    )


def finished_line(event: HistoryEvent, op: OpRecord | None) -> Text | None:
    """The log line of a history event worth a line, or None."""
    took = ""
    if op is not None and op.started_at and op.ended_at:
        took = f" {(op.ended_at - op.started_at).total_seconds() * 1000:.0f} ms"
    d = event.details
    name = visible(event.name or "")
    match event.type:
        case H.STEP_SUCCEEDED if d.get("next_attempt_at"):  # a wait_for_condition check
            again = str(d["next_attempt_at"])[11:19]
            return Text.assemble(("…", "cyan"), f" condition {name} not met, again at {again}")
        case H.STEP_SUCCEEDED:
            return Text.assemble(("✓", "green"), f" step {name}", (took, "dim"))
        case H.STEP_FAILED:
            then = (
                "gave up"
                if d.get("final")
                else f"retry at {str(d.get('next_attempt_at', '?'))[11:19]}"
            )
            return Text.assemble(("✗", "red"), f" step {name}: {_error(d)} ({then})")
        case H.WAIT_STARTED:
            return Text.assemble(
                ("…", "cyan"), f" wait {name} until {str(d.get('until', '?'))[11:19]}"
            )
        case H.CALLBACK_STARTED:
            return Text.assemble(("⏸", "yellow"), f" callback {name} opened")
        case H.CALLBACK_SUCCEEDED | H.EVENT_WAIT_SUCCEEDED | H.INVOKE_SUCCEEDED:
            return Text.assemble(("✓", "green"), f" {event.type} {name}")
        case H.CALLBACK_FAILED | H.CALLBACK_TIMED_OUT | H.INVOKE_FAILED | H.EVENT_WAIT_TIMED_OUT:
            return Text.assemble(("✗", "red"), f" {event.type} {name}")
        case H.INVOKE_STARTED:
            return Text.assemble(
                ("→", "cyan"),
                f" child run {visible(d.get('child_run_id'))} ({visible(d.get('workflow'))})",
            )
        case H.EVENT_EMITTED:
            return Text.assemble(("↗", "cyan"), f" event {name}")
        case H.EVENT_WAIT_STARTED:
            return Text.assemble(("⏸", "yellow"), f" waiting for event {name}")
        case H.CONTEXT_SUCCEEDED if d.get("completion_reason"):
            return _batch_line(name, d)
        case H.EXECUTION_SUCCEEDED:
            return Text("✓ run succeeded", style="green bold")
        case H.EXECUTION_FAILED:
            return Text.assemble(("✗ run failed:", "red bold"), f" {_error(d, with_type=False)}")
    return None


def _batch_line(name: str, d: dict[str, Any]) -> Text:
    succeeded, failed = int(d.get("succeeded", 0)), int(d.get("failed", 0))
    if not failed:
        return Text.assemble(("✓", "green"), f" {name}: {succeeded} succeeded")
    line = Text.assemble(
        ("✗", "red"), (f" {name}: {failed} of {succeeded + failed} items failed", "red")
    )
    first = d.get("first_error")
    if isinstance(first, dict):
        line.append(f"; first: {_error({'error': first})}", style="red")
    return line


def _error(details: dict[str, Any], *, with_type: bool = True) -> str:
    error = details.get("error")
    if not isinstance(error, dict):
        return "?"
    message = visible(error.get("message", ""))
    return f"{visible(error.get('type'))}: {message}" if with_type else message


class LineProgress:
    """The log alone, for a pipe or a file: finished operations as they happen, model
    streams as they arrive, each stream introduced by its operation's name."""

    def __init__(self, board: ProgressBoard, console: Console) -> None:
        self.board = board
        self.console = console
        self._streaming: tuple[str, str] | None = None

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_stream()

    def activity(self, run: RunRecord, event: HistoryEvent) -> None:
        self.board.noted(run.run_id, event)

    def committed(self, run: RunRecord, checkpoint: Checkpoint) -> None:
        # Streams were printed as they came: the log does not repeat them.
        for line in self.board.committed(run, checkpoint, with_streams=False):
            self._end_stream()
            self.console.print(line)

    def stream(self, run_id: str, op_id: str, text: str) -> None:
        self.board.streamed(run_id, op_id, text)
        if self._streaming != (run_id, op_id):
            self._end_stream()
            label = self.board.name_of(run_id, op_id)
            self.console.print(Text(f"  … {visible(label)}: ", style="dim"), end="")
            self._streaming = (run_id, op_id)
        self.console.print(Text(visible(text, multiline=True), style="dim"), end="")

    def _end_stream(self) -> None:
        if self._streaming is not None:
            self.console.print()
            self._streaming = None


class LiveProgress:
    """The log above, the status area below, redrawn a few times a second."""

    def __init__(self, board: ProgressBoard, console: Console) -> None:
        self.board = board
        self.console = console
        self._live = Live(
            get_renderable=self._render,
            console=console,
            transient=True,
            refresh_per_second=8,
        )

    def __enter__(self) -> LiveProgress:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def _render(self) -> Group:
        return Group(*self.board.status(self.console.width))

    def activity(self, run: RunRecord, event: HistoryEvent) -> None:
        self.board.noted(run.run_id, event)

    def committed(self, run: RunRecord, checkpoint: Checkpoint) -> None:
        lines = self.board.committed(run, checkpoint)
        for line in lines:
            self._live.console.print(line)
        if lines:  # printing redraws the status area as it was: bring it up to date
            self._live.refresh()

    def stream(self, run_id: str, op_id: str, text: str) -> None:
        self.board.streamed(run_id, op_id, text)
