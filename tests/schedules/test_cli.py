"""``cadenza schedules …`` as users meet it: a real subprocess per command, state under a
fresh ``$CADENZA_HOME``, the documented exit codes, and a worker that fires a schedule."""

from __future__ import annotations

import subprocess
import time

from tests.cli.test_cli import Cli

REPORT = "tests.schedules.schedule_workflows:report"


def test_put_list_show_pause_resume_delete(cli: Cli) -> None:
    put = cli(
        "schedules", "put", "weekday-report", "--start", REPORT,
        "--cron", "0 9 * * MON-FRI", "--timezone", "Europe/Lisbon",
        "--input", '{"team": "ops"}', "--window", "15m", "--overlap", "buffer_one", "--json",
    )  # fmt: skip
    shown = put.json()
    assert shown["expression"] == "cron(0 9 * * MON-FRI)"
    assert shown["workflow"] == "sched-report"
    assert shown["timezone"] == "Europe/Lisbon"
    assert shown["window_seconds"] == 900
    assert shown["overlap"] == "buffer_one"
    assert shown["catch_up"] == "latest"
    assert shown["next_fire_at"] is not None

    human = cli("schedules", "list")
    assert "weekday-report" in human.out
    assert "cron(0 9 * * MON-FRI)" in human.out
    assert "Europe/Lisbon" in human.out
    assert "09:00:00" in human.out  # the next fire time, local to the schedule
    listed = cli("schedules", "list", "--json").json()
    assert [s["name"] for s in listed] == ["weekday-report"]

    detail = cli("schedules", "show", "weekday-report")
    assert "buffer_one" in detail.out
    assert cli("schedules", "show", "weekday-report", "--json").json()["input"] == (
        '{"team":"ops"}'
    )

    assert cli("schedules", "pause", "weekday-report", "--json").json()["paused"] is True
    assert "paused" in cli("schedules", "list").out
    assert "resumed" in cli("schedules", "resume", "weekday-report").out
    assert cli("schedules", "show", "weekday-report", "--json").json()["paused"] is False

    assert "deleted" in cli("schedules", "delete", "weekday-report").out
    assert cli("schedules", "list", "--json").json() == []
    assert "no schedules" in cli("schedules", "list").out


def test_mistakes_get_clear_errors_and_exit_codes(cli: Cli) -> None:
    bad_cron = cli("schedules", "put", "x", "--start", REPORT, "--cron", "0 25 * * *", code=2)
    assert "hour field '25'" in bad_cron.err
    none = cli("schedules", "put", "x", "--start", REPORT, code=2)
    assert "exactly one of" in none.err
    both = cli(
        "schedules", "put", "x", "--start", REPORT, "--cron", "0 9 * * *", "--every", "5m",
        code=2,
    )  # fmt: skip
    assert "exactly one of" in both.err
    zone = cli(
        "schedules", "put", "x", "--start", REPORT, "--every", "5m", "--timezone", "Nowhere/X",
        code=2,
    )  # fmt: skip
    assert "IANA" in zone.err
    duration = cli("schedules", "put", "x", "--start", REPORT, "--every", "soon", code=2)
    assert "15m" in duration.err
    wrong_input = cli(
        "schedules", "put", "x", "--start", REPORT, "--every", "5m", "--input", '{"n": 1}',
        code=2,
    )  # fmt: skip
    assert "sched-report" in wrong_input.err
    assert cli("schedules", "list", "--json").json() == []

    missing = cli("schedules", "show", "nope", code=3)
    assert "no schedule named 'nope'" in missing.err
    cli("schedules", "pause", "nope", code=3)
    cli("schedules", "resume", "nope", code=3)
    assert "no schedule named" in cli("schedules", "delete", "nope", code=3).err

    cli.env["CADENZA_URL"] = "http://127.0.0.1:9"
    assert "unset CADENZA_URL" in cli("schedules", "list", code=2).err


def test_a_worker_fires_a_schedule_into_a_linked_run(
    cli: Cli, stop_worker: list[subprocess.Popen[bytes]]
) -> None:
    # A rate with no start date ticks at once, then every minute.
    shown = cli(
        "schedules", "put", "minutely", "--start", REPORT, "--every", "1m",
        "--input", '{"team": "cli"}', "--json",
    ).json()  # fmt: skip
    stop_worker.append(cli.worker())
    deadline = time.monotonic() + 30
    while True:
        last = cli("schedules", "show", "minutely", "--json").json()["last_run_id"]
        if last is not None:
            break
        assert time.monotonic() < deadline, "the worker did not fire the schedule"
        time.sleep(0.2)
    assert last.startswith("sched-minutely-")
    run = cli.wait_for(last, "SUCCEEDED")
    assert run["result"] == "report for cli"
    link = cli("runs", "state", last, "--json").json()["metadata"]["schedule"]
    assert link == {"name": "minutely", "tick": shown["next_fire_at"]}
    assert f"started by schedule minutely for tick {shown['next_fire_at']}" in (
        cli("runs", "show", last).out
    )
    [started, *_] = cli("runs", "history", last, "--json").json()
    assert started["details"]["schedule"] == "minutely"
