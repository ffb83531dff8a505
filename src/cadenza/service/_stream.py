"""``GET /api/v1/runs/{run_id}/stream``: a run's progress as server-sent events.

Three kinds of events:

- ``operation``: an operation started, as the engine notes it, before anything is
  committed (only for runs this process executes: its in-process worker);
- ``history``: each history event once committed (a step finished, a callback was
  completed, the audit trail), read from the store, so runs executed by any worker
  are followed;
- ``token``: a piece of a model reply as it streams (models that stream, run in this
  process; streams never enter the journal, which records the final reply);

and ``end`` with the run's summary once it has ended, after which the stream closes.
The store is read after each checkpoint this process commits and every
``stream_poll_seconds`` besides, for what other processes do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from cadenza.history import HistoryEvent
from cadenza.ports.run_store import Checkpoint, RunRecord
from cadenza.service._access import run_of
from cadenza.service._auth import Principal, client_of, require
from cadenza.service._models import HistoryEntry, RunSummary

router = APIRouter(prefix="/runs", tags=["runs"])


def _sse(event: str, data: Any, *, id: int | None = None) -> bytes:
    lines = [f"event: {event}"]
    if id is not None:
        lines.append(f"id: {id}")
    text = json.dumps(data, default=str, ensure_ascii=False)
    lines.append(f"data: {text}")
    return ("\n".join(lines) + "\n\n").encode()


@router.get(
    "/{run_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "the progress"}},
)
async def stream_run(
    run_id: str,
    request: Request,
    principal: Principal = Depends(require("read")),  # noqa: B008 - FastAPI's idiom
) -> StreamingResponse:
    """The run's progress as server-sent events (``operation``, ``history``, ``token``,
    ``end``). ``Last-Event-ID`` resumes after that history event."""
    client = client_of(request)
    engine = client.engine
    await run_of(engine, principal, run_id)
    poll = request.app.state.settings.stream_poll_seconds
    last = request.headers.get("last-event-id", "")
    after = int(last) if last.isdigit() else 0

    async def events() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()

        def put(item: bytes | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def committed(run: RunRecord, checkpoint: Checkpoint) -> None:
            if run.run_id == run_id:
                put(None)  # read the store: the history has grown

        def activity(run: RunRecord, event: HistoryEvent) -> None:
            if run.run_id == run_id and event.op_id is not None:
                entry = {"op_id": event.op_id, "type": str(event.type), "name": event.name}
                put(_sse("operation", entry))

        def streamed(stream_run_id: str, op_id: str, text: str) -> None:
            if stream_run_id == run_id:
                put(_sse("token", {"op_id": op_id, "text": text}))

        stops = [
            engine.subscribe(committed),
            engine.subscribe_activity(activity),
            engine.subscribe_stream(streamed),
        ]
        seq = after
        try:
            while True:
                # The run first, then its history: an end read here has its last events
                # in the history read after it.
                run = await engine.store.get_run(run_id)
                for event in await engine.store.history(run_id, after_seq=seq):
                    seq = event.seq
                    yield _sse("history", HistoryEntry.of(event).model_dump(mode="json"), id=seq)
                if run.status.terminal:
                    yield _sse("end", RunSummary.of(run).model_dump(mode="json"))
                    return
                with contextlib.suppress(TimeoutError):
                    item = await asyncio.wait_for(queue.get(), poll)
                    while item is not None:
                        yield item
                        item = queue.get_nowait() if not queue.empty() else None
        finally:
            for stop in stops:
                stop()

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
