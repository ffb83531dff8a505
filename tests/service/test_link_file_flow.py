"""The demo's path: a run's approval request lands in notifications.log with the reviewer's
link, signed by the deployment that ran the sending step (not by whatever secret this
machine's CADENZA_HOME holds), and ``cadenza serve``'s link page answers it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import httpx

from cadenza import Context, RunStatus, workflow
from cadenza.client import Client
from cadenza.patterns import ApprovalGate, LinkFileNotifier
from cadenza.patterns.approval import ApprovalOutcome
from cadenza.service import ServiceSettings, create_app
from cadenza.testing import TestEnvironment


@workflow(name="t-link-file")
async def publish(ctx: Context, request: dict[str, str]) -> ApprovalOutcome:
    notifier = LinkFileNotifier(request["log"], reviewers=["Editor@Example.com"])
    gate = ApprovalGate(notify=notifier, timeout=timedelta(hours=1), name="editor")
    return await gate.request(ctx, "Weekly digest", request["draft"])


async def test_the_link_in_the_notification_file_answers_the_run(
    env: TestEnvironment, tmp_path: Path, monkeypatch
) -> None:
    log = tmp_path / "notifications.log"
    monkeypatch.setenv("CADENZA_SERVICE_BASE_URL", "http://testserver")
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path / "another-home"))  # another secret there
    run = await env.run(publish, {"draft": "# Digest\n\nAll **green**.", "log": str(log)})
    assert run.status == RunStatus.SUSPENDED

    [line] = [json.loads(text) for text in log.read_text().splitlines()]
    [link] = line["links"]
    assert link["reviewer"] == "editor@example.com"
    assert link["url"].startswith("http://testserver/approve/cdzl1.")
    assert link["url"] in line["text"]

    app = create_app(Client(env.engine), settings=ServiceSettings(base_url="http://testserver"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        page = await http.get(link["url"])
        assert page.status_code == 200 and "<strong>green</strong>" in page.text
        answered = await http.post(link["url"], data={"decision": "approve", "comment": ""})
        assert answered.status_code == 200
        again = await http.post(link["url"], data={"decision": "reject", "comment": ""})
        assert again.status_code == 410  # a link answers once

    run = await env.resume(run)
    assert run.status == RunStatus.SUCCEEDED
    outcome = await env.result(run, ApprovalOutcome)
    assert outcome.approved
