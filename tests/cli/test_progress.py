"""The live progress of ``cadenza run``: what the status area shows for a given set of
operations in flight, what the log prints as they finish, and the whole view on a real
terminal (a pseudo-terminal). Also the one helper every human output goes through."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cadenza.cli._common import json_text, literal, parse_json, visible
from cadenza.cli._progress import MAX_ROWS, ProgressBoard
from cadenza.errors import InvalidInput
from cadenza.history import HistoryEvent
from cadenza.history import HistoryEventType as H
from cadenza.ports.run_store import Checkpoint, RunOutcome, RunRecord, RunStatus

REPO_ROOT = Path(__file__).resolve().parents[2]
CADENZA = str(Path(sys.executable).with_name("cadenza"))
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(run_id: str = "r-1") -> RunRecord:
    return RunRecord(run_id, "wf", "1", RunStatus.RUNNING, "null", T0, T0)


def event(
    type: H, op_id: str, name: str | None = None, parent: str | None = None, **details: object
) -> HistoryEvent:
    return HistoryEvent(0, type, T0, op_id=op_id, parent_id=parent, name=name, details=details)


def checkpoint(*history: HistoryEvent, outcome: RunOutcome | None = None) -> Checkpoint:
    return Checkpoint("r-1", "me", 1, T0, history=list(history), outcome=outcome)


def shown(board: ProgressBoard, width: int = 80) -> list[str]:
    """The status area as plain text, spinners replaced by '*'."""
    return [re.sub("^  [⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] ", "  * ", t.plain) for t in board.status(width)]


# --- the status area ---------------------------------------------------------------------


def test_status_shows_running_operations_with_elapsed_time_and_batch_counts() -> None:
    clock = Clock()
    board = ProgressBoard("r-1", clock=clock)
    board.noted("r-1", event(H.STEP_STARTED, "1", "fetch"))
    clock.now += 1.0
    board.noted("r-1", event(H.CONTEXT_STARTED, "2", "checks", operation="map", size=5))
    for item in ("2.1", "2.2", "2.3"):
        board.noted("r-1", event(H.CONTEXT_STARTED, item, f"checks[{item}]", parent="2"))
    board.noted("r-1", event(H.CONTEXT_FAILED, "2.1", parent="2"))
    board.noted("r-1", event(H.CONTEXT_SUCCEEDED, "2.2", parent="2"))
    board.noted("r-1", event(H.STEP_STARTED, "2.3.1", "score", parent="2.3"))
    clock.now += 1.5

    assert shown(board) == [
        "  * step fetch  2.5s",
        "  * map checks  2/5 (1 failed)  1.5s",
        "  * step score  1.5s",
    ]
    failed = board.status()[1]
    assert any("red" in str(span.style) for span in failed.spans)

    # An item reported again by its checkpoint is not counted twice.
    board.committed(run(), checkpoint(event(H.CONTEXT_FAILED, "2.1", parent="2")))
    assert shown(board)[1].startswith("  * map checks  2/5 (1 failed)")


def test_concurrent_model_streams_are_labelled_with_their_operation() -> None:
    clock = Clock()
    board = ProgressBoard("r-1", clock=clock)
    board.noted("r-1", event(H.STEP_STARTED, "1.1", "writer-a", parent="1"))
    board.noted("r-1", event(H.STEP_STARTED, "1.2", "writer-b", parent="1"))
    for word in ("The ", "quick\n", "brown ", "fox"):
        board.streamed("r-1", "1.1", word)
    board.streamed("r-1", "1.2", "Lorem ipsum " * 20)
    board.streamed("r-2", "4", "a child run speaks")  # its start was never seen
    clock.now += 0.2

    lines = shown(board, width=60)
    assert lines[:2] == ["  * step writer-a  0.2s", "    writer-a: brown fox"]  # the last line
    assert lines[2] == "  * step writer-b  0.2s"
    assert lines[3].startswith("    writer-b: …") and lines[3].endswith("ipsum")
    assert len(lines[3]) <= 60
    assert lines[4:] == ["  * step r-2 4  0.2s", "    r-2 4: a child run speaks"]


def test_finished_operations_leave_the_status_area_for_the_log() -> None:
    board = ProgressBoard("r-1", clock=Clock())
    board.noted("r-1", event(H.STEP_STARTED, "1", "ask"))
    board.streamed("r-1", "1", "forty-two")
    board.noted("r-1", event(H.STEP_STARTED, "2", "other"))

    lines = board.committed(run(), checkpoint(event(H.STEP_SUCCEEDED, "1", "ask")))
    assert [line.plain for line in lines] == ["  ask: forty-two", "  ✓ step ask"]
    assert shown(board) == ["  * step other  0.0s"]

    # A step that fails and backs off is not running; a run that suspends runs nothing.
    board.noted("r-1", event(H.STEP_STARTED, "3", "flaky"))
    lines = board.committed(
        run(),
        checkpoint(
            event(H.STEP_FAILED, "3", "flaky", error={"type": "E", "message": "m"}),
            outcome=RunOutcome(RunStatus.FAILED),
        ),
    )
    assert lines[0].plain.startswith("  ✗ step flaky: E: m (retry at")
    assert board.status() == []


def test_a_condition_check_that_asks_for_another_is_not_shown_as_a_finished_step() -> None:
    board = ProgressBoard("r-1", clock=Clock())
    again = "2026-01-01T00:00:30+00:00"
    not_yet = event(H.STEP_SUCCEEDED, "1", "job-done", attempt=1, next_attempt_at=again)
    lines = board.committed(run(), checkpoint(not_yet))
    assert [line.plain for line in lines] == ["  … condition job-done not met, again at 00:00:30"]
    lines = board.committed(run(), checkpoint(event(H.STEP_SUCCEEDED, "1", "job-done")))
    assert [line.plain for line in lines] == ["  ✓ step job-done"]


def test_the_status_area_stays_short_and_shows_names_literally() -> None:
    board = ProgressBoard("r-1", clock=Clock())
    for n in range(MAX_ROWS + 3):
        board.noted("r-1", event(H.STEP_STARTED, str(n), f"[bold]step\x1b[2J{n}"))
    lines = shown(board)
    assert len(lines) == MAX_ROWS + 1
    assert lines[0] == "  * step [bold]step\\x1b[2J0  0.0s"
    assert lines[-1] == "  … and 3 more running"


def test_a_batch_with_failures_is_a_red_line_with_the_first_error() -> None:
    board = ProgressBoard("r-1", clock=Clock())
    done = event(
        H.CONTEXT_SUCCEEDED,
        "2",
        "checks",
        completion_reason="ALL_COMPLETED",
        succeeded=3,
        failed=2,
        first_error={"type": "ValueError", "message": "odd [red]1[/red]"},
    )
    (line,) = board.committed(run(), checkpoint(done))
    assert line.plain == "  ✗ checks: 2 of 5 items failed; first: ValueError: odd [red]1[/red]"
    assert all("red" in str(span.style) for span in line.spans if span.start > 3)
    ok = event(H.CONTEXT_SUCCEEDED, "3", "all", completion_reason="ALL_COMPLETED", succeeded=4)
    assert board.committed(run(), checkpoint(ok))[0].plain == "  ✓ all: 4 succeeded"


# --- the shared helpers ------------------------------------------------------------------


def test_visible_and_literal_make_untrusted_text_inert() -> None:
    hostile = "[/bold]\x1b[2J\rX\x07\x08\x9b\u202eY\u2066\n"
    assert visible(hostile) == "[/bold]\\x1b[2J\\rX\\x07\\x08\\x9b\\u202eY\\u2066\\n"
    assert visible("a\r\nb\tc", multiline=True) == "a\nb\tc"
    assert literal("[link=http://x]y[/link]") == "\\[link=http://x]y\\[/link]"
    # Shown JSON stays JSON with the same meaning.
    text = json_text({"t": "\x1b[31m\u202e\x9b"}).plain
    assert "\x1b" not in text and "\u202e" not in text and "\x9b" not in text
    assert json.loads(text) == {"t": "\x1b[31m\u202e\x9b"}


def test_parse_json_refuses_deep_nesting_with_a_clear_error() -> None:
    assert parse_json("[" * 200 + "]" * 200, "--input") is not None
    for depth in (201, 100_000):
        with pytest.raises(InvalidInput, match="--input nests arrays and objects more than 200"):
            parse_json('{"a": ' * depth + "1" + "}" * depth, "--input")


# --- on a real terminal ------------------------------------------------------------------


def test_cadenza_run_on_a_terminal_shows_a_live_view_and_ends_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
    env.update(CADENZA_HOME=str(tmp_path), TERM="xterm-256color", COLUMNS="100", LINES="40")
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [CADENZA, "run", "tests.cli.display_workflows:slow_batch"],
        cwd=REPO_ROOT,
        env=env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        close_fds=True,
    )
    os.close(secondary)
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    os.close(primary)
    assert proc.wait(timeout=30) == 0
    text = screen.decode("utf-8", "replace")
    assert "Traceback" not in text
    assert re.search(r"map pauses +\d/6", text), text  # the status area, while it ran
    assert "\x1b[2K" in text  # redrawn in place, not appended
    log = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "✓ pauses: 6 succeeded" in log and "✓ writers: 2 succeeded" in log
    assert "writer-a: one two three four five six" in log
    assert log.rstrip().splitlines()[-1].strip() == "15"  # the result, last
