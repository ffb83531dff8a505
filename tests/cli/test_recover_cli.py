"""``cadenza runs retry`` and ``cadenza runs fork`` as users meet them, after a failure, a
code change and a worker killed mid-run; and callbacks refusing payloads that do not fit.

Every command is a real ``cadenza`` process; the steps log what they really executed to
``$CADENZA_HOME/effects.log``, so the tests count that nothing recorded ran again.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter

from tests.cli.test_cli import Cli

MODULE = "tests.cli.recover_workflows"
REPORT = f"{MODULE}:report"


def effects(cli: Cli) -> Counter[str]:
    path = cli.home / "effects.log"
    return Counter(path.read_text().split()) if path.exists() else Counter()


def test_retry_after_a_failure_reruns_only_what_failed(cli: Cli) -> None:
    (cli.home / "broken").touch()
    failed = cli("run", REPORT, "--input", '"tides"', "--json", code=1).json()
    assert failed["status"] == "FAILED" and failed["error"]["type"] == "ConnectionError"
    run_id = failed["run_id"]

    again = cli("runs", "retry", run_id, "--json", code=1).json()  # still broken
    assert again["status"] == "FAILED"
    (cli.home / "broken").unlink()
    done = cli("runs", "retry", run_id)
    assert f"retrying run {run_id}" in done.err and "succeeded" in done.out
    assert effects(cli) == Counter({"research": 1, "write": 3})

    events = [e["type"] for e in cli("runs", "history", run_id, "--json").json()]
    assert events.count("ExecutionRedriven") == 2 and events[-1] == "ExecutionSucceeded"
    refused = cli("runs", "retry", run_id, code=5)
    assert "nothing to retry" in refused.err and f"cadenza runs fork {run_id}" in refused.err
    assert "r-missing" in cli("runs", "retry", "r-missing", code=3).err


def test_detached_retry_leaves_the_run_to_a_worker(
    cli: Cli, stop_worker: list[subprocess.Popen[bytes]]
) -> None:
    (cli.home / "broken").touch()
    run_id = cli("run", REPORT, "--input", '"kelp"', "--json", code=1).json()["run_id"]
    (cli.home / "broken").unlink()
    pending = cli("runs", "retry", run_id, "--detach", "--json").json()
    assert pending["status"] == "PENDING" and "error" not in pending
    stop_worker.append(cli.worker())
    shown = cli.wait_for(run_id, "SUCCEEDED")
    assert shown["result"] == "report from notes on kelp"
    assert effects(cli) == Counter({"research": 1, "write": 2})


def test_a_newer_version_takes_a_failed_run_over(cli: Cli) -> None:
    failed = cli("run", f"{MODULE}:versioned_v1", "--input", '"reefs"', "--json", code=1)
    run_id = failed.json()["run_id"]
    unknown = cli("runs", "retry", run_id, "--version", "7", code=3)
    assert "version '7' is not registered" in unknown.err
    done = cli("runs", "retry", run_id, "--version", "2", "--json").json()
    assert (done["status"], done["version"]) == ("SUCCEEDED", "2")
    assert done["result"] == "fixed: notes on reefs"
    assert effects(cli) == Counter({"research": 1})


def test_fork_replays_up_to_an_operation_and_shows_where_it_came_from(cli: Cli) -> None:
    source = cli("run", REPORT, "--input", '"dunes"', "--json").json()
    fork = cli("runs", "fork", source["run_id"], "--from", "2", "--json").json()
    assert fork["status"] == "SUCCEEDED" and fork["run_id"] != source["run_id"]
    assert fork["forked_from"] == {"run_id": source["run_id"], "op_id": "2"}
    assert effects(cli) == Counter({"research": 1, "write": 2})

    relive = cli("runs", "fork", source["run_id"], "--from", "1", "--input", '"moss"', "--json")
    assert relive.json()["result"] == "report from notes on moss"
    shown = cli("runs", "show", relive.json()["run_id"])
    assert f"forked from {source['run_id']} at op 1" in shown.out
    history = cli("runs", "history", fork["run_id"], "--json").json()
    assert [e["type"] for e in history[:2]] == ["ExecutionStarted", "ExecutionForked"]

    missing = cli("runs", "fork", source["run_id"], "--from", "9", code=2)
    assert "no operation '9'" in missing.err and "cadenza runs history" in missing.err
    bad_state = cli("runs", "fork", source["run_id"], "--from", "1", "--state", "[1]", code=2)
    assert "JSON object" in bad_state.err


def test_retry_and_fork_after_a_worker_was_killed_mid_step(
    cli: Cli, stop_worker: list[subprocess.Popen[bytes]]
) -> None:
    (cli.home / "hang").touch()
    run_id = cli("run", f"{MODULE}:slow_report", "--input", '"tides"', "--detach", "--json")
    run_id = run_id.json()["run_id"]
    worker = cli.worker("--lease", "1")
    stop_worker.append(worker)
    deadline = time.monotonic() + 30
    while effects(cli)["slow"] < 1:
        assert time.monotonic() < deadline, "the worker never reached the slow step"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()

    # The dead worker's lease still holds the run: nothing may race it.
    held = cli("runs", "retry", run_id, code=5)
    assert "has not ended" in held.err and f"cadenza cancel {run_id}" in held.err

    (cli.home / "hang").unlink()
    fork = cli("runs", "fork", run_id, "--from", "2", "--json").json()
    assert fork["status"] == "SUCCEEDED" and fork["result"] == "NOTES ON TIDES"

    time.sleep(1.2)  # the lease expires; the run is nobody's now and can be stopped at once
    assert cli("cancel", run_id, "--json").json()["status"] == "CANCELLED"
    retried = cli("runs", "retry", run_id, "--json").json()
    assert retried["status"] == "SUCCEEDED" and retried["result"] == "NOTES ON TIDES"
    assert effects(cli) == Counter({"research": 1, "slow": 3})  # killed, fork, retry


def test_a_callback_refuses_a_payload_that_does_not_fit_and_stays_open(cli: Cli) -> None:
    started = cli("run", f"{MODULE}:typed", "--json").json()
    [wait] = started["waiting_for"]
    token = wait["token"]
    assert wait["payload_schema"]["required"] == ["approved"]
    shown = cli("runs", "show", started["run_id"]).out
    assert "expects: {approved: boolean, comment?: string}" in shown
    assert """--payload '{"approved": true}'""" in shown  # a hint that fits the shape
    missing = cli("callback", "succeed", token, code=2)
    assert "--payload" in missing.err and "approved: boolean" in missing.err
    wrong = cli("callback", "succeed", token, "--payload", '{"approved": "yes"}', code=2)
    assert "approved" in wrong.err and "{approved: boolean, comment?: string}" in wrong.err
    done = cli("callback", "succeed", token, "--payload", '{"approved": true, "comment": "ok"}')
    assert "approved=True ok" in done.out
