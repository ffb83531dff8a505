"""The guides in docs/ are executable: each page's ```python blocks run in order in one
namespace, with top-level await, the way a reader would paste them into a console.

Blocks fenced as ```py, ```bash or ```toml are shown, not run (configuration, shell
commands, code that needs a network service).
"""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path
from typing import Any

import pytest

from cadenza.agents import _calls

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(page: str) -> list[str]:
    text = (DOCS / page).read_text()
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


async def run_page(page: str) -> dict[str, Any]:
    """Run every ```python block of ``page``; return the namespace they shared."""
    namespace: dict[str, Any] = {"__name__": f"guide_{page.removesuffix('.md')}"}
    for index, source in enumerate(python_blocks(page)):
        code = compile(
            source,
            f"{DOCS / page}:block{index}",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,  # not this file's `from __future__ import annotations`
        )
        result = types.FunctionType(code, namespace)()
        if result is not None:  # the block awaited something
            await result
    return namespace


@pytest.fixture(autouse=True)
def own_model_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page that registers a model name keeps it to itself."""
    monkeypatch.setattr(_calls, "_models", dict(_calls._models))


@pytest.fixture(autouse=True)
def scratch_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages that open an engine of their own write under a throwaway folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path / ".cadenza"))
    monkeypatch.delenv("CADENZA_STORE", raising=False)
    monkeypatch.delenv("CADENZA_ARTIFACTS", raising=False)
    monkeypatch.delenv("CADENZA_SECRET", raising=False)


async def test_batches_guide_runs() -> None:
    assert len(python_blocks("batches.md")) >= 7
    namespace = await run_page("batches.md")
    # The review example's steps ran once each, through two suspensions.
    assert namespace["prepared"] == {"memo": 1, "contract": 1}


async def test_testing_guide_runs() -> None:
    assert len(python_blocks("testing.md")) >= 6
    namespace = await run_page("testing.md")
    # The interrupted step ran again; the checkpointed one did not.
    assert namespace["calls"] == {"reserve_stock": 1, "ship": 2}
    assert namespace["attempts"] == [1, 2, 3]


async def test_agents_guide_runs() -> None:
    assert len(python_blocks("agents.md")) >= 8
    namespace = await run_page("agents.md")
    assert namespace["refunds"] == []  # the refused tool never ran
    # register_model took effect (for this test only: the fixture restores the registry).
    assert "bedrock:us.amazon.nova-lite-v1:0" in _calls._models


async def test_embedding_guide_runs_with_fastapi(tmp_path: Path) -> None:
    assert len(python_blocks("embedding.md")) >= 7
    namespace = await run_page("embedding.md")
    # Every approval the FastAPI example asked for was answered through the API.
    assert namespace["approvals"] == {}
    assert (tmp_path / "refunds-data" / "cadenza.db").exists()  # where the page said
