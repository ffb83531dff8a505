"""docs/observability.md is executable: its ```python blocks run."""

from __future__ import annotations

from tests.test_guides import python_blocks, run_page


async def test_observability_page_runs() -> None:
    assert len(python_blocks("observability.md")) >= 1
    namespace = await run_page("observability.md")
    assert namespace["tally"].ended == [("greet", "SUCCEEDED")]
