"""Callbacks, events, rules, queues and workflows over HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta

from cadenza.history import HistoryEvent, HistoryEventType
from cadenza.ports.run_store import RunRecord, RunStatus
from tests.service.conftest import Service
from tests.service.test_runs_api import ORDER, problem, start


async def waiting_run(service: Service, key: dict[str, str]) -> tuple[str, str]:
    run_id = await start(service, key, "svc-approve")
    await service.drive(run_id)
    [wait] = (await service.http.get(f"/api/v1/runs/{run_id}/callbacks", headers=key)).json()
    assert wait["payload_schema"]["properties"]["approved"]["type"] == "boolean"
    return run_id, str(wait["token"])


async def test_succeed_a_callback_then_it_is_used(service: Service) -> None:
    key = await service.key()
    run_id, token = await waiting_run(service, key)
    wrong = await service.http.post(
        f"/api/v1/callbacks/{token}/succeed", json={"payload": {"approved": "maybe"}}, headers=key
    )
    problem(wrong, 422, 2)
    done = await service.http.post(
        f"/api/v1/callbacks/{token}/succeed", json={"payload": {"approved": True}}, headers=key
    )
    assert done.json() == {"run_id": run_id, "op_id": "2", "callback": "succeeded"}
    again = await service.http.post(
        f"/api/v1/callbacks/{token}/succeed", json={"payload": {"approved": True}}, headers=key
    )
    assert problem(again, 409, 4)["error"] == "CallbackAlreadyCompleted"
    await service.drive(run_id)
    result = await service.http.get(f"/api/v1/runs/{run_id}/result", headers=key)
    assert result.json()["result"] == "A-1: 12.0 approved"


async def test_fail_and_heartbeat_a_callback(service: Service) -> None:
    key = await service.key()
    run_id, token = await waiting_run(service, key)
    beat = await service.http.post(f"/api/v1/callbacks/{token}/heartbeat", headers=key)
    assert beat.json()["callback"] == "heartbeat"
    failed = await service.http.post(
        f"/api/v1/callbacks/{token}/fail",
        json={"error": "Rejected", "message": "over budget"},
        headers=key,
    )
    assert failed.json()["callback"] == "failed"
    await service.drive(run_id)
    result = await service.http.get(f"/api/v1/runs/{run_id}/result", headers=key)
    assert "over budget" in str(problem(result, 409, 1)["detail"])


async def test_forged_token_is_refused(service: Service) -> None:
    key = await service.key()
    _, token = await waiting_run(service, key)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    response = await service.http.post(f"/api/v1/callbacks/{forged}/succeed", headers=key)
    assert problem(response, 409, 4)["error"] == "InvalidCallbackToken"
    junk = await service.http.post("/api/v1/callbacks/junk/fail", headers=key)
    problem(junk, 409, 4)


async def test_events_reach_rules_and_are_listed(service: Service) -> None:
    key = await service.key()
    rule = {
        "pattern": {"detail-type": ["order.placed"]},
        "target": "start_workflow",
        "params": {"workflow": "svc-price"},
    }
    created = await service.http.put("/api/v1/rules/price-orders", json=rule, headers=key)
    assert created.status_code == 201
    replaced = await service.http.put(
        "/api/v1/rules/price-orders", json={**rule, "enabled": True}, headers=key
    )
    assert replaced.status_code == 200
    published = await service.http.post(
        "/api/v1/events",
        json={"detail_type": "order.placed", "detail": ORDER, "source": "shop"},
        headers=key,
    )
    assert published.status_code == 201
    event = published.json()
    assert event["detail-type"] == "order.placed" and event["source"] == "shop"
    [run] = (await service.http.get("/api/v1/runs", headers=key)).json()["runs"]
    assert run["workflow"] == "svc-price"
    [listed] = (await service.http.get("/api/v1/events", headers=key)).json()
    assert listed["id"] == event["id"] and listed["delivered"] is True
    assert [r["name"] for r in (await service.http.get("/api/v1/rules", headers=key)).json()] == [
        "price-orders"
    ]
    got = await service.http.get("/api/v1/rules/price-orders", headers=key)
    assert got.json()["params"] == {"workflow": "svc-price"}
    assert (await service.http.delete("/api/v1/rules/price-orders", headers=key)).status_code == 204
    problem(await service.http.delete("/api/v1/rules/price-orders", headers=key), 404, 3)


async def test_bad_rules_and_events_are_422(service: Service) -> None:
    key = await service.key()
    bad_target = await service.http.put(
        "/api/v1/rules/x",
        json={"pattern": {"detail-type": ["x"]}, "target": "explode"},
        headers=key,
    )
    assert "explode" in str(problem(bad_target, 422, 2)["detail"])
    bad_pattern = await service.http.put(
        "/api/v1/rules/x",
        json={"pattern": {"detail-type": "not-a-list"}, "target": "start_workflow"},
        headers=key,
    )
    problem(bad_pattern, 422, 2)
    bad_event = await service.http.post("/api/v1/events", json={"detail": {}}, headers=key)
    problem(bad_event, 422, 2)
    bad_id = await service.http.post(
        "/api/v1/events", json={"detail_type": "x", "id": "-bad id"}, headers=key
    )
    problem(bad_id, 422, 2)


async def test_queues(service: Service) -> None:
    key = await service.key()
    put = await service.http.put(
        "/api/v1/queues/bulk", json={"concurrency": 2, "rate_limit": 10}, headers=key
    )
    assert put.json() == {
        "name": "bulk",
        "concurrency": 2,
        "rate_limit": 10,
        "rate_period_seconds": 1.0,
    }
    listed = (await service.http.get("/api/v1/queues", headers=key)).json()
    assert [q["name"] for q in listed] == ["bulk", "default"]
    assert {k: listed[0][k] for k in put.json()} == put.json()
    bad = await service.http.put("/api/v1/queues/bulk", json={"concurrency": -1}, headers=key)
    problem(bad, 422, 2)


async def test_queues_show_their_depth_and_the_age_of_their_oldest_runnable_run(
    service: Service,
) -> None:
    key = await service.key(("read",))
    engine = service.client.engine
    now = engine.clock.now()
    for run_id, queue, age in (("r-old", "billing", 120), ("r-new", "billing", 5)):
        created = now - timedelta(seconds=age)
        run = RunRecord(run_id, "svc-price", "1", RunStatus.PENDING, "null", created, created)
        started = HistoryEvent(0, HistoryEventType.EXECUTION_STARTED, created)
        await engine.store.create_run(run.evolve(queue=queue), started)
    await engine.store.claim_runs(
        owner="w", now=now, lease_until=now + timedelta(minutes=1), limit=1, run_id="r-new"
    )

    listed = (await service.http.get("/api/v1/queues", headers=key)).json()

    billing = next(q for q in listed if q["name"] == "billing")
    assert (billing["runnable"], billing["running"], billing["waiting"]) == (1, 1, 0)
    assert billing["concurrency"] is None
    assert datetime.fromisoformat(billing["oldest_due_at"]) == now - timedelta(seconds=120)
    assert 120 <= billing["oldest_age_seconds"] < 180
    default = next(q for q in listed if q["name"] == "default")
    assert (default["runnable"], default["oldest_age_seconds"]) == (0, 0.0)


async def test_workflows_with_their_input_schema(service: Service) -> None:
    key = await service.key(("read",))
    listed = (await service.http.get("/api/v1/workflows", headers=key)).json()
    price = next(w for w in listed if w["name"] == "svc-price")
    assert price["input_schema"]["required"] == ["order_id", "amount_eur"]
    assert price["output_schema"] == {"type": "number"}
    one = await service.http.get("/api/v1/workflows/svc-price", headers=key)
    assert one.json() == price
    problem(await service.http.get("/api/v1/workflows/nope", headers=key), 404, 3)


async def test_openapi_describes_the_api(service: Service) -> None:
    spec = (await service.http.get("/api/v1/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/stream",
        "/api/v1/callbacks/{token}/succeed",
        "/api/v1/events",
        "/api/v1/rules/{name}",
        "/api/v1/queues/{name}",
        "/api/v1/workflows",
    ):
        assert path in paths, path
    problems = paths["/api/v1/runs/{run_id}"]["get"]["responses"]["404"]["content"]
    assert "application/problem+json" in problems
