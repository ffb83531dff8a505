"""OTLP export to a receiver on 127.0.0.1: turned on by the OTEL_* variables in
open_engine, and one trace across two worker processes sharing a PostgreSQL store."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.proto")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

from cadenza import RunStatus
from cadenza.config import open_engine
from cadenza.telemetry._setup import from_environment, otel_configured
from tests.contract.pg import fresh_database
from tests.telemetry._otlp import ReceivedSpan, Receiver, otlp_receiver
from tests.telemetry.otel_workflows import waiter

ROOT = Path(__file__).resolve().parents[2]


def otel_env(receiver: Receiver) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
        OTEL_METRICS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_SERVICE_NAME="cadenza-test",
        PYTHONPATH=str(ROOT),
    )
    return env


def test_tracing_is_off_without_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)
    assert not otel_configured() and from_environment() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert not otel_configured()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    assert otel_configured()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not otel_configured()


def test_importing_cadenza_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, cadenza, cadenza.telemetry, cadenza.testing;"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]"


def test_open_engine_exports_spans_over_otlp_http(tmp_path: Path) -> None:
    with otlp_receiver() as receiver:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.telemetry.otel_worker",
                "drive",
                "--store",
                f"sqlite:///{tmp_path / 'c.db'}",
                "--home",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            env=otel_env(receiver),
            cwd=ROOT,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "instrumented True" in out.stderr
        run_id, trace_id, status = out.stdout.split()
        assert status == "SUCCEEDED"
        spans = receiver.snapshot()  # the exporter flushes when the process exits
        assert "/v1/traces" in receiver.paths
    names = Counter(span.name for span in spans)
    assert names["run t-otel-waiter"] == 1 and names["invoke_workflow t-otel-waiter"] == 1
    assert names["step add0"] == 1 and names["wait pause4"] == 1
    assert {span.trace_id for span in spans} == {trace_id}
    (run_span,) = [s for s in spans if s.name == "run t-otel-waiter"]
    assert run_span.attributes["cadenza.run_id"] == run_id
    steps = [s for s in spans if s.name.startswith("step ")]
    assert {s.parent_span_id for s in steps} == {run_span.span_id}


def _spawn(receiver: Receiver, url: str, home: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tests.telemetry.otel_worker", "worker"]
    with log.open("wb") as out:  # a file, not a pipe: nothing can block the worker
        process = subprocess.Popen(
            [*command, "--store", url, "--home", str(home)],
            stderr=out,
            env=otel_env(receiver),
            cwd=ROOT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "ready" in log.read_text():
            return process
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"worker did not start: {log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    assert process.wait(timeout=30) == 0


async def _until(engine: object, run_id: str, statuses: set[RunStatus], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = await engine.store.get_run(run_id)  # type: ignore[attr-defined]
        if run.status in statuses:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} did not reach {statuses}")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with fresh_database("cadenza_otel") as url:
        yield url


@pytest.mark.postgres
async def test_two_worker_processes_share_one_trace(postgres_url: str, tmp_path: Path) -> None:
    engine = await open_engine(store=postgres_url, home=tmp_path, instrumentation=[])
    try:
        with otlp_receiver() as receiver:
            first = _spawn(receiver, postgres_url, tmp_path, tmp_path / "first.log")
            try:
                run = await engine.start(waiter, 0.5)
                await _until(engine, run.run_id, {RunStatus.SUSPENDED}, 30)
            finally:
                _stop(first)  # the rest of the run goes to another process
            second = _spawn(receiver, postgres_url, tmp_path, tmp_path / "second.log")
            try:
                await _until(engine, run.run_id, {RunStatus.SUCCEEDED}, 60)
            finally:
                _stop(second)
            spans: list[ReceivedSpan] = receiver.snapshot()
    finally:
        await engine.close()
    assert {s.trace_id for s in spans} == {run.trace_id}
    workers = {s.attributes["cadenza.worker"] for s in spans if s.name.startswith("invoke_")}
    assert len(workers) == 2  # both processes took part
    # Each operation is one span, whichever process started or ended it.
    op_spans = [s for s in spans if s.name.startswith(("step ", "wait "))]
    assert Counter(s.name for s in op_spans) == Counter(
        [f"step add{i}" for i in range(6)] + [f"wait pause{i}" for i in range(5)]
    )
    assert len({s.span_id for s in spans}) == len(spans)
    (run_span,) = [s for s in spans if s.name == "run t-otel-waiter"]
    assert {s.parent_span_id for s in op_spans} == {run_span.span_id}
