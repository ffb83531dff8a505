"""A run in one self-contained file, and its replay against the current code.

``cadenza runs export RUN`` writes the run's record, journal (every step's result: model
replies and tool results included), callbacks, history and the artifacts its values were
claim-checked into. :func:`replay_export` builds a check-only activation from that file —
no store, no model, no tool — and replays it against the code as it is now, stopping at the
first operation the code asks for differently. A production run that went wrong becomes a
regression test: export it, commit the file, assert that it replays.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cadenza.engine import _replay_check
from cadenza.engine.activation import Activation
from cadenza.errors import ConfigurationError, ErrorInfo
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.journal import OpRecord, OpStatus, OpType
from cadenza.ports.run_store import (
    CallbackKind,
    CallbackRecord,
    CallbackStatus,
    RunOrigin,
    RunRecord,
    RunStatus,
)

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine
    from cadenza.workflow import WorkflowDefinition

FORMAT = 1
# Where a claim-checked value points (cadenza.serde), found in the records' JSON however
# deeply its quotes are escaped (a reference inside a stored JSON text).
_REFERENCE = re.compile(r'@artifact \{\\*"key\\*":\\*"(?P<key>[^"\\]+)')


@dataclass(frozen=True)
class RunExport:
    """What an export file holds."""

    run: RunRecord
    journal: list[OpRecord]
    callbacks: list[CallbackRecord]
    history: list[HistoryEvent]
    artifacts: dict[str, bytes]

    def to_json(self) -> str:
        document = {
            "cadenza_export": FORMAT,
            "run": plain(self.run),
            "journal": plain(self.journal),
            "callbacks": plain(self.callbacks),
            "history": [event.to_dict() for event in self.history],
            "artifacts": {
                key: base64.b64encode(data).decode("ascii")
                for key, data in sorted(self.artifacts.items())
            },
        }
        return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunExport:
        try:
            data = json.loads(text)
            if data.get("cadenza_export") != FORMAT:
                raise ValueError(f"not a cadenza run export of format {FORMAT}")
            return cls(
                run=build(RunRecord, RunStatus, data["run"]),
                journal=[build(OpRecord, OpStatus, op) for op in data["journal"]],
                callbacks=[build(CallbackRecord, CallbackStatus, cb) for cb in data["callbacks"]],
                history=[_event(event) for event in data.get("history", [])],
                artifacts={
                    key: base64.b64decode(value) for key, value in data["artifacts"].items()
                },
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigurationError(
                f"this is not a run export cadenza can read ({exc}); write one with"
                " 'cadenza runs export RUN --output FILE'"
            ) from exc


async def export_run(engine: Engine, run_id: str) -> RunExport:
    store = engine.store
    run = await store.get_run(run_id)
    journal, callbacks = await store.load_activation(run_id)
    history = await store.history(run_id)
    artifacts: dict[str, bytes] = {}
    for key in sorted(_references([run, journal, callbacks])):
        if engine.artifacts is None:
            raise ConfigurationError(
                f"run {run_id} keeps values in artifacts, but this engine has no artifact"
                " store; open it with the same CADENZA_HOME or artifact URL as the run's"
            )
        artifacts[key] = await engine.artifacts.get(key)
    return RunExport(run, journal, callbacks, history, artifacts)


async def replay_export(
    engine: Engine, export: RunExport, definition: WorkflowDefinition
) -> _replay_check.ReplayCheckResult:
    """Replay ``export`` against ``definition`` on ``engine`` (whose artifact store takes
    the exported artifacts); nothing is executed and nothing is written to its run store."""
    if (export.run.workflow, export.run.version) != (definition.name, definition.version):
        raise ConfigurationError(
            f"the export is a run of {export.run.workflow} v{export.run.version}, not of"
            f" {definition.name} v{definition.version}; replay it against that workflow"
        )
    if export.artifacts:
        if engine.artifacts is None:
            raise ConfigurationError("replaying this export needs an engine with artifacts")
        scope = engine.artifacts.for_run(export.run.run_id)
        for key, data in export.artifacts.items():
            if await scope.put(data) != key:
                raise ConfigurationError(f"the export's artifact {key} does not match its content")
    act = Activation(
        engine, export.run, definition, export.journal, export.callbacks, check_only=True
    )
    outcome = await act.execute()
    return _replay_check._judge(
        export.run.status, act, outcome.status, outcome.replayed, outcome.error
    )


def _references(values: Iterable[Any]) -> set[str]:
    return set(_REFERENCE.findall(json.dumps(plain(list(values)), ensure_ascii=False)))


# --- records as JSON --------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` (records, enums, times, errors) as JSON data."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, ErrorInfo):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


_CONVERT: dict[str, Any] = {
    "type": OpType,
    "kind": CallbackKind,
    "error": ErrorInfo.from_dict,
    "origin": RunOrigin.from_dict,
}
_TIMES = {
    "created_at",
    "updated_at",
    "wake_at",
    "lease_expires_at",
    "started_at",
    "ended_at",
    "expires_at",
    "heartbeat_at",
    "completed_at",
}


def build(cls: Any, status: Any, data: dict[str, Any]) -> Any:
    """A record of ``cls`` from :func:`plain` data; fields it does not know are refused."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in names:
            raise ValueError(f"{cls.__name__} has no field {key!r}")
        if value is not None and key in _TIMES:
            value = datetime.fromisoformat(value)
        elif value is not None and key == "status":
            value = status(value)
        elif value is not None and key in _CONVERT:
            value = _CONVERT[key](value)
        values[key] = value
    return cls(**values)


def _event(data: dict[str, Any]) -> HistoryEvent:
    return HistoryEvent(
        seq=int(data["seq"]),
        type=HistoryEventType(data["type"]),
        timestamp=datetime.fromisoformat(data["timestamp"]),
        op_id=data.get("op_id"),
        parent_id=data.get("parent_id"),
        name=data.get("name"),
        details=dict(data.get("details") or {}),
    )
