"""What a schedule does at a given moment: jitter, catch-up, overlap, pauses, dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cadenza.ports.run_store import CatchUp, Overlap, Schedule
from cadenza.schedules._plan import BUFFER_RECHECK, decide, fire_time, first_tick, jitter

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def schedule(expression: str = "rate(10 minutes)", **changes: object) -> Schedule:
    s = Schedule(name="s", workflow="wf", expression=expression, created_at=T0)
    s = s.evolve(**changes)
    first = first_tick(s, T0)
    assert first is not None
    return s.evolve(next_fire_at=first, due_at=fire_time(s, first))


def test_jitter_is_the_same_everywhere_and_within_the_window() -> None:
    window = timedelta(minutes=15)
    ticks = [T0 + i * timedelta(hours=1) for i in range(500)]
    drawn = [jitter("nightly", t, window) for t in ticks]
    assert drawn == [jitter("nightly", t, window) for t in ticks]
    assert all(timedelta(0) <= d < window for d in drawn)
    # Spread over the window, not bunched: every third of it is used.
    thirds = {int(d / (window / 3)) for d in drawn}
    assert thirds == {0, 1, 2}
    assert drawn != [jitter("other", t, window) for t in ticks]
    assert jitter("nightly", T0, timedelta(0)) == timedelta(0)


def test_a_tick_with_a_window_fires_at_its_drawn_time_not_before() -> None:
    s = schedule(window=timedelta(minutes=10))
    fires = fire_time(s, T0)
    assert T0 <= fires < T0 + timedelta(minutes=10)
    assert decide(s, fires - timedelta(milliseconds=1), previous_open=False).fire == []
    assert decide(s, fires, previous_open=False).fire == [T0]


def test_on_time_the_due_tick_fires_and_the_next_is_named() -> None:
    s = schedule()
    d = decide(s, T0 + timedelta(seconds=5), previous_open=False)
    assert d.fire == [T0]
    assert d.next_tick == T0 + timedelta(minutes=10)
    assert d.due_at == T0 + timedelta(minutes=10)
    assert d.dropped == 0


def test_catch_up_latest_fires_the_newest_missed_tick_once() -> None:
    s = schedule(catch_up=CatchUp.LATEST)
    d = decide(s, T0 + timedelta(minutes=35), previous_open=False)
    assert d.fire == [T0 + timedelta(minutes=30)]
    assert d.next_tick == T0 + timedelta(minutes=40)
    assert d.dropped == 3


def test_catch_up_all_fires_every_missed_tick_up_to_the_limit() -> None:
    s = schedule(catch_up=CatchUp.ALL, catch_up_limit=3, overlap=Overlap.ALLOW)
    d = decide(s, T0 + timedelta(minutes=35), previous_open=False)
    assert d.fire == [T0 + timedelta(minutes=m) for m in (10, 20, 30)]
    assert d.dropped == 1
    few = decide(s, T0 + timedelta(minutes=15), previous_open=False)
    assert few.fire == [T0, T0 + timedelta(minutes=10)]


def test_catch_up_none_fires_only_a_tick_that_is_on_time() -> None:
    s = schedule(catch_up=CatchUp.NONE)
    assert decide(s, T0 + 30 * timedelta(seconds=1), previous_open=False).fire == [T0]
    late = decide(s, T0 + timedelta(minutes=5), previous_open=False)
    assert late.fire == []
    assert late.next_tick == T0 + timedelta(minutes=10)
    missed = decide(s, T0 + timedelta(minutes=30, seconds=20), previous_open=False)
    assert missed.fire == [T0 + timedelta(minutes=30)]  # the latest is on time


def test_a_long_outage_is_caught_up_without_walking_every_tick() -> None:
    s = schedule("cron(* * * * *)", catch_up=CatchUp.ALL, catch_up_limit=5)
    s = s.evolve(overlap=Overlap.ALLOW)
    later = T0 + timedelta(days=400, seconds=30)
    d = decide(s, later, previous_open=False)
    assert d.fire == [T0 + timedelta(days=400) - i * MINUTE for i in (4, 3, 2, 1, 0)]
    assert d.next_tick == T0 + timedelta(days=400, minutes=1)


def test_overlap_skip_drops_the_tick_while_the_previous_run_is_open() -> None:
    s = schedule(overlap=Overlap.SKIP)
    d = decide(s, T0, previous_open=True)
    assert d.fire == []
    assert d.next_tick == T0 + timedelta(minutes=10)
    assert d.buffered is None
    assert d.dropped == 1


def test_overlap_skip_starts_one_run_for_several_due_ticks() -> None:
    s = schedule(overlap=Overlap.SKIP, catch_up=CatchUp.ALL)
    assert decide(s, T0 + timedelta(minutes=25), previous_open=False).fire == [
        T0 + timedelta(minutes=20)
    ]


def test_overlap_allow_fires_regardless() -> None:
    s = schedule(overlap=Overlap.ALLOW)
    assert decide(s, T0, previous_open=True).fire == [T0]


def test_overlap_buffer_one_keeps_the_newest_tick_until_the_run_ends() -> None:
    s = schedule(overlap=Overlap.BUFFER_ONE)
    held = decide(s, T0 + timedelta(seconds=1), previous_open=True)
    assert held.fire == []
    assert held.buffered == T0
    assert held.due_at == T0 + timedelta(seconds=1) + BUFFER_RECHECK  # look again soon
    s = s.evolve(next_fire_at=held.next_tick, due_at=held.due_at, buffered_tick=held.buffered)
    still = decide(s, T0 + timedelta(minutes=10, seconds=1), previous_open=True)
    assert still.buffered == T0 + timedelta(minutes=10)  # the newer one replaces it
    s = s.evolve(next_fire_at=still.next_tick, due_at=still.due_at, buffered_tick=still.buffered)
    ended = decide(s, T0 + timedelta(minutes=12), previous_open=False)
    assert ended.fire == [T0 + timedelta(minutes=10)]
    assert ended.buffered is None
    assert ended.due_at == T0 + timedelta(minutes=20)


def test_ticks_missed_while_paused_are_not_caught_up() -> None:
    s = schedule(catch_up=CatchUp.ALL, overlap=Overlap.ALLOW)
    resumed = T0 + timedelta(minutes=45)
    s = s.evolve(resumed_at=resumed)
    d = decide(s, resumed + timedelta(seconds=1), previous_open=False)
    assert d.fire == []
    assert d.next_tick == T0 + timedelta(minutes=50)
    later = decide(s, T0 + timedelta(minutes=50), previous_open=False)
    assert later.fire == [T0 + timedelta(minutes=50)]


def test_start_and_end_dates_bound_the_ticks() -> None:
    start = T0 + timedelta(hours=1)
    s = schedule("rate(30 minutes)", start_at=start, end_at=start + timedelta(hours=1))
    assert s.next_fire_at == start
    d = decide(s, start + timedelta(hours=5), previous_open=False)
    assert d.fire == [start + timedelta(hours=1)]
    assert d.next_tick is None
    assert d.due_at is None


@pytest.mark.parametrize("window", [timedelta(0), timedelta(minutes=30)])
def test_every_tick_fires_exactly_once_when_looked_at_often(window: timedelta) -> None:
    s = schedule("rate(10 minutes)", window=window, overlap=Overlap.ALLOW)
    fired: list[datetime] = []
    now = T0
    while now < T0 + timedelta(hours=3) + window:
        d = decide(s, now, previous_open=False)
        fired += d.fire
        s = s.evolve(next_fire_at=d.next_tick, due_at=d.due_at)
        now += timedelta(seconds=20)
    assert fired[:18] == [T0 + i * timedelta(minutes=10) for i in range(18)]
    assert fired == sorted(set(fired))  # in order, none twice
