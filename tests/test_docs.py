"""The README's example is real code: run it."""

from __future__ import annotations

import re
import types
from pathlib import Path

from cadenza import RunStatus
from cadenza.testing import TestEnvironment

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


async def test_readme_workflow_runs_approves_and_compensates(env: TestEnvironment) -> None:
    [source] = _python_blocks(README.read_text())
    module = types.ModuleType("readme_example")
    exec(compile(source, str(README), "exec"), module.__dict__)
    trip = module.trip

    booked = await env.run(trip, "Lisbon")
    assert booked.status == RunStatus.SUSPENDED
    await env.succeed(await env.token(booked), {"approved": True})
    assert await env.result(await env.resume(booked)) == {"status": "booked", "flight": "FL-Lisbon"}

    rejected = await env.run(trip, "Oslo")
    await env.succeed(await env.token(rejected), {"approved": False})
    assert await env.result(await env.resume(rejected)) == {"status": "cancelled"}
    assert "cancel_flight" in [e.name for e in await env.engine.store.history(rejected.run_id)]
