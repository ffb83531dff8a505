"""``cadenza costs``: what the runs spent on models, by workflow, model, tenant and day;
``costs prices`` and ``costs budgets`` show the deployment's table and where each budget
stands."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.table import Table

from cadenza.cli import _remote
from cadenza.cli._common import console, emit_json, fail, json_option, literal, money, run_async
from cadenza.config import resolve_home
from cadenza.engine.engine import Engine
from cadenza.errors import CadenzaError, InvalidInput
from cadenza.models._pricing import prices
from cadenza.telemetry._costs import CostConfig, SpendGuard, cost_report, load_costs

_AGO = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _moment(text: str | None, what: str) -> datetime | None:
    """``7d`` / ``24h`` / ``30m`` ago, or an ISO date or time (UTC when it has no zone)."""
    if text is None:
        return None
    match = _AGO.match(text.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither a duration (7d, 24h, 30m, 2w) nor an ISO date (2026-11-01)",
            param_hint=what,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _config() -> CostConfig:
    try:
        return load_costs(resolve_home(None))
    except CadenzaError as exc:
        fail(exc)


@click.group("costs", invoke_without_command=True)
@click.option("--since", default="30d", show_default=True, help="From: 7d, 24h, or a date.")
@click.option("--until", default=None, help="Up to (exclusive): a duration ago or a date.")
@click.option(
    "--by",
    "dimensions",
    type=click.Choice(["workflow", "model", "tenant", "day"]),
    multiple=True,
    help="Roll up by this (repeat); default: workflow and model.",
)
@click.option("--workflow", default=None, help="Only runs of this workflow.")
@click.option("--tenant", default=None, help="Only runs of this tenant.")
@json_option
@click.pass_context
def costs_group(
    click_ctx: click.Context,
    since: str,
    until: str | None,
    dimensions: tuple[str, ...],
    workflow: str | None,
    tenant: str | None,
    as_json: bool,
) -> None:
    """Model spend of the runs started in a period, rolled up.

    Tokens and cost come from each run's recorded usage (the price table at the time of
    each call); a model without a price counts its tokens at $0.
    """
    if click_ctx.invoked_subcommand is not None:
        return
    start, end = _moment(since, "--since"), _moment(until, "--until")
    if _remote.active():
        report = _remote_report(start, end, workflow, tenant)
    else:

        @run_async
        async def body(engine: Engine) -> Any:
            return await cost_report(
                engine.store, since=start, until=end, workflow=workflow, tenant=tenant
            )

        report = body().as_dict()
    if as_json:
        emit_json(report)
        return
    total = report["total"]
    console.print(
        f"{int(total['runs'])} of {report['runs']} runs used models since {since}:"
        f" {int(total['requests'])} calls, {int(total['input_tokens']):,} tokens in,"
        f" {int(total['output_tokens']):,} out, {money(total['cost_usd'])}"
        + (" (cut at 100,000 runs)" if report["truncated"] else ""),
        highlight=False,
    )
    for dimension in dimensions or ("workflow", "model"):
        rows = report[dimension]
        if not rows:
            continue
        table = Table(title=f"by {dimension}", title_justify="left", header_style="bold")
        for column in (dimension, "runs", "calls", "tokens in", "tokens out", "cost"):
            table.add_column(column, justify="left" if column == dimension else "right")
        for key, row in rows.items():
            table.add_row(
                literal(key),
                f"{int(row['runs']):,}",
                f"{int(row['requests']):,}",
                f"{int(row['input_tokens']):,}",
                f"{int(row['output_tokens']):,}",
                money(row["cost_usd"]),
            )
        console.print(table)


def _remote_report(
    start: datetime | None, end: datetime | None, workflow: str | None, tenant: str | None
) -> dict[str, Any]:
    """The roll-up from the service (``CADENZA_URL``): of the API key's tenant only."""
    if tenant is not None:
        raise click.UsageError(
            "over CADENZA_URL the roll-up is of the API key's tenant; drop --tenant, or run"
            " 'cadenza costs --tenant' where the store is"
        )
    params = {"workflow": workflow}
    for key, moment in (("since", start), ("until", end)):
        if moment is not None:
            params[key] = moment.isoformat()
    data: dict[str, Any] = _remote.api().call(
        "GET", "/costs", params={k: v for k, v in params.items() if v is not None}
    )
    return data


@costs_group.command("prices")
@json_option
def costs_prices(as_json: bool) -> None:
    """The price table in force (USD per million tokens), with this deployment's entries."""
    config = _config()
    table_data = {
        name: {"input": p.input, "output": p.output, "cached": p.cached}
        for name, p in sorted(prices().items())
    }
    if as_json:
        emit_json({"source": str(config.source) if config.source else None, "prices": table_data})
        return
    table = Table(header_style="bold")
    for column in ("model", "input", "output", "cached"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, p in table_data.items():
        cached = "" if p["cached"] is None else f"{p['cached']:g}"
        table.add_row(literal(name), f"{p['input']:g}", f"{p['output']:g}", cached)
    console.print(table)
    where = config.source or resolve_home(None) / "costs.toml"
    console.print(
        f'override or add entries in {where}, as [prices."provider:model"] tables',
        markup=False,
        highlight=False,
    )


@costs_group.command("budgets")
@json_option
def costs_budgets(as_json: bool) -> None:
    """Each budget of the deployment's costs.toml and what its window has spent so far."""
    config = _config()
    if not config.budgets:
        if as_json:
            emit_json({"source": None, "budgets": []})
            return
        fail(
            InvalidInput(
                f'no budgets: add [budgets."workflow:NAME"] or [budgets."tenant:NAME"] with'
                f" usd and per to {resolve_home(None) / 'costs.toml'} (docs/observability.md)"
            )
        )
    guard = SpendGuard(config)

    @run_async
    async def body(engine: Engine) -> list[dict[str, Any]]:
        rows = []
        for scope, limit in config.budgets.items():
            start, end = limit.window(engine.clock.now())
            spent = await guard.spent(engine, scope, limit)
            rows.append(
                {
                    "scope": scope,
                    "limit": limit.describe(),
                    "limit_usd": limit.usd,
                    "action": limit.action,
                    "spent_usd": round(spent, 8),
                    "window_start": start.isoformat(),
                    "window_end": end.isoformat(),
                    "exceeded": spent >= limit.usd,
                }
            )
        return rows

    rows = body()
    if as_json:
        emit_json({"source": str(config.source), "budgets": rows})
        return
    table = Table(header_style="bold")
    for column in ("scope", "budget", "when spent", "spent", "window ends", ""):
        table.add_column(column)
    for row in rows:
        table.add_row(
            literal(row["scope"]),
            row["limit"],
            row["action"],
            money(row["spent_usd"]),
            row["window_end"][:16].replace("T", " "),
            "[red]exceeded[/red]" if row["exceeded"] else "",
        )
    console.print(table)
