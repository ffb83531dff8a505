"""Fakes for testing workflows: a throwaway environment, a fake clock, a scripted model.

async with TestEnvironment(clock=FakeClock()) as env:
    run = await env.run(book_trip, {"traveller": "Ada", "city": "Lisbon"})
    assert run.status == RunStatus.SUSPENDED
    await env.succeed(env.token(run), {"approved": True})
    assert (await env.resume(run)).status == RunStatus.SUCCEEDED
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from cadenza.clock import Clock, FakeClock, parse_iso
from cadenza.config import open_engine
from cadenza.engine._export import RunExport, replay_export
from cadenza.engine._instrumentation import Instrumentation
from cadenza.engine._replay_check import ReplayCheckResult
from cadenza.engine.engine import Engine
from cadenza.engine.worker import drive
from cadenza.ports.run_store import CallbackKind, CallbackStatus, RunRecord, RunStore
from cadenza.retry import RetryPolicy, RetryStrategy
from cadenza.testing._cassette import Cassette, CassetteMismatch, CassetteMode
from cadenza.testing._memory_store import InMemoryRunStore
from cadenza.testing.scripted_model import ScriptedModel, ScriptExhausted
from cadenza.workflow import WorkflowDefinition

__all__ = [
    "Cassette",
    "CassetteMismatch",
    "CassetteMode",
    "FakeClock",
    "InMemoryRunStore",
    "ScriptExhausted",
    "ScriptedModel",
    "TestEnvironment",
]


class TestEnvironment:
    """An engine on a temporary SQLite file and artifact folder, removed on exit."""

    __test__ = False  # not a pytest class

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        store: RunStore | str | None = None,
        default_retry: RetryPolicy | RetryStrategy | None = None,
        claim_check_bytes: int = 64 * 1024,
        lease: timedelta = timedelta(seconds=30),
        instrumentation: Iterable[Instrumentation] | Instrumentation | None = None,
    ) -> None:
        self.clock = clock
        self._store = store
        self._options: dict[str, Any] = {
            "claim_check_bytes": claim_check_bytes,
            "lease": lease,
            "instrumentation": instrumentation,
        }
        if default_retry is not None:
            self._options["default_retry"] = default_retry
        self.directory = Path(tempfile.mkdtemp(prefix="cadenza-test-"))
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("use 'async with TestEnvironment() as env'")
        return self._engine

    async def __aenter__(self) -> TestEnvironment:
        self._engine = await open_engine(
            store=self._store or f"sqlite:///{self.directory / 'cadenza.db'}",
            artifacts=f"file://{self.directory / 'artifacts'}",
            secret=b"test-secret-0123456789abcdef",
            clock=self.clock,
            **self._options,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._engine is not None:
            await self._engine.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    async def start(self, workflow: WorkflowDefinition, input: Any = None, **kw: Any) -> RunRecord:
        return await self.engine.start(workflow, input, **kw)

    async def run(
        self, workflow: WorkflowDefinition, input: Any = None, *, linger: float = 0.0, **kw: Any
    ) -> RunRecord:
        """Start a run and execute it until it ends or waits on something not yet due."""
        run = await self.engine.start(workflow, input, **kw)
        return await drive(self.engine, run.run_id, linger=timedelta(seconds=linger))

    async def resume(self, run: RunRecord | str, *, linger: float = 0.0) -> RunRecord:
        """Execute whatever is runnable now; return the run as it stands after."""
        run_id = run if isinstance(run, str) else run.run_id
        return await drive(self.engine, run_id, linger=timedelta(seconds=linger))

    async def advance(self, delta: timedelta | float) -> None:
        """Move the fake clock forward (timers, backoffs and timeouts fall due)."""
        if not isinstance(self.clock, FakeClock):
            raise RuntimeError("advance() needs TestEnvironment(clock=FakeClock())")
        self.clock.advance(delta)

    async def result(self, run: RunRecord | str, tp: Any = None) -> Any:
        return await self.engine.result(run if isinstance(run, str) else run.run_id, tp)

    async def replay_export(
        self, export: str | Path | RunExport, workflow: WorkflowDefinition
    ) -> ReplayCheckResult:
        """Replay a run exported with ``cadenza runs export`` against ``workflow`` as the
        code is now: nothing runs live (no model, no tool) and nothing is stored. The
        result says whether it replays (``compatible``), or the first operation where the
        code now asks for something else than the run recorded (``op_id``, ``recorded``,
        ``asked``)::

            result = await env.replay_export("tests/runs/r-42.json", triage)
            assert result.compatible, result
        """
        if not isinstance(export, RunExport):
            text = await asyncio.to_thread(Path(export).read_text, encoding="utf-8")
            export = RunExport.from_json(text)
        return await replay_export(self.engine, export, workflow)

    async def tokens(self, run: RunRecord | str) -> list[str]:
        """Tokens of the run's pending callbacks, oldest first."""
        run_id = run if isinstance(run, str) else run.run_id
        journal = {op.op_id: op for op in await self.engine.store.load_journal(run_id)}
        tokens = []
        for cb in sorted(
            await self.engine.store.load_callbacks(run_id), key=lambda c: c.created_at
        ):
            if cb.kind == CallbackKind.CALLBACK and cb.status == CallbackStatus.PENDING:
                op = journal[cb.op_id]
                tokens.append(
                    self.engine.tokens.issue(
                        cb.callback_id, run_id, cb.op_id, parse_iso(op.data["token_expires_at"])
                    )
                )
        return tokens

    async def token(self, run: RunRecord | str) -> str:
        tokens = await self.tokens(run)
        if len(tokens) != 1:
            raise AssertionError(f"expected one pending callback, found {len(tokens)}")
        return tokens[0]

    async def succeed(self, token: str, payload: Any = None) -> None:
        await self.engine.succeed_callback(token, payload)

    async def fail(self, token: str, error: str = "CallbackFailed", message: str = "") -> None:
        await self.engine.fail_callback(token, error=error, message=message)

    async def history(self, run: RunRecord | str) -> list[str]:
        """The run's history event types, in order."""
        run_id = run if isinstance(run, str) else run.run_id
        return [str(e.type) for e in await self.engine.store.history(run_id)]
