"""The CLI over HTTP: with ``CADENZA_URL`` set (and ``CADENZA_API_KEY``), the run, callback
and event commands ask a ``cadenza serve`` service instead of opening the store.

Output and exit codes are those of the embedded commands: a problem document's
``exit_code`` becomes the exit code, its ``detail`` the error message. The service's
workers execute the runs, so ``cadenza run`` waits for the run to end or to wait on
something instead of executing it here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, NoReturn

from cadenza.cli._common import err_console, literal
from cadenza.errors import ErrorInfo
from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.ports.run_store import RunOrigin, RunRecord, RunStatus

__all__ = [
    "RemoteApi",
    "active",
    "api",
    "history_from_json",
    "run_from_json",
    "settle",
    "waits_from_json",
]

#: Exit code when the service cannot be reached: as for a store that takes no writes.
EXIT_UNREACHABLE = 6


def active() -> bool:
    """Whether commands go to a service (``CADENZA_URL`` is set)."""
    return bool(os.environ.get("CADENZA_URL"))


def api() -> RemoteApi:
    return RemoteApi(os.environ["CADENZA_URL"], os.environ.get("CADENZA_API_KEY"))


class RemoteApi:
    """A small synchronous client of ``/api/v1``; every error ends the command."""

    def __init__(self, url: str, key: str | None, *, timeout: float = 90.0) -> None:
        try:
            import httpx
        except ModuleNotFoundError:
            _exit("CADENZA_URL needs the 'service' extra: pip install 'cadenza[service]'", 2)
        base = url.rstrip("/")
        if not base.endswith("/api/v1"):
            base += "/api/v1"
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.url = url
        self._http = httpx.Client(base_url=base, headers=headers, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            _exit(
                f"cannot reach the cadenza service at {self.url} ({exc}); is 'cadenza serve'"
                " running there, and CADENZA_URL right?",
                EXIT_UNREACHABLE,
            )
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {}
            detail = problem.get("detail") or f"HTTP {response.status_code} from {self.url}"
            code = problem.get("exit_code")
            _exit(str(detail), code if isinstance(code, int) else 1)
        if response.status_code == 204:
            return None
        return response.json()


def _exit(message: str, code: int) -> NoReturn:
    err_console.print(f"[red]error:[/red] {literal(message, multiline=True)}")
    sys.exit(code)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def run_from_json(data: dict[str, Any]) -> RunRecord:
    """A run as the API describes it, as the record the CLI's printers take (with its
    input and result as JSON text, as ``engine.readable`` gives them)."""
    error = data.get("error")
    origin = data.get("forked_from")
    created = _time(data["created_at"]) or datetime.now(UTC)
    return RunRecord(
        run_id=data["run_id"],
        workflow=data["workflow"],
        version=data["version"],
        status=RunStatus(data["status"]),
        input=json.dumps(data.get("input")),
        created_at=created,
        updated_at=_time(data.get("updated_at")) or created,
        result=json.dumps(data["result"]) if data.get("result") is not None else None,
        error=ErrorInfo(error["type"], error["message"]) if error else None,
        parent_run_id=data.get("parent_run_id"),
        wake_at=_time(data.get("wake_at")),
        origin=RunOrigin(origin["run_id"], origin["op_id"]) if origin else None,
        state=_state(data),
        tenant=data.get("tenant", "default"),
    )


def history_from_json(data: dict[str, Any]) -> HistoryEvent:
    """A history event as the API describes it."""
    timestamp = _time(data["timestamp"])
    assert timestamp is not None
    return HistoryEvent(
        seq=data["seq"],
        type=HistoryEventType(data["type"]),
        timestamp=timestamp,
        op_id=data.get("op_id"),
        parent_id=data.get("parent_id"),
        name=data.get("name"),
        details=data.get("details") or {},
    )


def waits_from_json(data: dict[str, Any]) -> list[dict[str, Any]]:
    """What a run waits on, as ``PendingCallback.as_dict`` gives it (absent fields left
    out, times as datetimes)."""
    waits = []
    for wait in data.get("waiting_for", []):
        shaped = {k: v for k, v in wait.items() if v is not None or k == "expires_at"}
        shaped["expires_at"] = _time(wait.get("expires_at"))
        waits.append(shaped)
    return waits


def _state(data: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if data.get("agent_status"):
        state["status"] = data["agent_status"]
    if data.get("usage"):
        state["metadata"] = {"usage": data["usage"]}
    return state


def settle(remote: RemoteApi, run_id: str, *, linger: float) -> dict[str, Any]:
    """The run's detail once it has ended, or waits on a callback or an event, or on a
    timer more than ``linger`` seconds away (as ``cadenza run`` stops driving)."""
    poll = 0.1
    while True:
        detail: dict[str, Any] = remote.call("GET", f"/runs/{run_id}")
        status = RunStatus(detail["status"])
        if status.terminal:
            return detail
        if status == RunStatus.SUSPENDED:
            if detail.get("waiting_for"):
                return detail
            wake_at = _time(detail.get("wake_at"))
            if wake_at is not None and (wake_at - datetime.now(UTC)).total_seconds() > linger:
                return detail
        time.sleep(poll)
        poll = min(poll * 1.5, 1.0)
