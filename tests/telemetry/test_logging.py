"""``cadenza --log-format json``: one JSON object per log line, each naming the run, the
operation and the trace it was written for."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from cadenza.telemetry._logging import ContextFilter, JsonFormatter, log_context
from tests._cli import CADENZA, cli_env


def test_a_run_logs_json_lines_with_its_run_operation_and_trace(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            CADENZA,
            "--log-format",
            "json",
            "run",
            "tests.telemetry.log_workflows:charge_flow",
            "--input",
            "42",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=cli_env(tmp_path),
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    body = next(line for line in lines if "about to charge" in line["message"])
    step = next(line for line in lines if line["message"] == "charging 42")
    assert body["run_id"] == run["run_id"] and body["workflow"] == "log-charge"
    assert body["trace_id"] and "op_id" not in body
    assert step["run_id"] == run["run_id"] and step["op_id"] == "1"
    assert step["trace_id"] == body["trace_id"] and step["amount"] == 42
    assert step["level"] == "warning" and step["logger"] == "cadenza.step.charge"


def test_the_formatter_keeps_extras_and_exceptions() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("hard",), None)
    with log_context(run_id="r-1", op_id="2.1"):
        ContextFilter().filter(record)
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed hard" and line["run_id"] == "r-1"
    assert line["op_id"] == "2.1" and "ValueError: boom" in line["exception"]
