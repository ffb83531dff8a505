"""Retention: which ended runs to delete, decided by the engine, applied by the stores.

A run is pruned once it has ended (SUCCEEDED, FAILED, CANCELLED) and was last updated
longer ago than the retention of its workflow version (``@workflow(retention=...)``, else
the engine's ``retention``, 30 days by default; ``None`` keeps runs forever). A child run
is kept as long as its parent is, so retrying a parent can still redrive its children;
it goes in the same batch as its parent or after it. A fork does not hold its origin:
it copied the journal records and artifacts it needs when it was made.

The store deletes a batch in one transaction and re-checks the decision there (still
ended, not updated since), so a run retried between the decision and the delete stays.
Then the run's artifacts go: keys are scoped to the run and every value that crosses runs
is copied into the reader's scope (``PayloadCodec.adopt``), so nothing else refers to them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cadenza.errors import CadenzaError, RunNotFound
from cadenza.ports.artifact_store import ArtifactUsage, run_scope
from cadenza.ports.run_store import RunRecord
from cadenza.workflow import lookup, registered

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine

log = logging.getLogger("cadenza.retention")

#: The deployment's default: ended runs are kept 30 days, as Step Functions keeps history.
DEFAULT_RETENTION = timedelta(days=30)

# Clocks of different processes and the stores' timestamp precision differ by far less.
_MARGIN = timedelta(milliseconds=1)


@dataclass(slots=True)
class PruneReport:
    """What a prune deleted (or, ``dry_run``, would delete)."""

    dry_run: bool = False
    run_ids: list[str] = field(default_factory=list)
    journal_records: int = 0
    history_events: int = 0
    callbacks: int = 0
    events: int = 0
    artifacts: int = 0
    artifact_bytes: int = 0
    kept_for_parent: int = 0  # ended runs past retention, kept while their parent is

    @property
    def runs(self) -> int:
        return len(self.run_ids)

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "runs": self.runs,
            "run_ids": self.run_ids,
            "journal_records": self.journal_records,
            "history_events": self.history_events,
            "callbacks": self.callbacks,
            "events": self.events,
            "artifacts": self.artifacts,
            "artifact_bytes": self.artifact_bytes,
            "kept_for_parent": self.kept_for_parent,
        }


class _Policy:
    """The retention of each run's workflow version, looked up once per prune."""

    def __init__(self, engine: Engine, older_than: timedelta | None) -> None:
        self.engine = engine
        self.older_than = older_than
        self._known: dict[tuple[str, str], timedelta | None] = {}

    def retention(self, run: RunRecord) -> timedelta | None:
        key = (run.workflow, run.version)
        if key not in self._known:
            definition = lookup(run.workflow, run.version)
            if definition is None and run.module:
                definition = self.engine.resolve(run)  # imports it, as a worker would
            declared = definition.retention if definition is not None else "deployment"
            if declared is None:
                self._known[key] = None  # kept forever, whatever the command line says
            elif self.older_than is not None:
                self._known[key] = self.older_than
            elif declared == "deployment":
                self._known[key] = self.engine.retention
            else:
                self._known[key] = declared
        return self._known[key]

    def shortest(self) -> timedelta | None:
        """The shortest retention any run can have: how far back to look for candidates."""
        if self.older_than is not None:
            return self.older_than
        declared = [
            d.retention
            for d in registered()
            if d.retention is not None and d.retention != "deployment"
        ]
        candidates = [r for r in (*declared, self.engine.retention) if r is not None]
        return min(candidates, default=None)


async def prune(
    engine: Engine,
    *,
    older_than: timedelta | None = None,
    workflow: str | None = None,
    limit: int | None = None,
    batch: int = 100,
    dry_run: bool = False,
) -> PruneReport:
    """Prune up to ``limit`` runs (all that are due when None), ``batch`` per transaction."""
    report = PruneReport(dry_run=dry_run)
    policy = _Policy(engine, older_than)
    shortest = policy.shortest()
    if shortest is None:
        return report  # every run is kept forever
    now = engine.clock.now()
    after: tuple[datetime, str] | None = None
    while limit is None or report.runs < limit:
        size = batch if limit is None else min(batch, limit - report.runs)
        page = await engine.store.ended_runs(
            updated_before=now - shortest, limit=size, workflow=workflow, after=after
        )
        if not page:
            break
        after = (page[-1].updated_at, page[-1].run_id)
        due = [r for r in page if _due(policy.retention(r), r, now)]
        chosen = await _without_kept_parents(engine, due, report)
        if chosen:
            await (_count if dry_run else _delete)(engine, chosen, report)
    return report


def _due(retention: timedelta | None, run: RunRecord, now: datetime) -> bool:
    return retention is not None and run.updated_at < now - retention


async def _without_kept_parents(
    engine: Engine, due: list[RunRecord], report: PruneReport
) -> list[RunRecord]:
    """The runs of ``due`` whose parent is gone or goes with them."""
    chosen = {r.run_id: r for r in due}
    changed = True
    while changed:  # a parent dropped from the batch keeps its own children too
        changed = False
        for run in list(chosen.values()):
            parent = run.parent_run_id
            if parent is None or parent in chosen or not await _exists(engine, parent):
                continue
            del chosen[run.run_id]
            report.kept_for_parent += 1
            changed = True
    return list(chosen.values())


async def _exists(engine: Engine, run_id: str) -> bool:
    try:
        await engine.store.get_run(run_id)
    except RunNotFound:
        return False
    return True


async def _count(engine: Engine, runs: list[RunRecord], report: PruneReport) -> None:
    for run in runs:
        report.run_ids.append(run.run_id)
        report.journal_records += len(await engine.store.load_journal(run.run_id))
        report.history_events += len(await engine.store.history(run.run_id))
        report.callbacks += len(await engine.store.load_callbacks(run.run_id))
        if engine.artifacts is not None:
            _add(report, await engine.artifacts.usage(run_scope(run.run_id)))


async def _delete(engine: Engine, runs: list[RunRecord], report: PruneReport) -> None:
    ended_before = max(r.updated_at for r in runs) + _MARGIN
    pruned = await engine.store.prune_runs([r.run_id for r in runs], ended_before=ended_before)
    report.run_ids += pruned.run_ids
    report.journal_records += pruned.journal_records
    report.history_events += pruned.history_events
    report.callbacks += pruned.callbacks
    report.events += pruned.events
    if engine.artifacts is None:
        return
    for run_id in pruned.run_ids:
        try:
            _add(report, await engine.artifacts.delete_scope(run_scope(run_id)))
        except CadenzaError as exc:  # the rows are gone, and nothing reads these files now
            log.warning(
                "run %s pruned, but its artifacts (%s) were not deleted: %s; delete them by hand",
                run_id,
                run_scope(run_id),
                exc,
            )


def _add(report: PruneReport, usage: ArtifactUsage) -> None:
    report.artifacts += usage.artifacts
    report.artifact_bytes += usage.bytes
