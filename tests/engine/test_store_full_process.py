"""A real full disk under real ``cadenza run`` and ``cadenza worker`` processes.

The store lives on a small tmpfs; a filler file takes the room. ``cadenza run`` must exit
with exit code 6 and say what happened instead of hanging; a ``cadenza worker`` must
survive, let go of the run it cannot checkpoint, and finish it by itself once the filler is
gone. Needs permission to mount a tmpfs (root); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CADENZA = str(Path(sys.executable).with_name("cadenza"))
HOARD = "tests.engine.fault_workflows:hoard"
STEPS = 30  # about 1.2 MB of results: far more than the room left
ROOM = 200 * 1024  # left free on the disk before the run starts


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def leave_room(disk: Path, room: int) -> Path:
    """Fill the disk, then give back ``room`` bytes."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    os.truncate(filler, max(filler.stat().st_size - room, 0))
    return filler


class Cli:
    def __init__(self, home: Path, effects: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CADENZA_")}
        self.env["CADENZA_HOME"] = str(home)
        self.env["HOARD_EFFECTS"] = str(effects)
        self.home = home
        self.effects = effects

    async def run(self, *args: str, within: float = 60) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            CADENZA,
            *args,
            cwd=REPO_ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), within)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"cadenza {' '.join(args)} hung for {within}s") from None
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def worker(self, log: Path) -> asyncio.subprocess.Process:
        with log.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                CADENZA,
                "worker",
                "-w",
                HOARD,
                "--lease",
                "1",
                "--poll",
                "0.1",
                cwd=REPO_ROOT,
                env=self.env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        async with asyncio.timeout(30):
            while "Ctrl-C to stop" not in log.read_text():
                assert proc.returncode is None, log.read_text()
                await asyncio.sleep(0.05)
        return proc

    def row(self, run_id: str) -> dict[str, Any]:
        conn = sqlite3.connect(self.home / "cadenza.db")
        conn.row_factory = sqlite3.Row
        try:
            row = conn.execute(
                "SELECT status, lease_owner, lease_epoch, lease_expires_at FROM runs"
                " WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            return dict(row)
        finally:
            conn.close()

    def journal(self, run_id: str) -> set[str]:
        conn = sqlite3.connect(self.home / "cadenza.db")
        try:
            rows = conn.execute(
                "SELECT name FROM ops WHERE run_id = ? AND status = 'SUCCEEDED'", (run_id,)
            ).fetchall()
            return {r[0] for r in rows}
        finally:
            conn.close()

    def integrity(self) -> str:
        conn = sqlite3.connect(self.home / "cadenza.db")
        try:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            conn.close()

    def executions(self, run_id: str) -> Counter[str]:
        lines = self.effects.read_text().splitlines() if self.effects.exists() else []
        return Counter(op for rid, op in (line.split() for line in lines) if rid == run_id)


async def wait_for_status(cli: Cli, run_id: str, status: str, within: float) -> None:
    deadline = time.monotonic() + within
    while cli.row(run_id)["status"] != status:
        assert time.monotonic() < deadline, f"{run_id} is {cli.row(run_id)}, not {status}"
        await asyncio.sleep(0.1)


async def run_into_a_full_disk(disk: Path, cli: Cli) -> tuple[Path, set[str]]:
    """``cadenza run`` a workflow that needs more room than the disk has; return the filler
    and the steps its journal kept."""
    code, _, err = await cli.run("run", HOARD, "--input", '{"steps": 1}', "--quiet")
    assert code == 0, err
    filler = leave_room(disk, ROOM)

    code, out, err = await cli.run(
        "run", HOARD, "--input", json.dumps({"steps": STEPS}), "--quiet", "--id", "r-full"
    )
    assert code == 6, f"exit {code}\n{out}\n{err}"
    assert f"the disk holding {cli.home / 'cadenza.db'} is full" in err
    assert "run r-full stopped at its last checkpoint, nothing lost" in err
    assert "'cadenza worker' resumes it once the store is back" in err
    assert "Traceback" not in err and "Exception in callback" not in err
    kept = cli.journal("r-full")
    assert 0 < len(kept) < STEPS
    assert cli.integrity() == "ok"
    row = cli.row("r-full")
    # Either handed back, or (the full disk would not even take that) the message says
    # when its lease runs out; nothing renews it, the process is gone.
    handed_back = row["lease_owner"] is None
    assert handed_back != ("and the run's lease has run out (at " in err), (row, err)
    return filler, kept


async def test_cadenza_run_exits_on_a_full_disk_with_what_to_do(disk: Path, tmp_path: Path) -> None:
    cli = Cli(disk / "home", tmp_path / "effects.log")
    await run_into_a_full_disk(disk, cli)


@pytest.mark.slow  # waits out the 30 s lease the exited 'cadenza run' could not hand back
async def test_a_worker_finishes_the_run_cadenza_run_left_on_a_full_disk(
    disk: Path, tmp_path: Path
) -> None:
    cli = Cli(disk / "home", tmp_path / "effects.log")
    filler, kept = await run_into_a_full_disk(disk, cli)

    filler.unlink()
    worker = await cli.worker(tmp_path / "worker.log")
    try:
        await wait_for_status(cli, "r-full", "SUCCEEDED", within=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 30) == 0

    runs = cli.executions("r-full")
    assert cli.journal("r-full") == {f"blob-{i}" for i in range(STEPS)}
    assert all(runs[name] == 1 for name in kept), runs  # committed: never run again
    assert all(runs[f"blob-{i}"] in (1, 2) for i in range(STEPS)), runs
    assert cli.integrity() == "ok"


async def test_a_worker_survives_a_full_disk_and_resumes_by_itself(
    disk: Path, tmp_path: Path
) -> None:
    cli = Cli(disk / "home", tmp_path / "effects.log")
    code, _, err = await cli.run("run", HOARD, "--input", '{"steps": 1}', "--quiet")
    assert code == 0, err
    log = tmp_path / "worker.log"
    worker = await cli.worker(log)
    try:
        filler = leave_room(disk, ROOM)
        code, _, err = await cli.run(
            "run", HOARD, "--input", json.dumps({"steps": STEPS}), "--detach", "--id", "r-full"
        )
        assert code == 0, err

        async with asyncio.timeout(30):
            while "store refused work" not in log.read_text():
                assert worker.returncode is None, log.read_text()
                await asyncio.sleep(0.05)
        # For three leases, watch the run: a lease, once taken, is never extended — the
        # worker lets go of a run it cannot checkpoint (a renewal would move the expiry
        # of the same epoch on).
        expiries: dict[int, set[str]] = {}
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            row = cli.row("r-full")
            if row["lease_owner"] is not None:
                expiries.setdefault(row["lease_epoch"], set()).add(row["lease_expires_at"])
            await asyncio.sleep(0.05)
        assert all(len(seen) == 1 for seen in expiries.values()), expiries
        assert worker.returncode is None
        assert cli.row("r-full")["status"] != "SUCCEEDED"

        filler.unlink()
        await wait_for_status(cli, "r-full", "SUCCEEDED", within=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.wait(), 30)
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text and "Exception in callback" not in text
    assert "the disk holding" in text and "is full" in text
    assert cli.journal("r-full") == {f"blob-{i}" for i in range(STEPS)}
    assert cli.integrity() == "ok"
