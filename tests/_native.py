"""A pytest plugin: tests marked ``native`` run in a forked child process.

Native code (llama.cpp) can die with SIGSEGV or SIGILL on a CPU it was not built for. In a
child, that fails the one test, with a message saying what to check, instead of ending the
whole run. The child runs the test's whole protocol (setup, call, teardown) and sends the
reports back through a pipe; a child that dies without sending them becomes one failure.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from _pytest.runner import runtestprotocol


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "native: runs native model code in a forked child process")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if item.get_closest_marker("native") is None or not hasattr(os, "fork"):
        return None
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    for report in _run_in_child(item, nextitem):
        item.ihook.pytest_runtest_logreport(report=report)
    # What earlier items set up here and the next item does not need is torn down here (the
    # child tore down only its own copy).
    item.session._setupstate.teardown_exact(nextitem)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True


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
        number = os.WTERMSIG(status)
        try:
            how = f"was killed by {signal.Signals(number).name}"
        except ValueError:
            how = f"was killed by signal {number}"
    else:
        how = f"exited with status {os.WEXITSTATUS(status)}"
    message = (
        f"native code crashed this test's process: it {how}. If it was the local model, its"
        " llama.cpp may be built for another CPU: run 'cadenza doctor'."
    )
    return [
        pytest.TestReport(
            nodeid=item.nodeid,
            location=item.location,
            keywords={k: 1 for k in item.keywords},
            outcome="failed",
            longrepr=message,
            when="call",
        )
    ]
