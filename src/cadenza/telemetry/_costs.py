"""What runs spent on models, rolled up, and the budgets that stop a workflow or a tenant
from spending more.

Every run keeps its model usage in its state document (``metadata.usage``, with the same
per model), summed from the journaled replies, so a roll-up reads run records and nothing
else. A deployment sets its prices and budgets in one TOML file, ``$CADENZA_HOME/costs.toml``
(or the file ``CADENZA_COSTS`` names)::

    [prices."openai:my-finetune"]        # USD per million tokens
    input = 3.0
    output = 12.0

    [budgets."workflow:research-report"]  # or "tenant:acme"
    usd = 25.0
    per = "day"                           # "day" or "month" (UTC calendar), or hours: 6

A budget is checked inside each model call's durable step, so the decision is journaled
and replay never asks again: past it, the call fails with :class:`BudgetExceeded` (the
agent gives up, the run's recovery takes over) and a ``cadenza.budget.exceeded`` event is
published once for that call.
"""

from __future__ import annotations

import os
import time
import tomllib
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cadenza.errors import BudgetExceeded, ConfigurationError
from cadenza.events.envelope import Event
from cadenza.models._pricing import register_price
from cadenza.ports.run_store import RunRecord, RunStore

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine

__all__ = ["CostConfig", "CostReport", "SpendGuard", "SpendLimit", "cost_report", "load_costs"]

_KEYS = ("requests", "input_tokens", "output_tokens", "cost_usd")
_DIMENSIONS = ("workflow", "model", "tenant", "day")
# A roll-up reads run records; past this many it says it was cut rather than run forever.
MAX_RUNS = 100_000
BUDGET_EVENT = "cadenza.budget.exceeded"


@dataclass(frozen=True)
class SpendLimit:
    """At most ``usd`` per window: a UTC calendar ``"day"`` or ``"month"``, or a rolling
    ``timedelta``."""

    usd: float
    per: str | timedelta = "day"

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """The window ``now`` falls in: (start, end)."""
        if isinstance(self.per, timedelta):
            return now - self.per, now + self.per
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.per == "day":
            return day, day + timedelta(days=1)
        month = day.replace(day=1)
        following = (month + timedelta(days=32)).replace(day=1)
        return month, following

    def describe(self) -> str:
        if isinstance(self.per, timedelta):
            return f"${self.usd:g} per {self.per.total_seconds() / 3600:g} h"
        return f"${self.usd:g} per {self.per}"


@dataclass(frozen=True)
class CostConfig:
    """A deployment's budgets by scope (``workflow:NAME`` or ``tenant:NAME``); prices are
    registered in the price table when the file is loaded."""

    budgets: Mapping[str, SpendLimit] = field(default_factory=dict)
    source: Path | None = None


def load_costs(home: Path) -> CostConfig:
    """The costs file of this deployment, if there is one; its prices are registered."""
    named = os.environ.get("CADENZA_COSTS")
    path = Path(named) if named else home / "costs.toml"
    if not path.exists():
        if named:
            raise ConfigurationError(f"CADENZA_COSTS names {path}, which does not exist")
        return CostConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        for model, price in (data.get("prices") or {}).items():
            register_price(
                model,
                input=float(price["input"]),
                output=float(price["output"]),
                cached=float(price["cached"]) if "cached" in price else None,
            )
        budgets = {
            scope: _limit(scope, entry) for scope, entry in (data.get("budgets") or {}).items()
        }
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{path}: {exc}; see docs/observability.md, 'Costs', for the format"
        ) from exc
    return CostConfig(budgets, path)


def _limit(scope: str, entry: Mapping[str, Any]) -> SpendLimit:
    kind, _, name = scope.partition(":")
    if kind not in ("workflow", "tenant") or not name:
        raise ValueError(f"budget {scope!r} must be named 'workflow:NAME' or 'tenant:NAME'")
    per = entry.get("per", "day")
    if isinstance(per, int | float):
        per = timedelta(hours=float(per))
    elif per not in ("day", "month"):
        raise ValueError(f"budget {scope!r}: per must be 'day', 'month' or a number of hours")
    return SpendLimit(float(entry["usd"]), per)


# --- roll-ups --------------------------------------------------------------------------


def usage_of(run: RunRecord) -> dict[str, Any]:
    """The run's model usage (``metadata.usage`` of its state document), or ``{}``."""
    metadata = run.state.get("metadata") if isinstance(run.state, dict) else None
    usage = metadata.get("usage") if isinstance(metadata, dict) else None
    return usage if isinstance(usage, dict) else {}


def _bucket() -> dict[str, float]:
    return {"runs": 0, **{key: 0 for key in _KEYS}}


@dataclass
class CostReport:
    """Spend between ``since`` and ``until`` by workflow, model, tenant and UTC day."""

    since: datetime | None
    until: datetime | None
    runs: int = 0
    truncated: bool = False
    total: dict[str, float] = field(default_factory=_bucket)
    by: dict[str, dict[str, dict[str, float]]] = field(
        default_factory=lambda: {dim: defaultdict(_bucket) for dim in _DIMENSIONS}
    )

    def add(self, run: RunRecord) -> None:
        usage = usage_of(run)
        self.runs += 1
        if not usage:
            return
        keys = {
            "workflow": run.workflow,
            "tenant": run.tenant,
            "day": run.created_at.strftime("%Y-%m-%d"),
        }
        for target in (self.total, *(self.by[dim][key] for dim, key in keys.items())):
            target["runs"] += 1
            for key in _KEYS:
                target[key] += float(usage.get(key) or 0)
        for model, spent in (usage.get("by_model") or {}).items():
            target = self.by["model"][model]
            target["runs"] += 1
            for key in _KEYS:
                target[key] += float(spent.get(key) or 0)

    def rows(self, dimension: str) -> list[tuple[str, dict[str, float]]]:
        """One dimension's rows, most expensive first (days newest first)."""
        table = self.by[dimension]
        if dimension == "day":
            return sorted(table.items(), reverse=True)
        return sorted(table.items(), key=lambda item: (-item[1]["cost_usd"], item[0]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "runs": self.runs,
            "truncated": self.truncated,
            "total": dict(self.total),
            **{dim: dict(self.rows(dim)) for dim in _DIMENSIONS},
        }


async def cost_report(
    store: RunStore,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    workflow: str | None = None,
    tenant: str | None = None,
    limit: int = MAX_RUNS,
) -> CostReport:
    """Spend of the runs created in [since, until), optionally of one workflow or tenant."""
    report = CostReport(since, until)
    for run in await _runs(store, since, until, workflow, tenant, limit + 1):
        if report.runs == limit:
            report.truncated = True
            break
        report.add(run)
    return report


async def _runs(
    store: RunStore,
    since: datetime | None,
    until: datetime | None,
    workflow: str | None,
    tenant: str | None,
    limit: int,
) -> Iterable[RunRecord]:
    from cadenza.ports.run_store import RunPage

    found: list[RunRecord] = []
    page: RunPage | None = None
    while len(found) < limit:
        batch = await store.list_runs(
            workflow=workflow,
            tenant=tenant,
            created_after=since,
            created_before=until,
            after=page,
            limit=min(1_000, limit - len(found)),
        )
        found += batch
        if len(batch) < 1_000:
            break
        page = RunPage(batch[-1].created_at, batch[-1].run_id)
    return found


# --- budgets ---------------------------------------------------------------------------


class SpendGuard:
    """Checks the budgets of a run's workflow and tenant before a model call.

    Spend in a window is a roll-up over the window's runs, cached for ``refresh`` so a
    busy worker reads the store once per scope every few seconds, not once per call.
    """

    def __init__(self, config: CostConfig, *, refresh: timedelta = timedelta(seconds=5)):
        self.config = config
        self.refresh = refresh.total_seconds()
        self._cache: dict[tuple[str, datetime], tuple[float, float]] = {}

    def limits_for(self, workflow: str, tenant: str) -> list[tuple[str, SpendLimit]]:
        scopes = (f"workflow:{workflow}", f"tenant:{tenant}")
        return [(s, self.config.budgets[s]) for s in scopes if s in self.config.budgets]

    async def spent(self, engine: Engine, scope: str, limit: SpendLimit) -> float:
        start, end = limit.window(engine.clock.now())
        key = (scope, start)
        cached = self._cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.refresh:
            return cached[1]
        kind, _, name = scope.partition(":")
        report = await cost_report(
            engine.store,
            since=start,
            until=end,
            workflow=name if kind == "workflow" else None,
            tenant=name if kind == "tenant" else None,
        )
        self._cache[key] = (time.monotonic(), report.total["cost_usd"])
        return report.total["cost_usd"]

    async def check(
        self,
        engine: Engine,
        *,
        run_id: str,
        op_id: str,
        workflow: str,
        tenant: str,
        trace_id: str | None = None,
    ) -> None:
        """Raise :class:`BudgetExceeded` (and publish its event) when a budget is spent."""
        for scope, limit in self.limits_for(workflow, tenant):
            spent = await self.spent(engine, scope, limit)
            if spent < limit.usd:
                continue
            start, end = limit.window(engine.clock.now())
            event = Event.new(
                BUDGET_EVENT,
                {
                    "scope": scope,
                    "limit_usd": limit.usd,
                    "spent_usd": round(spent, 8),
                    "window_start": start.isoformat(),
                    "window_end": end.isoformat(),
                    "run_id": run_id,
                    "op_id": op_id,
                },
                source="cadenza",
                run_id=run_id,
                trace_id=trace_id,
                # One event per refused call, however often its attempt is retried.
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"cadenza:budget:{run_id}/{op_id}")),
            )
            await engine.publish([event.to_dict()])
            raise BudgetExceeded(
                f"{scope.replace(':', ' ', 1)} has spent ${spent:.4f} of its budget of"
                f" {limit.describe()} (window {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}"
                " UTC); raise it in the deployment's costs.toml or wait for the next window"
            )
