"""``/api/v1/runs``: start, list, read, and act on runs; errors as problem details."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from cadenza.errors import StoreUnavailable
from tests.service.conftest import Service

ORDER = {"order_id": "A-1", "amount_eur": 10}


def problem(response: object, status: int, exit_code: int) -> dict[str, object]:
    """The response is a problem document with ``status`` and the CLI's ``exit_code``."""
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["status"] == status
    assert body["exit_code"] == exit_code
    assert isinstance(body["detail"], str) and body["detail"]
    assert body["title"]
    return body


async def start(service: Service, headers: dict[str, str], workflow: str = "svc-price") -> str:
    response = await service.http.post(
        "/api/v1/runs", json={"workflow": workflow, "input": ORDER}, headers=headers
    )
    assert response.status_code == 201, response.text
    return str(response.json()["run_id"])


async def test_start_run_and_read_its_result(service: Service) -> None:
    key = await service.key()
    response = await service.http.post(
        "/api/v1/runs", json={"workflow": "svc-price", "input": ORDER}, headers=key
    )
    assert response.status_code == 201
    run = response.json()
    assert run["status"] == "PENDING" and run["tenant"] == "default"
    assert response.headers["location"] == f"/api/v1/runs/{run['run_id']}"
    await service.drive(run["run_id"])
    result = await service.http.get(f"/api/v1/runs/{run['run_id']}/result", headers=key)
    assert result.json() == {"run_id": run["run_id"], "status": "SUCCEEDED", "result": 12.0}
    detail = (await service.http.get(f"/api/v1/runs/{run['run_id']}", headers=key)).json()
    assert detail["input"] == {"order_id": "A-1", "amount_eur": 10.0}
    assert detail["steps"] == {"SUCCEEDED": 1}


async def test_result_waits_for_the_run_to_end(service: Service) -> None:
    key = await service.key()
    run_id = await start(service, key)
    waiting = asyncio.create_task(
        service.http.get(f"/api/v1/runs/{run_id}/result", params={"wait": 10}, headers=key)
    )
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await service.drive(run_id)
    assert (await waiting).json()["result"] == 12.0


async def test_input_that_does_not_fit_is_422_with_each_error(service: Service) -> None:
    key = await service.key()
    response = await service.http.post(
        "/api/v1/runs",
        json={"workflow": "svc-price", "input": {"amount_eur": -3}},
        headers=key,
    )
    body = problem(response, 422, 2)
    locations = {tuple(e["loc"]) for e in body["errors"]}  # type: ignore[union-attr]
    assert locations == {("input", "order_id"), ("input", "amount_eur")}
    assert "svc-price" in str(body["detail"])
    listed = (await service.http.get("/api/v1/runs", headers=key)).json()
    assert listed["runs"] == []  # nothing was stored


async def test_unknown_workflow_is_404(service: Service) -> None:
    key = await service.key()
    response = await service.http.post("/api/v1/runs", json={"workflow": "nope"}, headers=key)
    body = problem(response, 404, 3)
    assert body["error"] == "WorkflowNotFound"
    assert "svc-price" in str(body["detail"])  # says what is registered


async def test_malformed_body_is_a_422_problem(service: Service) -> None:
    key = await service.key()
    response = await service.http.post(
        "/api/v1/runs", content=b"{not json", headers={**key, "content-type": "application/json"}
    )
    problem(response, 422, 2)
    extra = await service.http.post(
        "/api/v1/runs", json={"workflow": "svc-price", "surprise": 1}, headers=key
    )
    problem(extra, 422, 2)


async def test_idempotency_key_starts_one_run(service: Service) -> None:
    key = await service.key()
    headers = {**key, "Idempotency-Key": "order-A-1"}
    body = {"workflow": "svc-price", "input": ORDER}
    first = await service.http.post("/api/v1/runs", json=body, headers=headers)
    again = await service.http.post("/api/v1/runs", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["run_id"] == again.json()["run_id"]
    other = await service.http.post(
        "/api/v1/runs",
        json={"workflow": "svc-price", "input": {**ORDER, "amount_eur": 99}},
        headers=headers,
    )
    body409 = problem(other, 409, 2)
    assert body409["run_id"] == first.json()["run_id"]
    # Another tenant's identical key is its own.
    acme = {**(await service.key(tenant="acme")), "Idempotency-Key": "order-A-1"}
    theirs = await service.http.post("/api/v1/runs", json=body, headers=acme)
    assert theirs.status_code == 201 and theirs.json()["run_id"] != first.json()["run_id"]
    listed = (await service.http.get("/api/v1/runs", headers=key)).json()["runs"]
    assert len(listed) == 1


async def test_list_filters_and_cursor_pagination(service: Service) -> None:
    key = await service.key()
    ids = [await start(service, key) for _ in range(5)]
    broken = await start(service, key, "svc-broken")
    await service.drive(broken)
    page = (await service.http.get("/api/v1/runs", params={"limit": 2}, headers=key)).json()
    seen = [r["run_id"] for r in page["runs"]]
    while page["next_cursor"]:
        page = (
            await service.http.get(
                "/api/v1/runs", params={"limit": 2, "cursor": page["next_cursor"]}, headers=key
            )
        ).json()
        seen += [r["run_id"] for r in page["runs"]]
    assert sorted(seen) == sorted([*ids, broken]) and len(seen) == 6
    failed = (await service.http.get("/api/v1/runs?status=FAILED", headers=key)).json()
    assert [r["run_id"] for r in failed["runs"]] == [broken]
    assert failed["runs"][0]["error"]["type"] == "ValueError"
    by_name = (await service.http.get("/api/v1/runs?workflow=svc-price", headers=key)).json()
    assert len(by_name["runs"]) == 5
    text = (await service.http.get(f"/api/v1/runs?q={ids[2][-6:]}", headers=key)).json()
    assert [r["run_id"] for r in text["runs"]] == [ids[2]]
    future = (
        await service.http.get(
            "/api/v1/runs", params={"created_after": "2999-01-01T00:00:00Z"}, headers=key
        )
    ).json()
    assert future["runs"] == []
    past = (
        await service.http.get(
            "/api/v1/runs", params={"created_before": "2000-01-01T00:00:00Z"}, headers=key
        )
    ).json()
    assert past["runs"] == []
    bad = await service.http.get("/api/v1/runs?cursor=garbage", headers=key)
    problem(bad, 422, 2)


async def test_failed_run_result_is_409_with_exit_code_1(service: Service) -> None:
    key = await service.key()
    run_id = await start(service, key, "svc-broken")
    pending = await service.http.get(f"/api/v1/runs/{run_id}/result", headers=key)
    assert problem(pending, 409, 5)["error"] == "RunStateError"
    await service.drive(run_id)
    failed = await service.http.get(f"/api/v1/runs/{run_id}/result", headers=key)
    body = problem(failed, 409, 1)
    assert body["error"] == "RunFailed" and "cannot be priced" in str(body["detail"])


async def test_missing_run_is_404_for_every_run_endpoint(service: Service) -> None:
    key = await service.key()
    for path in ("", "/result", "/history", "/state", "/callbacks", "/stream"):
        problem(await service.http.get(f"/api/v1/runs/r-missing{path}", headers=key), 404, 3)
    for path in ("/cancel", "/retry"):
        problem(await service.http.post(f"/api/v1/runs/r-missing{path}", headers=key), 404, 3)
    fork = await service.http.post(
        "/api/v1/runs/r-missing/fork", json={"from_op": "1"}, headers=key
    )
    problem(fork, 404, 3)


async def test_cancel_retry_and_fork(service: Service) -> None:
    key = await service.key()
    run_id = await start(service, key, "svc-approve")
    await service.drive(run_id)
    waits = (await service.http.get(f"/api/v1/runs/{run_id}/callbacks", headers=key)).json()
    assert [w["name"] for w in waits] == ["manager"] and waits[0]["token"]
    cancelled = await service.http.post(f"/api/v1/runs/{run_id}/cancel", headers=key)
    assert cancelled.json()["status"] == "CANCELLED"
    again = await service.http.post(f"/api/v1/runs/{run_id}/cancel", headers=key)
    problem(again, 409, 5)
    retried = await service.http.post(f"/api/v1/runs/{run_id}/retry", headers=key)
    assert retried.status_code == 200 and retried.json()["status"] == "PENDING"
    await service.drive(run_id)
    forked = await service.http.post(
        f"/api/v1/runs/{run_id}/fork",
        json={"from_op": "2", "input": {"order_id": "B-2", "amount_eur": 5}},
        headers=key,
    )
    assert forked.status_code == 201, forked.text
    fork_id = forked.json()["run_id"]
    assert forked.json()["forked_from"] == {"run_id": run_id, "op_id": "2"}
    await service.drive(fork_id)
    token = (await service.http.get(f"/api/v1/runs/{fork_id}/callbacks", headers=key)).json()
    done = await service.http.post(
        f"/api/v1/callbacks/{token[0]['token']}/succeed",
        json={"payload": {"approved": True}},
        headers=key,
    )
    assert done.status_code == 200
    await service.drive(fork_id)
    result = await service.http.get(f"/api/v1/runs/{fork_id}/result", headers=key)
    # The new input, but the total the journal kept from step 1 (12.0, not 6.0).
    assert result.json()["result"] == "B-2: 12.0 approved"
    no_op = await service.http.post(
        f"/api/v1/runs/{run_id}/fork", json={"from_op": "99"}, headers=key
    )
    problem(no_op, 422, 2)


async def test_state_and_history(service: Service) -> None:
    key = await service.key()
    run_id = await start(service, key)
    await service.drive(run_id)
    state = (await service.http.get(f"/api/v1/runs/{run_id}/state", headers=key)).json()
    assert state["agentId"] == run_id
    history = (await service.http.get(f"/api/v1/runs/{run_id}/history", headers=key)).json()
    types = [e["type"] for e in history]
    assert types[0] == "ExecutionStarted" and "StepSucceeded" in types
    assert types[-1] == "ExecutionSucceeded"
    later = await service.http.get(
        f"/api/v1/runs/{run_id}/history", params={"after_seq": history[-2]["seq"]}, headers=key
    )
    assert [e["type"] for e in later.json()] == ["ExecutionSucceeded"]


async def test_a_store_that_takes_no_writes_is_503_with_retry_after(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await service.key()

    async def unavailable(*args: object, **kwargs: object) -> None:
        raise StoreUnavailable("the disk of the store is full; nothing was lost")

    monkeypatch.setattr(service.client.engine.store, "create_run", unavailable)
    response = await service.http.post(
        "/api/v1/runs", json={"workflow": "svc-price", "input": ORDER}, headers=key
    )
    assert problem(response, 503, 6)["error"] == "StoreUnavailable"
    assert response.headers["retry-after"] == "5"


async def test_an_unexpected_error_is_a_500_problem_without_internals(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = await service.key()

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(service.client.engine.store, "list_runs", broken)
    transport = httpx.ASGITransport(app=service.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
        response = await http.get("/api/v1/runs", headers=key)
    body = problem(response, 500, 1)
    assert "secret internals" not in response.text and "RuntimeError" in str(body["detail"])
