"""docs/schedules.md is executable: its ```python blocks run in order in one namespace."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_guides import python_blocks, run_page


@pytest.fixture(autouse=True)
def scratch_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path / ".cadenza"))
    monkeypatch.delenv("CADENZA_STORE", raising=False)


async def test_the_schedules_guide_runs() -> None:
    assert len(python_blocks("schedules.md")) >= 4
    namespace = await run_page("schedules.md")
    assert namespace["schedule"].name == "ops-digest"
