"""The engine depends on the context, never the other way round.

``Context`` is a facade over the runtime interface of ``cadenza._runtime``; the engine's
activation implements it. The context and the operations' machinery must import without
the engine package, and workflow code must find no path from a Context to the engine.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import cadenza
from cadenza import Context, StepContext, workflow
from cadenza.ports.run_store import RunStatus
from cadenza.testing import TestEnvironment

PACKAGE = Path(cadenza.__file__).parent

#: The context layer: the facade, its runtime interface, the signals and the machinery.
CONTEXT_LAYER = (
    "cadenza.context",
    "cadenza._runtime",
    "cadenza._signals",
    "cadenza._steps",
    "cadenza._callbacks",
    "cadenza._batching",
    "cadenza._conditions",
    "cadenza._state_changes",
    "cadenza._patches",
)

# Run in a fresh interpreter: refuse any import of ``cadenza.engine``, and load the
# ``cadenza`` package without its __init__ (which re-exports the engine for applications).
_BLOCKED_IMPORT = """
import importlib, importlib.abc, importlib.util, sys, types

class BlockEngine(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "cadenza.engine" or name.startswith("cadenza.engine."):
            raise ImportError(f"blocked: {name}")
        return None

sys.meta_path.insert(0, BlockEngine())
package = types.ModuleType("cadenza")
package.__path__ = [sys.argv[1]]
sys.modules["cadenza"] = package
failed = []
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        failed.append(f"{name}: {exc}")
print("\\n".join(failed) or "ok")
"""


def _import_without_engine(*modules: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _BLOCKED_IMPORT, str(PACKAGE), *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_the_context_layer_imports_without_the_engine_package() -> None:
    assert _import_without_engine(*CONTEXT_LAYER) == "ok"


def test_the_engine_block_catches_what_leads_to_the_engine() -> None:
    # The same interpreter set-up refuses the engine itself and a module that needs it,
    # so the test above would see a context layer that imported the engine.
    out = _import_without_engine("cadenza.engine.activation", "cadenza.client")
    assert "cadenza.engine.activation: blocked: cadenza.engine" in out
    assert "cadenza.client: blocked: cadenza.engine" in out


def _engine_imports(module: str) -> list[str]:
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        if any(n == "cadenza.engine" or n.startswith("cadenza.engine.") for n in names):
            found.append(f"{path.name}:{node.lineno}")
    return found


@pytest.mark.parametrize("module", CONTEXT_LAYER)
def test_no_module_of_the_context_layer_names_the_engine(module: str) -> None:
    """Not at the top, not in a function, not for the type checker only."""
    assert _engine_imports(module) == []


def test_the_import_contract_holds() -> None:
    cli = pytest.importorskip("importlinter.cli")
    root = PACKAGE.parent.parent
    assert (
        cli.lint_imports(config_filename=str(root / "pyproject.toml"), no_cache=True, no_logo=True)
        == 0
    )


def test_a_context_offers_no_path_to_the_engine() -> None:
    assert not hasattr(Context, "engine")
    public = [name for name in vars(Context) if not name.startswith("_")]
    assert "engine" not in public and "activation" not in public


@workflow(name="t-dependency-step-client")
async def reads_itself(ctx: Context) -> dict[str, str]:
    async def look(step: StepContext) -> dict[str, str]:
        assert step.client is not None
        handle = step.client.get_handle(step.run_id)
        return {"status": str(await handle.status()), "run": handle.run_id}

    return await ctx.step(look)


async def test_a_step_reaches_the_control_plane_through_its_step_context(
    env: TestEnvironment,
) -> None:
    run = await env.run(reads_itself)
    assert run.status == RunStatus.SUCCEEDED
    assert await env.result(run) == {"status": "RUNNING", "run": run.run_id}
