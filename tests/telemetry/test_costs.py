"""Costs: roll-ups per workflow, model, tenant and day; a deployment's price table and
budgets (costs.toml) that stop a workflow's model calls once its window is spent, with an
event; the ``cadenza costs`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cadenza import Client, Context, RunStatus, open_engine, workflow
from cadenza.agents import call_model
from cadenza.engine.worker import drive
from cadenza.errors import ConfigurationError
from cadenza.models._pricing import price_for
from cadenza.telemetry._costs import BUDGET_EVENT, SpendGuard, load_costs
from cadenza.testing import ScriptedModel
from tests._cli import cadenza_in, cli_env

MODEL = ScriptedModel(default="one two three", name="scripted:costly")  # 3 output tokens

COSTS = """
[prices."scripted:costly"]
input = 1000000.0     # $1 per input token, $2 per output token: easy sums
output = 2000000.0

[budgets."workflow:cost-drafts"]
usd = 12.0
per = "day"
"""


@workflow(name="cost-drafts")
async def drafts(ctx: Context, topic: str) -> str:
    return (await call_model(ctx, MODEL, f"draft {topic}", name="draft")).text


@workflow(name="cost-notes")
async def notes(ctx: Context, topic: str) -> str:
    return (await call_model(ctx, MODEL, f"note {topic}", name="note")).text


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "costs.toml").write_text(COSTS)
    return tmp_path


async def test_runs_roll_up_by_workflow_model_tenant_and_day(tmp_path: Path) -> None:
    (tmp_path / "costs.toml").write_text(COSTS.split("[budgets")[0])  # prices, no budget
    engine = await open_engine(home=tmp_path)
    try:
        assert engine.spend_guard is None
        for workflow_def, topic, tenant in [
            (drafts, "a", "default"),
            (drafts, "b", "acme"),
            (notes, "c", "acme"),
        ]:
            run = await engine.start(workflow_def, topic, tenant=tenant)
            assert (await drive(engine, run.run_id)).status == RunStatus.SUCCEEDED
        client = Client(engine)
        report = await client.costs()
        acme = await client.costs(tenant="acme", workflow=drafts)
    finally:
        await engine.close()
    # Each call: 2 input tokens ("draft a") at $1 and 3 output tokens at $2 = $8.
    assert report.total["cost_usd"] == 24.0 and report.total["requests"] == 3
    assert dict(report.rows("workflow"))["cost-drafts"]["cost_usd"] == 16.0
    assert dict(report.rows("tenant"))["acme"]["cost_usd"] == 16.0
    assert dict(report.rows("model"))["scripted:costly"]["input_tokens"] == 6
    [(_day, row)] = report.rows("day")
    assert row["runs"] == 3
    assert acme.total["cost_usd"] == 8.0 and acme.as_dict()["workflow"] == {
        "cost-drafts": {
            "runs": 1,
            "requests": 1,
            "input_tokens": 2,
            "output_tokens": 3,
            "cost_usd": 8.0,
        }
    }


async def test_a_workflow_budget_stops_its_model_calls_with_an_event(home: Path) -> None:
    engine = await open_engine(home=home)
    try:
        assert isinstance(engine.spend_guard, SpendGuard)
        engine.spend_guard.refresh = 0  # read the spend afresh for every call in this test
        spent = []
        for topic in ("a", "b"):  # $8 each: the second goes over $12 but was allowed
            run = await engine.start(drafts, topic)
            spent.append((await drive(engine, run.run_id)).status)
        third = await engine.start(drafts, "c")
        third = await drive(engine, third.run_id)
        other = await engine.start(notes, "d")  # another workflow: no budget
        other = await drive(engine, other.run_id)
        events = [e.event for e in await engine.store.list_events(limit=50)]
        journal = await engine.store.load_journal(third.run_id)
    finally:
        await engine.close()
    assert spent == [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED]
    assert third.status == RunStatus.FAILED and third.error is not None
    assert "BudgetExceeded" in f"{third.error.type} {third.error.message}"
    assert "workflow cost-drafts has spent $16.0000" in third.error.message
    assert "costs.toml" in third.error.message
    assert other.status == RunStatus.SUCCEEDED
    [event] = [e for e in events if e["detail-type"] == BUDGET_EVENT]
    assert event["detail"]["scope"] == "workflow:cost-drafts"
    assert event["detail"]["spent_usd"] == 16.0 and event["run_id"] == third.run_id
    # The refusal is the step's recorded outcome: replay reads it, it does not ask again.
    [step] = [op for op in journal if op.name == "draft"]
    assert step.error is not None and step.error.type == "BudgetExceeded"


async def test_a_price_override_applies_and_a_bad_file_says_where(tmp_path: Path) -> None:
    (tmp_path / "costs.toml").write_text(COSTS)
    load_costs(tmp_path)
    price = price_for("scripted:costly")
    assert price is not None and price.input == 1_000_000.0
    (tmp_path / "costs.toml").write_text('[budgets."team:x"]\nusd = 1\n')
    with pytest.raises(ConfigurationError, match=r"costs.toml.*workflow:NAME"):
        load_costs(tmp_path)
    (tmp_path / "costs.toml").write_text("[prices\n")
    with pytest.raises(ConfigurationError, match=r"costs\.toml"):
        load_costs(tmp_path)


def test_the_costs_command(home: Path) -> None:
    cadenza = cadenza_in(home)
    seeded = subprocess.run(
        [sys.executable, "-c", SEED],
        capture_output=True,
        text=True,
        env=cli_env(home),
        timeout=60,
        cwd=home,
    )
    assert seeded.returncode == 0, seeded.stderr
    shown = cadenza("costs", "--by", "workflow", "--by", "tenant")
    assert shown.returncode == 0, shown.stderr
    assert "cost-drafts" in shown.stdout and "$16.00" in shown.stdout
    data = json.loads(cadenza("costs", "--json").stdout)
    assert data["total"]["cost_usd"] == 16.0 and data["workflow"]["cost-drafts"]["runs"] == 2
    budgets = json.loads(cadenza("costs", "budgets", "--json").stdout)
    assert budgets["budgets"][0]["exceeded"] is True
    assert "exceeded" in cadenza("costs", "budgets").stdout
    assert "scripted:costly" in cadenza("costs", "prices").stdout
    bad = cadenza("costs", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "ISO date" in bad.stderr


SEED = """
import asyncio
from cadenza import open_engine
from cadenza.engine.worker import drive
from tests.telemetry.test_costs import drafts

async def main():
    engine = await open_engine()
    for topic in ("a", "b"):
        run = await engine.start(drafts, topic)
        await drive(engine, run.run_id)
    await engine.close()

asyncio.run(main())
"""
