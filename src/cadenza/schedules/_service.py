"""Schedules over an engine: define, pause, resume, and fire the ticks that are due.

The engine decides, the store persists. ``fire_due_schedules`` reads the due schedules,
decides each one's firing (``_plan.decide``: pure, the same on every worker), builds the
runs of the ticks that fire — each with an id derived from the schedule's name and the
tick — and hands the store one :class:`ScheduleFiring`, applied only if the schedule is
still at the revision that was read. Two workers racing over one tick: one firing wins,
the other is refused and writes nothing, so a tick starts its run exactly once.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cadenza.clock import iso
from cadenza.errors import (
    CadenzaError,
    ConfigurationError,
    InvalidInput,
    RunNotFound,
    ScheduleNotFound,
    StoreUnavailable,
    WorkflowNotFound,
)
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.ports.run_store import (
    CatchUp,
    Overlap,
    RunRecord,
    RunStatus,
    Schedule,
    ScheduleFiring,
)
from cadenza.schedules import _plan
from cadenza.schedules.expressions import zone
from cadenza.serde import convert, dumps
from cadenza.workflow import WorkflowDefinition, load, lookup

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine

log = logging.getLogger("cadenza.schedules")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: A schedule's input is stored inline and copied into each run it starts.
MAX_INPUT_BYTES = 64 * 1024
#: How long a schedule whose workflow this worker cannot import waits before another look.
_UNRESOLVED_RETRY = timedelta(seconds=60)


def run_id_for(name: str, tick: datetime) -> str:
    """The id of the run a schedule's tick starts: the same for every worker."""
    return f"sched-{name}-{tick.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def expression_for(
    *,
    cron: str | None = None,
    every: timedelta | None = None,
    at: datetime | None = None,
    expression: str | None = None,
    timezone: str = "UTC",
) -> str:
    """The schedule expression of exactly one of ``cron``, ``every``, ``at`` or
    ``expression``; ConfigurationError for none or several. A naive ``at`` is local to
    ``timezone``; an aware one is converted to it."""
    given = [v for v in (cron, every, at, expression) if v is not None]
    if len(given) != 1:
        raise ConfigurationError(
            "give exactly one of cron='0 9 * * MON-FRI', every=timedelta(minutes=15),"
            " at=datetime(2026, 12, 1, 9) or expression='rate(15 minutes)'"
        )
    if cron is not None:
        return cron if cron.startswith("cron(") else f"cron({cron})"
    if every is not None:
        minutes, rest = divmod(every.total_seconds(), 60)
        if rest or minutes <= 0:
            raise ConfigurationError(
                f"every={every} is not a whole, positive number of minutes; schedules tick"
                " at one-minute precision, e.g. every=timedelta(minutes=15)"
            )
        return f"rate({int(minutes)} minutes)"
    if at is not None:
        if at.tzinfo is not None:
            at = at.astimezone(zone(timezone))
        return f"at({at.replace(tzinfo=None, microsecond=0).isoformat()})"
    assert expression is not None
    return expression


async def put_schedule(
    engine: Engine,
    name: str,
    workflow: WorkflowDefinition,
    expression: str,
    *,
    input: Any = None,
    pin_version: bool = False,
    timezone: str = "UTC",
    window: timedelta = timedelta(0),
    catch_up: CatchUp = CatchUp.LATEST,
    catch_up_limit: int = 10,
    overlap: Overlap = Overlap.SKIP,
    paused: bool = False,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> Schedule:
    """Validate a schedule, compute its first tick and store it (create or replace)."""
    if not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"schedule name {name!r} is not valid: use 1 to 64 letters, digits and . _ -,"
            " starting with a letter or digit, e.g. nightly-report"
        )
    zone(timezone)
    _plan.expression(expression)
    if window < timedelta(0) or window > timedelta(days=1):
        raise ConfigurationError(f"window={window} must be between 0 and one day")
    if catch_up_limit < 1:
        raise ConfigurationError(f"catch_up_limit={catch_up_limit} must be at least 1")
    for label, value in (("start_at", start_at), ("end_at", end_at)):
        if value is not None and value.tzinfo is None:
            raise ConfigurationError(f"{label} must be an aware datetime, e.g. with tzinfo=UTC")
    if start_at is not None and end_at is not None and end_at <= start_at:
        raise ConfigurationError(f"end_at {end_at} is not after start_at {start_at}")
    text = _input_text(workflow, input)
    now = engine.clock.now()
    try:
        known: Schedule | None = await engine.store.get_schedule(name)
    except ScheduleNotFound:
        known = None
    schedule = Schedule(
        name=name,
        workflow=workflow.name,
        expression=expression,
        version=workflow.version if pin_version else None,
        module=workflow.module,
        input=text,
        timezone=timezone,
        window=window,
        catch_up=CatchUp(catch_up),
        catch_up_limit=catch_up_limit,
        overlap=Overlap(overlap),
        paused=paused,
        start_at=start_at.astimezone(UTC) if start_at else None,
        end_at=end_at.astimezone(UTC) if end_at else None,
        # A replaced schedule keeps its history: the overlap policy still sees its last run.
        last_tick_at=known.last_tick_at if known else None,
        last_run_id=known.last_run_id if known else None,
        created_at=(known.created_at if known else None) or now,
        updated_at=now,
    )
    first = _plan.first_tick(schedule, now)
    schedule = schedule.evolve(
        next_fire_at=first,
        due_at=_plan.fire_time(schedule, first) if first is not None else None,
    )
    stored = await engine.store.put_schedule(schedule)
    engine.poke()
    return stored


def _input_text(workflow: WorkflowDefinition, value: Any) -> str:
    if workflow.takes_input:
        value = convert(value, workflow.input_type, what=f"input of workflow {workflow.name!r}")
    elif value is not None:
        raise InvalidInput(f"workflow {workflow.name!r} takes no input")
    text = dumps(value, what="the schedule's input")
    if len(text.encode()) > MAX_INPUT_BYTES:
        raise InvalidInput(
            f"the schedule's input is {len(text.encode())} bytes, over {MAX_INPUT_BYTES};"
            " keep large content in an artifact and pass its key"
        )
    return text


async def set_paused(engine: Engine, name: str, *, paused: bool) -> Schedule:
    """Pause or resume; a resumed schedule fires from its next tick on, not the missed ones."""
    now = engine.clock.now()
    schedule = await engine.store.pause_schedule(name, paused=paused, now=now)
    resumed = schedule.resumed_at
    if not paused and resumed is not None and schedule.next_fire_at is not None:
        if schedule.next_fire_at < resumed:
            # Show the next tick that will really fire; a worker would skip there anyway
            # (and does, if this write loses a race: the revision guards it).
            first = _plan.first_tick(schedule, resumed)
            moved = ScheduleFiring(
                name,
                schedule.revision,
                now,
                next_fire_at=first,
                due_at=_plan.fire_time(schedule, first) if first is not None else None,
            )
            if await engine.store.fire_schedule(moved):
                schedule = await engine.store.get_schedule(name)
    engine.poke()
    return schedule


async def fire_due_schedules(engine: Engine, *, limit: int = 100) -> int:
    """Fire what is due of up to ``limit`` schedules; the number of runs started."""
    now = engine.clock.now()
    started = 0
    for schedule in await engine.store.due_schedules(now=now, limit=limit):
        try:
            started += await _fire(engine, schedule, now)
        except StoreUnavailable:
            raise
        except CadenzaError as exc:
            log.warning("schedule %s: not fired: %s", schedule.name, exc)
    if started:
        engine.poke()
    return started


async def _fire(engine: Engine, schedule: Schedule, now: datetime) -> int:
    previous_open = False
    if schedule.last_run_id is not None and schedule.overlap != Overlap.ALLOW:
        try:
            previous = await engine.store.get_run(schedule.last_run_id)
            previous_open = not previous.status.terminal
        except RunNotFound:
            previous_open = False
    decision = _plan.decide(schedule, now, previous_open=previous_open)
    runs: list[tuple[RunRecord, HistoryEvent]] = []
    due_at = decision.due_at
    if decision.fire:
        definition = _definition(schedule)
        if definition is None:
            log.warning(
                "schedule %s: workflow %s is not registered in this process and cannot be"
                " imported (%s); its ticks wait for a worker that has it",
                schedule.name,
                schedule.workflow,
                schedule.module,
            )
            retry = now + _UNRESOLVED_RETRY
            await engine.store.fire_schedule(
                ScheduleFiring(
                    schedule.name,
                    schedule.revision,
                    now,
                    next_fire_at=schedule.next_fire_at,
                    due_at=retry,
                    buffered_tick=schedule.buffered_tick,
                )
            )
            return 0
        runs = [_run(engine, schedule, definition, tick, now) for tick in decision.fire]
    if decision.dropped:
        log.info(
            "schedule %s: %d due tick(s) not fired (catch-up %s, overlap %s)",
            schedule.name,
            decision.dropped,
            schedule.catch_up,
            schedule.overlap,
        )
    fired = await engine.store.fire_schedule(
        ScheduleFiring(
            schedule.name,
            schedule.revision,
            now,
            next_fire_at=decision.next_tick,
            due_at=due_at,
            buffered_tick=decision.buffered,
            runs=runs,
            last_tick_at=decision.fire[-1] if decision.fire else None,
            last_run_id=runs[-1][0].run_id if runs else None,
        )
    )
    return len(runs) if fired else 0


def _definition(schedule: Schedule) -> WorkflowDefinition | None:
    definition = lookup(schedule.workflow, schedule.version)
    if definition is None and schedule.module:
        try:
            load(schedule.module)
        except WorkflowNotFound as exc:
            log.warning("schedule %s: cannot import %s: %s", schedule.name, schedule.module, exc)
        definition = lookup(schedule.workflow, schedule.version)
    return definition


def _run(
    engine: Engine,
    schedule: Schedule,
    definition: WorkflowDefinition,
    tick: datetime,
    now: datetime,
) -> tuple[RunRecord, HistoryEvent]:
    run_id = run_id_for(schedule.name, tick)
    link = {"name": schedule.name, "tick": iso(tick)}
    state = engine.initial_document(run_id, now)
    state["metadata"]["schedule"] = link
    run = RunRecord(
        run_id=run_id,
        workflow=definition.name,
        version=definition.version,
        status=RunStatus.PENDING,
        input=schedule.input,
        created_at=now,
        updated_at=now,
        module=definition.module or schedule.module,
        queue=definition.queue,
        state=state,
        trace_id=uuid.uuid4().hex,
    )
    started = HistoryEvent(
        seq=0,
        type=HistoryEventType.EXECUTION_STARTED,
        timestamp=now,
        details={
            "workflow": definition.name,
            "version": definition.version,
            "schedule": schedule.name,
            "scheduled_for": iso(tick),
        },
    )
    return run, started
