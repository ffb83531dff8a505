"""The ``cadenza`` command as users meet it: a real subprocess per command, state under a
fresh ``$CADENZA_HOME``; the example workflows come from the installed package.

Exit codes are the documented ones (``cadenza.cli``): 0 done, 1 run failed, 2 bad input,
3 not found, 4 token refused, 5 the run's state does not allow it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
CADENZA = str(Path(sys.executable).with_name("cadenza"))
TRIP = "cadenza.examples.trip_booking:book_trip"
ADA = '{"traveller": "Ada", "city": "Lisbon"}'
TOKEN = re.compile(r"token: (cdz1\.\S+)")


@dataclass
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("CADENZA_STORE", "CADENZA_SECRET", "CADENZA_ARTIFACTS")
        }
        self.env["CADENZA_HOME"] = str(home)

    def __call__(self, *args: str, code: int = 0) -> Result:
        proc = subprocess.run(
            [CADENZA, *args],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        result = Result(args, proc.returncode, proc.stdout, proc.stderr)
        assert result.code == code, (
            f"cadenza {' '.join(args)} exited {result.code}, not {code}\n"
            f"stdout: {result.out}\nstderr: {result.err}"
        )
        return result

    def worker(self, *args: str) -> subprocess.Popen[bytes]:
        with (self.home / "worker.log").open("ab") as log:
            return subprocess.Popen(
                [CADENZA, "worker", "--poll", "0.2", *args],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_for(self, run_id: str, status: str, *, within: float = 30.0) -> dict[str, Any]:
        """Poll ``runs show`` until the run reaches ``status``."""
        deadline = time.monotonic() + within
        while True:
            shown: dict[str, Any] = self("runs", "show", run_id, "--json").json()
            if shown["status"] == status:
                return shown
            assert time.monotonic() < deadline, f"{run_id} still {shown['status']}: {shown}"
            time.sleep(0.2)

    def bookings(self) -> list[tuple[str, str]]:
        """The trip example's ledger as (action, kind) pairs."""
        path = self.home / "bookings.log"
        if not path.exists():
            return []
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        return [(line["action"], line["kind"]) for line in lines]


def _token(result: Result) -> str:
    (wait,) = result.json()["waiting_for"]
    assert wait["name"] == "approval"
    return str(wait["token"])


def _forge(token: str, **claims: str) -> str:
    """The token with some claims changed and the original signature kept."""
    prefix, body, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data.update(claims)
    encoded = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return f"{prefix}.{base64.urlsafe_b64encode(encoded).rstrip(b'=').decode()}.{signature}"


# --- the saga demo ----------------------------------------------------------------------


def test_saga_approved_confirms_both_reservations(cli: Cli) -> None:
    started = cli("run", TRIP, "--input", ADA, "--json")
    run = started.json()
    assert run["status"] == "SUSPENDED"
    token = _token(started)
    assert cli.bookings() == [("reserved", "flight"), ("reserved", "hotel")]

    done = cli("callback", "succeed", token, "--payload", '{"approved": true}', "--json").json()
    assert done["run_id"] == run["run_id"] and done["status"] == "SUCCEEDED"
    assert done["result"]["status"] == "confirmed"
    assert [ref[:3] for ref in done["result"]["reservations"]] == ["FL-", "HT-"]
    assert done["waiting_for"] == []
    assert cli.bookings() == [
        ("reserved", "flight"),
        ("reserved", "hotel"),
        ("confirmed", "flight"),
        ("confirmed", "hotel"),
    ]

    (listed,) = cli("runs", "list", "--json").json()
    assert listed["run_id"] == run["run_id"] and listed["status"] == "SUCCEEDED"
    shown = cli("runs", "show", run["run_id"], "--json").json()
    assert shown["steps"] == {"SUCCEEDED": 5}  # two reservations, notify, two confirmations
    assert shown["result"] == done["result"]
    assert shown["agent_status"] == "COMPLETED"
    state = cli("runs", "state", run["run_id"], "--json").json()
    assert state["goal"] == "Book Ada's trip to Lisbon"
    assert state["context"]["results"] == {
        "flight": done["result"]["reservations"][0],
        "hotel": done["result"]["reservations"][1],
    }
    history = [e["type"] for e in cli("runs", "history", run["run_id"], "--json").json()]
    assert history[0] == "ExecutionStarted"
    assert history.count("CallbackSucceeded") == 1
    assert history.count("ExecutionSucceeded") == 1
    # Human output of the same commands works too.
    assert run["run_id"] in cli("runs", "list").out
    assert "SUCCEEDED" in cli("runs", "show", run["run_id"]).out


def test_saga_rejected_compensates_in_reverse_order(cli: Cli) -> None:
    started = cli("run", TRIP, "--input", ADA)  # human output, as in the README
    assert "is suspended" in started.out
    match = TOKEN.search(started.out)
    assert match, started.out
    assert "step reserve_flight" in started.err  # live progress goes to stderr

    cli("callback", "succeed", match.group(1), "--payload", '{"approved": false}')
    (run,) = cli("runs", "list", "--json").json()
    assert run["result"] == {"status": "cancelled", "reason": "rejected"}
    steps = [
        e["name"]
        for e in cli("runs", "history", run["run_id"], "--json").json()
        if e["type"] == "StepSucceeded"
    ]
    assert steps == ["reserve_flight", "reserve_hotel", "submit", "cancel-hotel", "cancel-flight"]
    assert cli.bookings() == [
        ("reserved", "flight"),
        ("reserved", "hotel"),
        ("cancelled", "hotel"),
        ("cancelled", "flight"),
    ]


# --- bad input ---------------------------------------------------------------------------


def test_bad_input_gets_a_clear_error_and_loses_nothing(cli: Cli, tmp_path: Path) -> None:
    kept = cli("run", TRIP, "--input", ADA, "--detach", "--json").json()
    before = cli("runs", "list", "--json").json()
    assert [r["run_id"] for r in before] == [kept["run_id"]]

    refused = [
        (("run", "nowhere.trips:book_trip"), 3, "cannot import module 'nowhere.trips'"),
        (("run", TRIP + "p"), 3, "workflows it defines: book_trip"),
        (("run", TRIP, "--input", "{traveller: Ada}"), 2, "--input is not valid JSON"),
        (("run", TRIP, "--input", '{"traveller": "Ada"}'), 2, "does not fit Trip"),
        (("run", TRIP, "--input", ADA[:-1] + ', "nights": 99}'), 2, "less than or equal to 30"),
        (("run", TRIP, "--input", f"@{tmp_path / 'missing.json'}"), 2, "cannot read --input"),
        (("runs", "show", "r-nosuchrun"), 3, "no run with id 'r-nosuchrun'"),
        (("cancel", "r-nosuchrun"), 3, "no run with id"),
        (("callback", "succeed", "approve-it-please"), 4, "not a cadenza callback token"),
        (("events", "put", "--detail-type", "x", "--detail", "[1]"), 2, "must be a JSON object"),
    ]
    for args, code, message in refused:
        result = cli(*args, "--json", code=code)
        assert result.out == "", f"{args}: {result.out}"  # nothing a script could mistake
        assert "error:" in result.err and message in result.err, f"{args}: {result.err}"

    assert cli("runs", "list", "--json").json() == before
    assert cli("events", "list", "--json").json() == []
    assert cli.bookings() == []


# --- tokens ------------------------------------------------------------------------------


def test_forged_and_reused_tokens_are_refused_with_exit_4(cli: Cli) -> None:
    started = cli("run", TRIP, "--input", ADA, "--json")
    token = _token(started)
    run_id = started.json()["run_id"]

    forged = cli("callback", "succeed", _forge(token, r="r-someone-else"), code=4)
    assert "signature does not match" in forged.err
    cli("callback", "heartbeat", token[:-2], code=4)
    assert cli("runs", "show", run_id, "--json").json()["status"] == "SUSPENDED"

    bad_payload = cli("callback", "succeed", token, "--payload", "{approved}", code=2)
    assert "--payload is not valid JSON" in bad_payload.err  # and the token is not spent
    cli("callback", "succeed", token, "--payload", '{"approved": true}')
    reused = cli("callback", "succeed", token, "--payload", '{"approved": false}', code=4)
    assert "completes its callback once" in reused.err
    cli("callback", "fail", token, "--message", "too late", code=4)
    cli("callback", "heartbeat", token, code=4)

    shown = cli("runs", "show", run_id, "--json").json()
    assert shown["result"]["status"] == "confirmed"  # the first answer, only
    assert ("cancelled", "flight") not in cli.bookings()


def test_cancelling_a_suspended_run_closes_its_callback(cli: Cli) -> None:
    started = cli("run", TRIP, "--input", ADA, "--json")
    token = _token(started)
    run_id = started.json()["run_id"]

    cancelled = cli("cancel", run_id, "--json").json()
    assert cancelled["status"] == "CANCELLED"
    late = cli("callback", "succeed", token, "--payload", '{"approved": true}', code=5)
    assert f"run {run_id} already ended (CANCELLED)" in late.err
    again = cli("cancel", run_id, code=5)
    assert "nothing to cancel" in again.err

    shown = cli("runs", "show", run_id, "--json").json()
    assert shown["status"] == "CANCELLED"
    assert shown["error"]["type"] == "RunCancelled"
    assert shown["waiting_for"] == []
    assert cli.bookings() == [("reserved", "flight"), ("reserved", "hotel")]


# --- events, rules and workers ----------------------------------------------------------


def test_rules_test_exits_0_on_match_1_otherwise(cli: Cli) -> None:
    pattern = '{"detail-type": ["order"], "detail": {"total": [{"numeric": [">", 100]}]}}'
    big = cli("rules", "test", "--pattern", pattern, "--event", _order(150))
    assert big.out.strip() == "match"
    small = cli("rules", "test", "--pattern", pattern, "--event", _order(99), code=1)
    assert small.out.strip() == "no match"
    bad = cli("rules", "test", "--pattern", '{"detail-type": "order"}', "--event", "{}", code=2)
    assert "expected a list of values" in bad.err and bad.out == ""


def _order(total: int) -> str:
    return json.dumps({"detail-type": "order", "detail": {"total": total}})


def test_an_event_rule_starts_a_workflow_that_a_worker_runs(
    cli: Cli, stop_worker: list[subprocess.Popen[bytes]]
) -> None:
    pattern = '{"detail-type": ["signup"], "detail": {"plan": [{"prefix": "pro"}]}}'
    put = cli(
        "rules", "put", "welcome-pros", "--pattern", pattern,
        "--start", "tests.cli.cli_workflows:greet", "--json",
    ).json()  # fmt: skip
    assert put["target"] == "start_workflow"
    assert [r["name"] for r in cli("rules", "list", "--json").json()] == ["welcome-pros"]

    cli("events", "put", "--detail-type", "signup", "--detail", '{"name": "Bo", "plan": "free"}')
    assert cli("runs", "list", "--json").json() == []  # no match, no run
    event = cli(
        "events", "put", "--detail-type", "signup", "--json",
        "--detail", '{"name": "Ada", "plan": "pro-annual"}',
    ).json()  # fmt: skip
    assert event["detail"]["name"] == "Ada"
    (run,) = cli("runs", "list", "--json").json()
    assert run["workflow"] == "cli-welcome" and run["status"] == "PENDING"

    worker = cli.worker()  # imports the module each run names
    stop_worker.append(worker)
    done = cli.wait_for(run["run_id"], "SUCCEEDED")
    assert done["result"] == "welcome Ada, enjoy pro-annual"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0

    cli("rules", "delete", "welcome-pros")
    assert cli("rules", "list", "--json").json() == []
    assert "no rule named" in cli("rules", "delete", "welcome-pros", code=3).err


def test_worker_runs_a_detached_run_and_stops_on_sigterm(
    cli: Cli, stop_worker: list[subprocess.Popen[bytes]]
) -> None:
    run = cli("run", TRIP, "--input", ADA, "--detach", "--json").json()
    assert run["status"] == "PENDING"
    worker = cli.worker("-w", TRIP)
    stop_worker.append(worker)
    waiting = cli.wait_for(run["run_id"], "SUSPENDED")
    (wait,) = waiting["waiting_for"]

    # The approval arrives as an event; a rule completes the callback with its detail.
    cli(
        "rules", "put", "approvals", "--pattern", '{"detail-type": ["approval"]}',
        "--complete-callback", "detail.token",
    )  # fmt: skip
    detail = json.dumps({"token": wait["token"], "approved": True})
    cli("events", "put", "--detail-type", "approval", "--detail", detail)
    done = cli.wait_for(run["run_id"], "SUCCEEDED")
    assert done["result"]["status"] == "confirmed"

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    log = (cli.home / "worker.log").read_text()
    assert "worker stopped" in log
    assert f"{run['run_id']}: SUCCEEDED" in log
