"""The web console over HTTP: sign-in with an API key, scopes, CSRF, tenants, and what each
page shows (runs, one run's timeline, approvals, events and rules, costs)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from html import unescape
from typing import Any

import httpx
import pytest

from cadenza import Context, RetryPolicy, RunStatus, workflow
from cadenza.agents import call_model
from cadenza.client import Client
from cadenza.events.relay import relay_outbox
from cadenza.ports.run_store import Rule
from cadenza.service import ServiceSettings, create_app
from cadenza.service._auth import create_key
from cadenza.testing import TestEnvironment
from cadenza.testing.scripted_model import ScriptedModel

BASE = "http://testserver"
MODEL = ScriptedModel(name="scripted:console", default="The answer is forty-two.")
FLAKY = {"fail": True}


def _shaky(n: int) -> int:
    if FLAKY["fail"]:
        raise ValueError(f"the ledger is locked (item {n})")
    return n * 2


@workflow(name="t-console-flaky")
async def flaky(ctx: Context, n: int) -> int:
    await ctx.step(lambda: "prepared", name="prepare")
    return await ctx.step(
        _shaky,
        n,
        name="post-ledger",
        retry=RetryPolicy(max_attempts=2, initial_interval=timedelta(milliseconds=1)),
    )


@workflow(name="t-console-model")
async def ask(ctx: Context, question: str) -> str:
    reply = await call_model(ctx, MODEL, question)
    await ctx.emit("answer.ready", {"question": question})
    return reply.text


@workflow(name="t-console-wait")
async def sign_off(ctx: Context, what: Any) -> Any:
    callback = await ctx.create_callback(name="sign-off", timeout=timedelta(hours=1))
    return await callback.result()


@workflow(name="t-console-state")
async def planner(ctx: Context, n: int) -> int:
    ctx.state.plan = ["draft"]
    await ctx.step(lambda: 1, name="first")
    ctx.state.plan = ["draft", "review"]
    await ctx.step(lambda: 2, name="second")
    ctx.state.plan = ["draft", "review", "publish"]
    return n


@workflow(name="t-console-big")
async def big(ctx: Context, n: int) -> int:
    total = 0
    for i in range(n):
        total += await ctx.step(lambda i=i: i, name=f"item-{i}")
    return total


@dataclass
class Console:
    env: TestEnvironment
    client: Client
    http: httpx.AsyncClient
    keys: dict[str, str]

    async def login(self, who: str) -> httpx.Response:
        self.http.cookies.clear()
        return await self.http.post("/login", data={"api_key": self.keys[who], "next": "/"})

    async def csrf(self, path: str = "/") -> str:
        page = await self.http.get(path)
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match, page.text[:500]
        return match.group(1)


@pytest.fixture
async def console(env: TestEnvironment) -> AsyncIterator[Console]:
    FLAKY["fail"] = True
    client = Client(env.engine)
    app = create_app(client, settings=ServiceSettings(base_url=BASE, rate_limit=None))
    now = env.engine.clock.now()
    keys = {}
    for name, scopes, tenant in (
        ("ops", ["read", "operate", "approve"], "default"),
        ("viewer", ["read"], "default"),
        ("other", ["admin"], "acme"),
    ):
        _, keys[name] = await create_key(client, name=name, tenant=tenant, scopes=scopes, now=now)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        yield Console(env, client, http, keys)
    await client.close()


async def test_pages_need_a_key_and_the_cookie_is_signed_and_strict(console: Console) -> None:
    page = await console.http.get("/runs/x?fragment=1")
    assert (
        page.status_code == 303 and page.headers["location"] == "/login?next=/runs/x%3Ffragment%3D1"
    )
    refused = await console.http.post("/login", data={"api_key": "cdzk_nonsense", "next": "/"})
    assert refused.status_code == 401 and "unknown, malformed or revoked" in refused.text
    signed = await console.login("ops")
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert console.keys["ops"] not in signed.headers["set-cookie"]  # signed, not plain
    assert (await console.http.get("/")).status_code == 200
    # a cookie altered by one character signs nobody in
    value = console.http.cookies["cadenza_console"]
    console.http.cookies.clear()
    console.http.cookies.set("cadenza_console", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))
    assert (await console.http.get("/")).status_code == 303
    # only local paths after sign-in: no open redirect
    bounced = await console.http.post(
        "/login", data={"api_key": console.keys["ops"], "next": "//evil.example/"}
    )
    assert bounced.headers["location"] == "/"
    slashed = await console.http.post(
        "/login", data={"api_key": console.keys["ops"], "next": "/\\evil.example/"}
    )
    assert slashed.headers["location"] == "/"
    elsewhere = await console.http.post(
        "/login",
        data={"api_key": console.keys["ops"], "next": "/"},
        headers={"origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403


async def test_runs_table_filters_and_searches(console: Console) -> None:
    env = console.env
    failed = await env.run(flaky, 7)
    waiting = await env.run(sign_off, "budget")
    answered = await env.run(ask, "What is six times seven?")
    assert (failed.status, waiting.status, answered.status) == (
        RunStatus.FAILED,
        RunStatus.SUSPENDED,
        RunStatus.SUCCEEDED,
    )
    await console.login("viewer")
    page = (await console.http.get("/")).text
    for run in (failed, waiting, answered):
        assert run.run_id in page
    assert "callback sign-off" in page  # what the suspended run waits for
    only_failed = (await console.http.get("/?status=failed")).text
    assert failed.run_id in only_failed and waiting.run_id not in only_failed
    by_name = (await console.http.get("/?workflow=t-console-model&fragment=1")).text
    assert answered.run_id in by_name and failed.run_id not in by_name
    assert 'hx-trigger="every 2s"' in by_name and "<html" not in by_name  # the live fragment
    searched = (await console.http.get("/?q=six+times")).text
    assert answered.run_id in searched and waiting.run_id not in searched


async def test_run_page_shows_timeline_errors_model_calls_and_state(console: Console) -> None:
    env = console.env
    failed = await env.run(flaky, 7)
    answered = await env.run(ask, "What is six times seven?")
    await console.login("viewer")
    page = (await console.http.get(f"/runs/{failed.run_id}")).text
    assert "post-ledger" in page and "prepare" in page and "1 retry" in page
    assert "the ledger is locked (item 7)" in page and "Traceback" in page
    assert "ValueError" in page and 'class="bar b-failed' in page
    # an operation's detail loads when its row is opened (or as a page of its own)
    journal = await console.env.engine.store.load_journal(failed.run_id)
    [posting] = [op for op in journal if op.name == "post-ledger"]
    detail = await console.http.get(
        f"/runs/{failed.run_id}/ops/{posting.op_id}", headers={"hx-request": "true"}
    )
    assert "<html" not in detail.text and "Traceback" in detail.text
    assert 'raise ValueError(f"the ledger is locked' in unescape(detail.text)
    assert "StepFailed" in detail.text  # its history events
    model_page = (await console.http.get(f"/runs/{answered.run_id}")).text
    assert "model:scripted:console" in model_page and '<span class="tag">model</span>' in model_page
    assert "agentId" in model_page  # the state document
    [model_op] = [
        op
        for op in await console.env.engine.store.load_journal(answered.run_id)
        if op.name.startswith("model:")
    ]
    model_detail = (await console.http.get(f"/runs/{answered.run_id}/ops/{model_op.op_id}")).text
    assert "<html" in model_detail and "The answer is forty-two." in model_detail
    assert "Prompt" in model_detail and "What is six times seven?" in model_detail
    assert re.search(r"<b>scripted:console</b> · \d+ in / \d+ out tokens · \$0", model_detail)
    history = await console.http.get(
        f"/runs/{answered.run_id}/history", headers={"hx-request": "true"}
    )
    assert "ExecutionSucceeded" in history.text and "<html" not in history.text
    missing = await console.http.get("/runs/no-such-run")
    assert missing.status_code == 404


async def test_retry_cancel_and_fork_need_operate_and_csrf(console: Console) -> None:
    env = console.env
    failed = await env.run(flaky, 7)
    await console.login("viewer")
    token = await console.csrf(f"/runs/{failed.run_id}")
    denied = await console.http.post(f"/runs/{failed.run_id}/retry", data={"csrf": token})
    assert denied.status_code == 403 and "lacks the 'operate' scope" in unescape(denied.text)
    await console.login("ops")
    forged = await console.http.post(f"/runs/{failed.run_id}/retry", data={"csrf": "nope"})
    assert forged.status_code == 403
    cross_site = await console.http.post(
        f"/runs/{failed.run_id}/retry",
        data={"csrf": await console.csrf(f"/runs/{failed.run_id}")},
        headers={"origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    assert (await env.engine.store.get_run(failed.run_id)).status == RunStatus.FAILED

    FLAKY["fail"] = False
    token = await console.csrf(f"/runs/{failed.run_id}")
    retried = await console.http.post(f"/runs/{failed.run_id}/retry", data={"csrf": token})
    assert retried.status_code == 303
    assert (await env.resume(failed.run_id)).status == RunStatus.SUCCEEDED
    history = await env.engine.store.history(failed.run_id)
    [audit] = [e for e in history if e.details.get("action") == "retry"]
    assert audit.details["by"]["name"] == "ops" and audit.details["by"]["via"] == "console"

    forked = await console.http.post(
        f"/runs/{failed.run_id}/fork", data={"csrf": token, "from_op": "2"}
    )
    assert forked.status_code == 303
    fork_id = forked.headers["location"].split("/runs/")[1].split("?")[0]
    assert (await env.engine.store.get_run(fork_id)).origin is not None

    waiting = await env.run(sign_off, "budget")
    cancelled = await console.http.post(f"/runs/{waiting.run_id}/cancel", data={"csrf": token})
    assert cancelled.status_code == 303
    assert (await env.engine.store.get_run(waiting.run_id)).status == RunStatus.CANCELLED


async def test_approvals_inbox_and_completing_a_callback(console: Console) -> None:
    env = console.env
    first = await env.run(sign_off, "budget")
    second = await env.run(sign_off, "hiring")
    await console.login("ops")
    inbox = (await console.http.get("/approvals")).text
    assert first.run_id in inbox and second.run_id in inbox and "2 waiting" in inbox
    token = await console.csrf("/approvals")
    op_id = (await env.engine.pending_callbacks(first.run_id))[0].op_id
    done = await console.http.post(
        f"/runs/{first.run_id}/callbacks/{op_id}",
        data={"csrf": token, "decision": "approve", "comment": "ok", "back": "approvals"},
    )
    assert done.status_code == 303 and done.headers["location"].startswith("/approvals")
    result = await env.result(await env.resume(first.run_id))
    assert result == {"decision": "approve", "comment": "ok", "by": "ops", "via": "console"}
    inbox = (await console.http.get("/approvals")).text
    assert first.run_id not in inbox and "1 waiting" in inbox


async def test_tenants_see_only_their_runs(console: Console) -> None:
    run = await console.env.run(sign_off, "budget")
    await console.login("other")
    assert run.run_id not in (await console.http.get("/")).text
    assert (await console.http.get(f"/runs/{run.run_id}")).status_code == 404
    token = await console.csrf("/")
    cancel = await console.http.post(f"/runs/{run.run_id}/cancel", data={"csrf": token})
    assert cancel.status_code == 404
    assert run.run_id not in (await console.http.get("/approvals")).text


async def test_events_rules_and_costs(console: Console) -> None:
    env = console.env
    await env.engine.store.put_rule(
        Rule(
            name="on-answer",
            pattern={"detail-type": ["answer.ready"]},
            target="start_workflow",
            params={"workflow": "t-console-wait", "input": "detail"},
        )
    )
    answered = await env.run(ask, "What is six times seven?")
    await relay_outbox(env.engine)
    await console.login("viewer")
    events = (await console.http.get("/events")).text
    assert "answer.ready" in events and "on-answer" in events
    started = [r for r in await env.engine.store.list_runs(workflow="t-console-wait")]
    assert len(started) == 1 and started[0].run_id in events
    run_page = (await console.http.get(f"/runs/{answered.run_id}")).text
    assert started[0].run_id in run_page and "started by a rule (on-answer)" in run_page
    costs = (await console.http.get("/costs")).text
    assert "t-console-model" in costs and "scripted:console" in costs
    usage = answered.state["metadata"]["usage"]
    assert f"{usage['input_tokens']:,}" in costs


async def test_a_run_of_1000_operations_renders_every_operation(console: Console) -> None:
    # How fast it renders is measured by benchmarks/bench_console.py, not asserted here.
    run = await console.env.run(big, 1000)
    assert run.status == RunStatus.SUCCEEDED
    await console.login("viewer")
    page = await console.http.get(f"/runs/{run.run_id}")
    assert page.status_code == 200 and "item-999" in page.text
    assert page.text.count('<details class="op"') == 1000


async def test_the_state_document_now_and_after_an_operation(console: Console) -> None:
    run = await console.env.run(planner, 3)
    await console.login("viewer")
    page = (await console.http.get(f"/runs/{run.run_id}")).text
    assert '<option value="1">after 1 · first</option>' in page

    def plan(html: str) -> list[str]:
        match = re.search(r'"plan": \[(.*?)\]', unescape(html), flags=re.DOTALL)
        assert match, html[:400]
        return re.findall(r'"(\w+)"', match.group(1))

    hx = {"hx-request": "true"}
    after_first = await console.http.get(f"/runs/{run.run_id}/state?after=1", headers=hx)
    assert "<html" not in after_first.text and "right after operation 1" in after_first.text
    assert plan(after_first.text) == ["draft", "review"]
    after_second = await console.http.get(f"/runs/{run.run_id}/state?after=2")
    assert "<html" in after_second.text and plan(after_second.text) == [
        "draft",
        "review",
        "publish",
    ]
    now = await console.http.get(f"/runs/{run.run_id}/state", headers=hx)
    assert plan(now.text) == ["draft", "review", "publish"]
    unknown = await console.http.get(f"/runs/{run.run_id}/state?after=9", headers=hx)
    assert "has no top-level operation 9" in unknown.text
