"""The console in a real browser: the system's Chromium (Debian's ``chromium``, installed by
scripts/ensure-chromium.sh) driven by Playwright, against the service on loopback with a
worker behind it.

One flow: sign in, start a run through the Client and watch its page update live until it
waits for approval, approve from the link page, watch it succeed; retry a failed run from
the console. Screenshots go to the test's tmp folder (artefacts); with
``CADENZA_UPDATE_SCREENSHOTS=1``, or when missing, the docs' ones to docs/images/.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from collections.abc import Coroutine, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cadenza import Context, RetryPolicy, workflow
from cadenza.agents import call_model
from cadenza.client import Client
from cadenza.engine.worker import Worker
from cadenza.patterns._notify import Notification
from cadenza.patterns.approval import ApprovalGate, ApprovalOutcome
from cadenza.ports.run_store import Rule
from cadenza.service import ServiceSettings, create_app
from cadenza.service._auth import create_key
from cadenza.service._links_signer import ApprovalLinks
from cadenza.service._notify_links import LinkNotifier, ReviewerLink
from cadenza.testing.scripted_model import ScriptedModel

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing"
)
uvicorn = pytest.importorskip("uvicorn")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no system Chromium: scripts/ensure-chromium.sh installs Debian's 'chromium'",
    ),
    pytest.mark.timeout(240),
]

T = TypeVar("T")
SECRET = b"browser-secret-0123456789abcdef"
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
INBOX: list[ReviewerLink] = []
FLAKY = {"fail": True}

DRAFT = """## Harbour City bike share: findings

Ridership grew **18 %** year on year, but three issues stand out:

| Issue | Stations | Reports |
|---|---:|---:|
| Empty docks at 8 am | 12 | 41 |
| Broken locks | 5 | 17 |
| App payment errors | all | 9 |

1. Rebalance the eastern docks before the morning peak.
2. Replace the lock batch from 2023.

> Sources: field reports 3, 7 and 12.
"""
WRITER = ScriptedModel(name="scripted:writer", default=DRAFT)


class InboxNotifier(LinkNotifier):
    """Delivers the links into a list, where the test (the reviewer) picks them up."""

    async def deliver(self, notification: Notification, links: list[ReviewerLink]) -> None:
        INBOX.extend(links)


def _gate(base_url: str) -> ApprovalGate:
    links = ApprovalLinks.from_secret(SECRET, base_url=base_url)
    return ApprovalGate(
        notify=InboxNotifier(reviewers=["editor@example.com"], links=links),
        timeout=timedelta(hours=24),
    )


GATES: dict[str, ApprovalGate] = {}


def _gather(topic: str) -> list[str]:
    import time

    time.sleep(1.5)  # long enough for the page to show the run working
    return [f"report {n} on {topic}" for n in (3, 7, 12)]


@workflow(name="browser-report")
async def report(ctx: Context, topic: str) -> str:
    ctx.state.goal = f"a report on {topic}"
    sources = await ctx.step(_gather, topic, name="gather-sources")
    draft = await call_model(ctx, WRITER, f"Write about {topic} from {sources}", name="write")
    await ctx.emit("report.drafted", {"topic": topic})
    outcome: ApprovalOutcome = await GATES["gate"].request(ctx, f"Report: {topic}", draft.text)
    return "published" if outcome.approved else f"not published ({outcome.decision})"


def _post(amount: int) -> int:
    if FLAKY["fail"]:
        raise ConnectionError("the ledger at 10.0.0.7 refused the connection")
    return amount


@workflow(name="browser-ledger")
async def ledger(ctx: Context, amount: int) -> int:
    await ctx.step(lambda: "checked", name="check-balance")
    return await ctx.step(
        _post,
        amount,
        name="post-ledger",
        retry=RetryPolicy(max_attempts=2, initial_interval=timedelta(milliseconds=10)),
    )


@workflow(name="browser-notify")
async def notify_team(ctx: Context, detail: dict[str, Any]) -> str:
    return await ctx.step(lambda: f"told the team about {detail['topic']}", name="tell-team")


class Service:
    """The service and a worker on an event loop of their own, in a background thread."""

    def __init__(self, directory: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.key = self.call(self._start())

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self) -> str:
        self.client = await Client.open(
            store=f"sqlite:///{self.directory / 'cadenza.db'}",
            artifacts=f"file://{self.directory / 'artifacts'}",
            secret=SECRET,
            poll_interval=timedelta(milliseconds=200),
        )
        engine = self.client.engine
        _, key = await create_key(
            self.client,
            name="operator",
            tenant="default",
            scopes=["read", "operate", "approve"],
            now=engine.clock.now(),
        )
        await engine.store.put_rule(
            Rule(
                name="tell-team-on-draft",
                pattern={"detail-type": ["report.drafted"]},
                target="start_workflow",
                params={"workflow": "browser-notify", "input": "detail"},
            )
        )
        app = create_app(self.client, settings=ServiceSettings(base_url=self.url, rate_limit=None))
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.stop = asyncio.Event()
        self.tasks = [
            asyncio.create_task(self.server.serve()),
            asyncio.create_task(Worker(engine, poll_interval=0.2).run(stop=self.stop, grace=1)),
        ]
        # uvicorn sets a flag when it listens; it has no event to wait on
        while not self.server.started:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        return key

    async def _stop(self) -> None:
        self.stop.set()
        self.server.should_exit = True
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.close()

    def close(self) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    INBOX.clear()
    FLAKY["fail"] = True
    running = Service(tmp_path)
    GATES["gate"] = _gate(running.url)
    try:
        yield running
    finally:
        running.close()


def _shoot(page: Any, tmp_path: Path, name: str, *, full_page: bool = False) -> None:
    """A screenshot as a test artefact; the docs' copy when asked for, or when missing."""
    shot = tmp_path / f"console-{name}.png"
    page.screenshot(path=str(shot), full_page=full_page)
    target = DOCS_IMAGES / shot.name
    if os.environ.get("CADENZA_UPDATE_SCREENSHOTS") == "1" or not target.exists():
        DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_watch_a_run_approve_it_by_link_and_retry_a_failed_run(
    service: Service, tmp_path: Path
) -> None:
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1360, "height": 860})
        page.set_default_timeout(20_000)

        # sign in with the API key
        page.goto(f"{service.url}/")
        expect(page.get_by_role("heading", name="Sign in to the console")).to_be_visible()
        page.get_by_label("API key").fill(service.key)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Runs")).to_be_visible()

        # a failed run, and the report run started through the Client
        failed = service.call(service.client.start_run(ledger, 120))
        handle = service.call(service.client.start_run(report, "Harbour City bike share"))
        page.goto(f"{service.url}/runs/{handle.run_id}")
        status = page.locator("#run-status")
        expect(status).to_have_text("running", timeout=10_000)  # seen while gather runs
        # the page follows the run on its own (htmx polling) until it waits for the editor
        expect(status).to_have_text("suspended", timeout=20_000)
        expect(page.get_by_text("Waiting for")).to_be_visible()
        write = page.locator("details.op", has_text="write").first
        write.locator("summary").click()
        # the row's detail is fetched when it opens: the model, tokens and the reply
        expect(write.locator(".opbody")).to_contain_text("scripted:writer")
        expect(write.locator(".opbody")).to_contain_text("Rebalance the eastern docks")
        page.wait_for_timeout(2500)  # a refresh comes due: it must leave the open row be
        expect(write.locator(".opbody")).to_contain_text("scripted:writer")
        _shoot(page, tmp_path, "run", full_page=True)
        # the state document as it stood after the first operation, rebuilt by replay
        page.get_by_label("state after operation").select_option("1")
        page.get_by_role("button", name="Show").click()
        expect(page.locator("#state-doc")).to_contain_text("right after operation 1")
        expect(page.locator("#state-doc")).to_contain_text("a report on Harbour City")

        page.goto(f"{service.url}/")
        expect(page.locator("#runs")).to_contain_text("browser-report")
        expect(page.locator("#runs")).to_contain_text("failed")
        _shoot(page, tmp_path, "runs")

        page.goto(f"{service.url}/approvals")
        expect(page.get_by_role("heading", name="Approvals")).to_contain_text("1 waiting")
        _shoot(page, tmp_path, "approvals")

        page.goto(f"{service.url}/events")
        expect(page.locator("table").first).to_contain_text("report.drafted")
        expect(page.locator("table").first).to_contain_text("tell-team-on-draft")
        _shoot(page, tmp_path, "events")

        page.goto(f"{service.url}/costs")
        expect(page.locator("body")).to_contain_text("scripted:writer")
        _shoot(page, tmp_path, "costs")

        # the editor opens the link from their message, in a browser with no session
        [link] = INBOX
        reviewer = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
        reviewer.goto(link.url)
        expect(
            reviewer.get_by_role("heading", name="Report: Harbour City bike share")
        ).to_be_visible()
        expect(reviewer.locator("article.draft table")).to_contain_text("Broken locks")
        _shoot(reviewer, tmp_path, "link")
        reviewer.get_by_label("Comment").fill("Clear and well sourced. Publish.")
        reviewer.get_by_role("button", name="Approve").click()
        expect(reviewer.get_by_role("heading", name="Thank you: answer recorded")).to_be_visible()
        reviewer.goto(link.url)  # the link has been used
        expect(reviewer.get_by_role("heading", name="This link has been used")).to_be_visible()

        page.goto(f"{service.url}/runs/{handle.run_id}")
        expect(page.locator("#run-status")).to_have_text("succeeded", timeout=20_000)
        result = service.call(handle.result(timeout=timedelta(seconds=10)))
        assert result == "published"

        # retry the failed run from the console, once the ledger is back
        page.goto(f"{service.url}/runs/{failed.run_id}")
        expect(page.locator("#run-status")).to_have_text("failed", timeout=20_000)
        expect(page.locator(".errorcard")).to_contain_text("refused the connection")
        FLAKY["fail"] = False
        page.get_by_role("button", name="Retry").click()
        expect(page.get_by_role("status")).to_contain_text("retried")
        expect(page.locator("#run-status")).to_have_text("succeeded", timeout=20_000)
        assert service.call(failed.result(timeout=timedelta(seconds=10))) == 120
        browser.close()
