"""The progress of a run as server-sent events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.service.conftest import Service
from tests.service.test_runs_api import start


def parse(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_the_stream_follows_a_run_to_its_end(service: Service) -> None:
    key = await service.key()
    run_id = await start(service, key)
    # The transport hands the body over once the stream closes: at the run's end.
    stream = asyncio.create_task(service.http.get(f"/api/v1/runs/{run_id}/stream", headers=key))
    await asyncio.sleep(0.1)
    await service.drive(run_id)
    response = await asyncio.wait_for(stream, 10)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse(response.text)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end" and events[-1][1]["status"] == "SUCCEEDED"
    history = [data["type"] for kind, data in events if kind == "history"]
    assert history[0] == "ExecutionStarted" and history[-1] == "ExecutionSucceeded"
    assert "StepSucceeded" in history
    started = [data for kind, data in events if kind == "operation"]
    assert {"op_id": "1", "type": "StepStarted", "name": "total"} in started


async def test_last_event_id_resumes_after_it(service: Service) -> None:
    key = await service.key()
    run_id = await start(service, key)
    await service.drive(run_id)
    full = parse((await service.http.get(f"/api/v1/runs/{run_id}/stream", headers=key)).text)
    seqs = [data["seq"] for kind, data in full if kind == "history"]
    resumed = await service.http.get(
        f"/api/v1/runs/{run_id}/stream", headers={**key, "Last-Event-ID": str(seqs[-2])}
    )
    rest = parse(resumed.text)
    assert [data["seq"] for kind, data in rest if kind == "history"] == [seqs[-1]]
    assert rest[-1][0] == "end"


async def test_model_tokens_stream_as_they_come(service: Service) -> None:
    key = await service.key()
    run_id = await start(service, key, "svc-write")
    stream = asyncio.create_task(service.http.get(f"/api/v1/runs/{run_id}/stream", headers=key))
    await asyncio.sleep(0.1)
    await service.drive(run_id)
    events = parse((await asyncio.wait_for(stream, 10)).text)
    tokens = [data for kind, data in events if kind == "token"]
    assert "".join(t["text"] for t in tokens).split() == ["three", "words", "streamed"]
    assert len(tokens) >= 3 and {t["op_id"] for t in tokens} == {"1"}
    # Streamed before the step that asked the model was committed.
    kinds = [(kind, data.get("type")) for kind, data in events]
    assert kinds.index(("token", None)) < kinds.index(("history", "StepSucceeded"))
    assert events[-1][1]["status"] == "SUCCEEDED"
