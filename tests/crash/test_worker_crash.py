"""Kill workers with SIGKILL at random points and check what the guarantees promise.

Many runs of a multi-step workflow whose steps record their side effects; workers are
killed mid-flight again and again and restarted. Afterwards every run has finished with the
right result, every step's outcome is recorded once, and a step ran again only where a kill
(or a lost lease) caught it in flight: once more per kill that interrupted it, never after
its outcome was checkpointed (Guarantees 2 and 3). The at-most-once step never runs one
attempt twice.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from cadenza import RunStatus, open_engine
from cadenza.history import HistoryEventType as H
from cadenza.journal import OpStatus, OpType
from tests.crash.crash_workflows import (
    CHARGE_STEP,
    PAUSE,
    WORK_STEPS,
    Effect,
    expected_result,
    pipeline,
    read_effects,
)

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
CADENZA = str(Path(sys.executable).with_name("cadenza"))
WORKFLOW_REF = "tests.crash.crash_workflows:pipeline"
RUNS = 40
KILLS = 8
LEASE_SECONDS = 1.0
STARTUP_SECONDS = 20.0
CONCURRENCY = 6  # fewer than RUNS, so runs go through in waves and kills hit many of them


class WorkerProcess:
    """A ``cadenza worker`` subprocess whose stderr goes to a file we can read."""

    def __init__(self, home: Path, label: str) -> None:
        self.stderr_path = home / f"worker-{label}.err"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> WorkerProcess:
        with self.stderr_path.open("wb") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                CADENZA,
                "worker",
                "-w",
                WORKFLOW_REF,
                "--concurrency",
                str(CONCURRENCY),
                "--lease",
                str(LEASE_SECONDS),
                "--poll",
                "0.1",
                cwd=REPO_ROOT,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        # Wait until it has imported everything and opened the store.
        async with asyncio.timeout(STARTUP_SECONDS):
            while "Ctrl-C to stop" not in self.stderr:
                assert self.proc.returncode is None, f"worker exited early:\n{self.stderr}"
                await asyncio.sleep(0.02)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        async with asyncio.timeout(30):
            return await self.proc.wait()

    def aborted_runs(self) -> set[str]:
        """Runs whose activation this worker abandoned because its lease was lost."""
        return {
            line.split(":", 1)[0]
            for line in self.stderr.splitlines()
            if line.startswith("r-") and ": aborted" in line
        }


async def test_sigkilled_workers_lose_nothing_and_repeat_only_steps_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("CADENZA_HOME", str(home))
    monkeypatch.delenv("CADENZA_STORE", raising=False)
    monkeypatch.delenv("CADENZA_SECRET", raising=False)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    context = f"(seed {seed}; worker logs in {home})"

    engine = await open_engine()
    try:
        inputs = {(await engine.start(pipeline, n)).run_id: n for n in range(RUNS - 1)}
        detached = await asyncio.create_subprocess_exec(
            *(CADENZA, "run", WORKFLOW_REF, "--input", str(RUNS - 1), "--detach"),
            cwd=REPO_ROOT,
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await detached.wait() == 0
        runs = await engine.store.list_runs(limit=RUNS + 10)
        assert len(runs) == RUNS
        inputs.update({r.run_id: RUNS - 1 for r in runs if r.run_id not in inputs})

        killed: set[int] = set()
        aborted: set[tuple[int, str]] = set()
        for i in range(KILLS):
            worker = await WorkerProcess(home, str(i)).start()
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            assert await worker.stop(signal.SIGKILL) == -signal.SIGKILL
            killed.add(worker.pid)
            aborted |= {(worker.pid, run_id) for run_id in worker.aborted_runs()}

        final = await WorkerProcess(home, "final").start()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 40
            while True:
                runs = await engine.store.list_runs(limit=RUNS + 10)
                if all(r.status.terminal for r in runs):
                    break
                assert final.alive, f"final worker died:\n{final.stderr}"
                assert loop.time() < deadline, (
                    f"runs still not ended: {Counter(str(r.status) for r in runs)} {context}"
                )
                await asyncio.sleep(0.2)
        finally:
            returncode = await final.stop(signal.SIGTERM)
        assert returncode == 0, final.stderr
        aborted |= {(final.pid, run_id) for run_id in final.aborted_runs()}

        # Every run finished, with the right result.
        for run in runs:
            assert run.status == RunStatus.SUCCEEDED, f"{run.run_id}: {run.error} {context}"
            assert await engine.result(run.run_id) == expected_result(inputs[run.run_id])

        effects = read_effects(home / "effects.log")
        executions: dict[tuple[str, str], list[Effect]] = defaultdict(list)
        last_of_run_in_pid: dict[tuple[str, int], int] = {}
        for effect in effects:
            executions[effect.run_id, effect.op_id].append(effect)
            last_of_run_in_pid[effect.run_id, effect.pid] = effect.index

        def interrupted(effect: Effect) -> bool:
            """Did this execution die before its checkpoint: its worker was SIGKILLed
            while running it (so it is the last thing that worker did for the run), or
            the worker lost the run's lease and abandoned the activation?"""
            if (effect.pid, effect.run_id) in aborted:
                return True
            return effect.pid in killed and last_of_run_in_pid[effect.run_id, effect.pid] == (
                effect.index
            )

        repeated = 0
        for run in runs:
            journal = {
                op.name: op
                for op in await engine.store.load_journal(run.run_id)
                if op.type == OpType.STEP
            }
            assert set(journal) == {*WORK_STEPS, CHARGE_STEP}
            history = await engine.store.history(run.run_id)
            succeeded_at = {e.op_id: e.timestamp for e in history if e.type == H.STEP_SUCCEEDED}
            for name, op in journal.items():
                assert op.status == OpStatus.SUCCEEDED
                runs_of_step = executions[run.run_id, op.op_id]
                trail = ", ".join(
                    f"pid {e.pid}{' (killed)' if e.pid in killed else ''} attempt {e.attempt}"
                    for e in runs_of_step
                )
                where = f"step {name} of {run.run_id} ran in: {trail} {context}"
                assert runs_of_step, f"no side effect of {where}"
                # Never executed again once its outcome was recorded.
                assert all(e.at < succeeded_at[op.op_id] for e in runs_of_step), where
                # Each extra execution is paid for by one interruption of an earlier one.
                assert all(interrupted(e) for e in runs_of_step[:-1]), where
                pids = [e.pid for e in runs_of_step]
                assert len(set(pids)) == len(pids), where
                repeated += len(runs_of_step) - 1
                if name == CHARGE_STEP:
                    attempts = [e.attempt for e in runs_of_step]
                    assert len(set(attempts)) == len(attempts), f"attempt ran twice: {where}"
                    assert max(attempts) <= op.attempt

            # The history tells each outcome once, however often the run was replayed.
            counts = Counter((str(e.type), e.name) for e in history)
            for name in (*WORK_STEPS, CHARGE_STEP):
                assert counts[str(H.STEP_SUCCEEDED), name] == 1, (run.run_id, name)
            assert counts[str(H.WAIT_STARTED), PAUSE] == 1
            assert counts[str(H.WAIT_SUCCEEDED), PAUSE] == 1
            assert counts[str(H.EXECUTION_SUCCEEDED), None] == 1
            failures = [e for e in history if e.type == H.STEP_FAILED]
            assert all(e.name == CHARGE_STEP for e in failures), failures
            assert all(e.details["error"]["type"] == "StepInterrupted" for e in failures)
            assert len(failures) == journal[CHARGE_STEP].attempt - 1
            # A step that ran again did so because an activation died: the history says so.
            lost = [e for e in history if e.type == H.INVOCATION_COMPLETED and "error" in e.details]
            if any(len(executions[run.run_id, op.op_id]) > 1 for op in journal.values()):
                assert lost, f"{run.run_id} ran a step twice and no lost attempt is recorded"
            assert all(e.details["error"]["type"] == "LeaseLost" for e in lost)

        # The kills did land mid-run: runs moved from worker to worker.
        workers_per_run = Counter(run_id for run_id, _ in last_of_run_in_pid)
        assert max(workers_per_run.values()) > 1, f"no run changed workers {context}"
        # A kill interrupts at most one step of each run its worker held.
        assert repeated <= KILLS * CONCURRENCY + len(aborted)
    finally:
        await engine.close()
