"""SIGTERM stops a worker gracefully: in-flight runs finish within ``--grace``, and the
ones that cannot are handed back at once, not left to wait for their lease to expire."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from cadenza import RunStatus, open_engine
from tests.crash.crash_workflows import effects_log, long_running, read_effects

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
CADENZA = str(Path(sys.executable).with_name("cadenza"))


async def _worker(*options: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *(CADENZA, "worker", "-w", "tests.crash.crash_workflows:long_running", "--poll", "0.1"),
        *options,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _step_started(count: int) -> list[int]:
    """Wait until the long step has started ``count`` times; the pids that ran it."""
    async with asyncio.timeout(20):
        while True:
            effects = read_effects(effects_log()) if effects_log().exists() else []
            if len(effects) >= count:
                return [e.pid for e in effects]
            await asyncio.sleep(0.02)


async def test_sigterm_hands_back_or_finishes_in_flight_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path))
    monkeypatch.delenv("CADENZA_STORE", raising=False)
    engine = await open_engine()
    try:
        run = await engine.start(long_running)

        # No grace: the step is abandoned and the run released for the next worker,
        # although the lease (30 s by default) is far from expired.
        impatient = await _worker("--grace", "0")
        await _step_started(1)
        impatient.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            assert await impatient.wait() == 0
        released = await engine.store.get_run(run.run_id)
        assert released.status == RunStatus.PENDING
        assert released.lease_owner is None

        # With grace: SIGTERM mid-step lets the run finish before the worker exits.
        patient = await _worker("--grace", "30")
        pids = await _step_started(2)
        patient.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            assert await patient.wait() == 0
        finished = await engine.store.get_run(run.run_id)
        assert finished.status == RunStatus.SUCCEEDED
        assert await engine.result(run.run_id) == f"done by {pids[1]}"
        assert pids == [impatient.pid, patient.pid]
    finally:
        await engine.close()
