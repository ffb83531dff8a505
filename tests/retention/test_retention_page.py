"""docs/retention.md's example is real code: its workflows keep their runs as it says."""

from __future__ import annotations

from datetime import timedelta

from cadenza.clock import FakeClock
from cadenza.testing import TestEnvironment
from tests.test_guides import python_blocks, run_page


async def test_the_retention_page_declares_what_it_says() -> None:
    assert len(python_blocks("retention.md")) == 2
    page = await run_page("retention.md")
    assert page["inbox_agent"].name == "retention-inbox-agent"
    assert page["invoice"].retention == timedelta(days=365)
    assert page["audit"].retention is None

    async with TestEnvironment(clock=FakeClock()) as env:
        runs = [
            await env.run(page["invoice"], 7),
            await env.run(page["chat_turn"], "hi"),
            await env.run(page["audit"], "login"),
        ]
        await env.advance(timedelta(days=2))
        assert (await env.engine.prune()).run_ids == [runs[1].run_id]
        await env.advance(timedelta(days=400))
        assert (await env.engine.prune()).run_ids == [runs[0].run_id]
        assert await env.result(runs[2]) == "login"
