"""A pytest plugin: tests marked ``native`` run in a child process.

Native code (llama.cpp) can die with SIGSEGV or SIGILL on a CPU it was not built for. In a
child, that fails the one test, with a message saying what to check, instead of ending the
whole run. The child runs the test's whole protocol (setup, call, teardown) and sends the
reports back through a pipe; a child that dies without sending them becomes one failure.

The child is a fork when this process runs one thread. When others run (a test module
that started a server thread when it was imported, say), a fork would copy the locks they
hold and could hang on one, so the test runs in a fresh interpreter instead, which reports
through a JUnit XML file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from _pytest.runner import runtestprotocol


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "native: runs native model code in a forked child process")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if item.get_closest_marker("native") is None or os.environ.get(_INLINE):
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    forkable = hasattr(os, "fork") and threading.active_count() == 1
    reports = _run_in_child(item, nextitem) if forkable else _run_in_interpreter(item)
    for report in reports:
        item.ihook.pytest_runtest_logreport(report=report)
    # What earlier items set up here and the next item does not need is torn down here (the
    # child tore down only its own copy).
    item.session._setupstate.teardown_exact(nextitem)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


_INLINE = "CADENZA_NATIVE_INLINE"  # set in a fresh interpreter: run the test right there


def _run_in_interpreter(item: pytest.Item) -> list[pytest.TestReport]:
    with tempfile.TemporaryDirectory(prefix="cadenza-native-") as folder:
        junit = Path(folder) / "report.xml"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                item.nodeid,
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={junit}",
            ],
            cwd=item.config.rootpath,
            env={**os.environ, _INLINE: "1"},
            capture_output=True,
            text=True,
        )
        verdict = _junit_verdict(junit) if junit.exists() else None
    if proc.returncode < 0 or verdict is None:
        return [_crashed(item, _how(proc.returncode))]
    outcome, message = verdict
    longrepr: object = None
    if outcome == "failed":
        longrepr = f"{message}\n{proc.stdout[-4000:]}"
    elif outcome == "skipped":
        longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {message}")
    return [_report(item, outcome, longrepr)]


def _junit_verdict(path: Path) -> tuple[str, str] | None:
    case = ElementTree.parse(path).find(".//testcase")
    if case is None:
        return None
    for tag, outcome in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
        found = case.find(tag)
        if found is not None:
            return outcome, found.get("message") or (found.text or "")
    return "passed", ""


def _how(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with status {returncode} without reporting"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


def _report(item: pytest.Item, outcome: str, longrepr: object) -> pytest.TestReport:
    return pytest.TestReport(
        nodeid=item.nodeid,
        location=item.location,
        keywords={k: 1 for k in item.keywords},
        outcome=outcome,  # type: ignore[arg-type]
        longrepr=longrepr,  # type: ignore[arg-type]
        when="call",
    )


def _crashed(item: pytest.Item, how: str) -> pytest.TestReport:
    message = (
        f"native code crashed this test's process: it {how}. If it was the local model, its"
        " llama.cpp may be built for another CPU: run 'cadenza doctor'."
    )
    return _report(item, "failed", message)


def _run_in_child(item: pytest.Item, nextitem: pytest.Item | None) -> list[pytest.TestReport]:
    hook = item.config.hook
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the test, send its reports, leave without cleanup
        os.close(read_end)
        try:
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
            data = [
                hook.pytest_report_to_serializable(config=item.config, report=r) for r in reports
            ]
            with os.fdopen(write_end, "w") as pipe:
                json.dump(data, pipe)
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    if payload:
        return [
            hook.pytest_report_from_serializable(config=item.config, data=d)
            for d in json.loads(payload)
        ]
    if os.WIFSIGNALED(status):
        return [_crashed(item, _how(-os.WTERMSIG(status)))]
    return [_crashed(item, _how(os.WEXITSTATUS(status)))]
