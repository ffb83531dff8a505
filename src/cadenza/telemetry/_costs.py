"""What runs spent on models, rolled up, and the budgets that stop or pause a workflow or a
tenant once it has spent enough.

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
    action = "pause"                      # or "stop", the default

A budget is checked inside each model call's durable step, so the decision is journaled
and replay never asks again: past it, the call fails with :class:`BudgetExceeded` and a
``cadenza.budget.exceeded`` event is published once for that call. With ``"stop"`` the
agent gives up and the run's recovery takes over; with ``"pause"`` the failure carries
when the window ends, and the model call waits for it durably (see
:mod:`cadenza.agents._calls`) before it asks again.
"""

from __future__ import annotations

import logging
import os
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
#: What a spent budget does to the model call that finds it spent.
BUDGET_ACTIONS = ("stop", "pause")

# A window that ends within a second of the refusal still pauses the run for this long,
# so a budget spent at the turn of a window never refuses and asks in a tight loop.
MIN_PAUSE_S = 1.0

log = logging.getLogger("cadenza.costs")


def budget_callback(scope: str) -> str:
    """The name of the callback a run paused by ``scope``'s budget waits on (succeeding it
    resumes the run early): ``budget:workflow:NAME`` or ``budget:tenant:NAME``."""
    return f"budget:{scope}"


@dataclass(frozen=True)
class SpendLimit:
    """At most ``usd`` per window: a UTC calendar ``"day"`` or ``"month"``, or a rolling
    ``timedelta``. ``action`` says what a model call finds past it: ``"stop"`` fails the
    call, ``"pause"`` makes the run wait until the window ends."""

    usd: float
    per: str | timedelta = "day"
    action: str = "stop"

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

    def ends(self, now: datetime) -> datetime:
        """When a budget spent at ``now`` may allow calls again: the end of a calendar
        window; for a rolling one, when every run counted at ``now`` has left it."""
        return now + self.per if isinstance(self.per, timedelta) else self.window(now)[1]


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
    return read_costs(path)


def read_costs(path: Path) -> CostConfig:
    """The prices and budgets of one costs file; its prices are registered."""
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
    action = entry.get("action", "stop")
    if action not in BUDGET_ACTIONS:
        raise ValueError(f"budget {scope!r}: action must be 'stop' or 'pause', not {action!r}")
    return SpendLimit(float(entry["usd"]), per, action)


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
    busy worker reads the store once per scope every few seconds, not once per call. The
    costs file is read again when it changes (looked at once per ``refresh`` too), so a
    budget raised to resume paused runs applies in the workers already running.
    """

    def __init__(self, config: CostConfig, *, refresh: timedelta = timedelta(seconds=5)):
        self.config = config
        self.refresh = refresh.total_seconds()
        self._cache: dict[tuple[str, datetime], tuple[float, float]] = {}
        self._looked: float | None = None
        self._mtime = _mtime(config.source)

    def limits_for(self, workflow: str, tenant: str) -> list[tuple[str, SpendLimit]]:
        scopes = (f"workflow:{workflow}", f"tenant:{tenant}")
        return [(s, self.config.budgets[s]) for s in scopes if s in self.config.budgets]

    def _reload(self, now: float) -> None:
        """Read the costs file again if it changed since it was read."""
        source = self.config.source
        if source is None or (self._looked is not None and now - self._looked < self.refresh):
            return
        self._looked = now
        mtime = _mtime(source)
        if mtime is None or mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            self.config = read_costs(source)
        except ConfigurationError as exc:  # a file saved half-edited: keep the budgets in force
            log.warning("%s; the budgets read before stay in force", exc)

    async def spent(self, engine: Engine, scope: str, limit: SpendLimit) -> float:
        start, end = limit.window(engine.clock.now())
        key = (scope, start)
        cached = self._cache.get(key)
        if cached is not None and engine.clock.monotonic() - cached[0] < self.refresh:
            return cached[1]
        kind, _, name = scope.partition(":")
        report = await cost_report(
            engine.store,
            since=start,
            until=end,
            workflow=name if kind == "workflow" else None,
            tenant=name if kind == "tenant" else None,
        )
        self._cache[key] = (engine.clock.monotonic(), report.total["cost_usd"])
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
        """Raise :class:`BudgetExceeded` (and publish its event) when a budget is spent.

        The error's details (kept in the journal with the step's failure) say the budget's
        ``action``, its ``scope``, and, to pause, until when (``resume_at``) and for how
        many seconds from the refusal (``pause_s``).
        """
        self._reload(engine.clock.monotonic())
        for scope, limit in self.limits_for(workflow, tenant):
            spent = await self.spent(engine, scope, limit)
            if spent < limit.usd:
                continue
            now = engine.clock.now()
            start, end = limit.window(now)
            resume_at = limit.ends(now)
            event = Event.new(
                BUDGET_EVENT,
                {
                    "scope": scope,
                    "action": limit.action,
                    "limit_usd": limit.usd,
                    "spent_usd": round(spent, 8),
                    "window_start": start.isoformat(),
                    "window_end": end.isoformat(),
                    # When a paused run asks again; a stopped one does not.
                    "resume_at": resume_at.isoformat() if limit.action == "pause" else None,
                    "run_id": run_id,
                    "op_id": op_id,
                },
                source="cadenza",
                run_id=run_id,
                trace_id=trace_id,
                # One event per refused call, however often its attempt is retried; a
                # paused run asks again as a new call, so each pause has its event.
                id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"cadenza:budget:{run_id}/{op_id}")),
            )
            await engine.publish([event.to_dict()])
            what = (
                f"{scope.replace(':', ' ', 1)} has spent ${spent:.4f} of its budget of"
                f" {limit.describe()} (window {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}"
                " UTC)"
            )
            if limit.action != "pause":
                refused = BudgetExceeded(
                    f"{what}; raise it in the deployment's costs.toml or wait for the next window"
                )
                vars(refused).update(action="stop", scope=scope)
                raise refused
            # What a person most needs first: histories and lists clip long messages.
            paused = BudgetExceeded(
                f"the run pauses until {resume_at:%Y-%m-%d %H:%M} UTC, then asks again: {what}."
                " To resume it sooner, raise the budget in the deployment's costs.toml and"
                f" succeed the run's callback '{budget_callback(scope)}'; 'cadenza runs show"
                f" {run_id}' prints the 'cadenza callback succeed TOKEN' command"
            )
            # An error's public attributes are journaled as the failure's details, which
            # is how the model call learns, on every replay alike, how long to wait.
            vars(paused).update(
                action="pause",
                scope=scope,
                resume_at=resume_at.isoformat(),
                pause_s=max((resume_at - now).total_seconds(), MIN_PAUSE_S),
            )
            raise paused


def _mtime(path: Path | None) -> float | None:
    try:
        return path.stat().st_mtime if path is not None else None
    except OSError:
        return None
