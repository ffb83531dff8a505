"""Journals recorded by earlier cadenza versions must keep replaying: each fixture in
tests/fixtures/journals is a finished run, replayed here against the current engine and
code without executing anything; it must end with the result it recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cadenza.engine.activation import Activation
from cadenza.testing import TestEnvironment
from cadenza.workflow import lookup
from tests.fixtures.journals.recorded import FOLDER, load

FIXTURES = sorted(FOLDER.glob("*.json"))


def test_there_are_fixtures_for_each_kind_of_operation() -> None:
    kinds = set()
    for path in FIXTURES:
        _, journal, _ = load(path.read_text())
        kinds |= {str(op.type) for op in journal}
        kinds |= {"retried step" for op in journal if op.type == "step" and op.attempt > 1}
        kinds |= {"state changes" for op in journal if "state_changes" in op.data}
        kinds |= {"legacy context" for op in journal if op.type == "context" and not op.data}
    expected = {"step", "retried step", "callback", "map", "context", "invoke"}
    assert expected | {"state changes", "legacy context"} <= kinds


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
async def test_a_recorded_journal_replays_to_its_recorded_result(
    path: Path, env: TestEnvironment
) -> None:
    run, journal, callbacks = load(path.read_text())
    definition = lookup(run.workflow, run.version)
    assert definition is not None, f"{run.workflow} v{run.version} is not registered"
    act = Activation(env.engine, run, definition, journal, callbacks, check_only=True)
    result = await act.execute()
    assert act.divergence is None, result.error
    assert act.check_completed, f"replay stopped before the end: {result}"
    assert act.executed == 0  # nothing ran live
    replayed = json.loads(await act.codec.encode(act.check_value, what="the result"))
    assert replayed == json.loads(run.result or "null")


async def test_a_journal_the_code_no_longer_matches_is_caught(env: TestEnvironment) -> None:
    run, journal, callbacks = load((FOLDER / "fixture-fanout.json").read_text())
    journal = [op.evolve(name="cubes") if op.op_id == "1" else op for op in journal]
    definition = lookup(run.workflow, run.version)
    assert definition is not None
    act = Activation(env.engine, run, definition, journal, callbacks, check_only=True)
    await act.execute()
    assert act.divergence == ("1", "map 'cubes'", "map 'squares'")
