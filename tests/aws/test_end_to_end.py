"""research-report on the serverless shape: DynamoDB + S3, the work queue and its
worker, the HTTP API that starts the run and takes the editor's decision, the sweeper,
and events on the bus; the model is scripted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import cadenza.examples.research_report as scenario
from cadenza.agents import register_model
from cadenza.aws import api_app, handle_work, relay_to_eventbridge
from cadenza.patterns import HashingEmbedder
from cadenza.ports.run_store import RunStatus
from cadenza.security.api_keys import create_key
from tests.aws.conftest import Context, EventSourceMapping, pump
from tests.scenarios.test_research_report import editorial_model

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path))
    monkeypatch.setattr(scenario, "_embedder", lambda: HashingEmbedder(256))
    return tmp_path


async def test_research_report_through_the_handlers(aws: Any, runtime: Any, home: Path) -> None:
    engine = runtime.engine
    model = editorial_model()
    register_model("scripted:editorial", model)
    _, key = await create_key(
        engine, name="e2e", tenant="default", scopes=("admin",), now=engine.clock.now()
    )
    headers = {"Authorization": f"Bearer {key}"}
    app = api_app(runtime)

    async def work(event: dict[str, Any]) -> dict[str, Any]:
        return (await handle_work(runtime, event, Context(120_000))).response()

    worker = EventSourceMapping(aws.sqs, aws.work_url, work)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        started = await http.post(
            "/api/v1/runs",
            json={
                "workflow": "research-report",
                "input": {"model": "scripted:editorial", "sources": 2},
            },
            headers=headers,
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]

        async def waiting_for_editor() -> bool:
            run = await engine.store.get_run(run_id)
            return run.status == RunStatus.SUSPENDED and run.state.get("status") == (
                "WAITING_FOR_INPUT"
            )

        await pump([worker], waiting_for_editor, timeout=120)  # the API enqueued the run
        [waiting] = await engine.pending_callbacks(run_id)
        notified = [json.loads(x) for x in (home / "notifications.log").read_text().splitlines()]
        assert notified[-1]["token"] == waiting.token
        asked = len(model.requests)

        decided = await http.post(
            f"/api/v1/callbacks/{waiting.token}/succeed",
            json={"payload": {"decision": "approve"}},
            headers=headers,
        )
        assert decided.status_code == 200, decided.text

        async def ended() -> bool:
            return (await engine.store.get_run(run_id)).status.terminal

        await pump([worker], ended, timeout=60)  # the API enqueued the woken run
    result = await engine.result(run_id)
    assert result["published"] is True and len(result["sources"]) == 2
    assert len(model.requests) == asked  # approval replayed everything, re-asked nothing
    stored = await engine.artifacts.get(result["artifact"])  # in S3
    assert stored.decode().startswith("# How is the Harbour City bike share doing")
    # The run's lifecycle events reached the bus; nothing is left in the outbox.
    await relay_to_eventbridge(engine, runtime.publisher)
    assert await engine.store.fetch_outbox(limit=10) == []
