"""Durable schedules: start a workflow at the times a ``cron(...)``, ``rate(...)`` or
``at(...)`` expression names, in a time zone, within a flexible window, with catch-up and
overlap policies. See docs/schedules.md.

Workers fire the ticks that are due (:func:`fire_due_schedules`, called from their claim
loop); the store applies each firing atomically and only against the schedule as it was
read, so a tick starts its run exactly once however many workers race for it.
"""

from cadenza.ports.run_store import CatchUp, Overlap, Schedule
from cadenza.schedules._plan import ON_TIME, fire_time, jitter
from cadenza.schedules._service import (
    expression_for,
    fire_due_schedules,
    put_schedule,
    run_id_for,
    set_paused,
)
from cadenza.schedules.expressions import parse_expression

__all__ = [
    "ON_TIME",
    "CatchUp",
    "Overlap",
    "Schedule",
    "expression_for",
    "fire_due_schedules",
    "fire_time",
    "jitter",
    "parse_expression",
    "put_schedule",
    "run_id_for",
    "set_paused",
]
