"""API keys, scopes, tenants, and the audit trail."""

from __future__ import annotations

from cadenza.security.api_keys import authenticate
from tests.service.conftest import Service
from tests.service.test_runs_api import ORDER, problem, start


async def test_no_key_or_a_bad_key_is_401(service: Service) -> None:
    response = await service.http.get("/api/v1/runs")
    body = problem(response, 401, 2)
    assert response.headers["www-authenticate"] == "Bearer"
    assert "cadenza keys create" in str(body["detail"])
    for bad in ("nonsense", "cdzk_000000000000_" + "x" * 43):
        problem(
            await service.http.get("/api/v1/runs", headers={"Authorization": f"Bearer {bad}"}),
            401,
            2,
        )


async def test_revoked_key_is_401(service: Service) -> None:
    key = await service.key()
    assert (await service.http.get("/api/v1/runs", headers=key)).status_code == 200
    raw = key["Authorization"].removeprefix("Bearer ")
    principal = await authenticate(service.client, raw)
    assert principal is not None
    store = service.client.engine.store
    assert await store.revoke_api_key(principal.key_id, now=service.client.engine.clock.now())
    problem(await service.http.get("/api/v1/runs", headers=key), 401, 2)
    assert await authenticate(service.client, raw) is None


async def test_only_the_hash_of_a_key_is_stored(service: Service) -> None:
    key = await service.key(("read",), name="ci")
    raw = key["Authorization"].removeprefix("Bearer ")
    [record] = await service.client.engine.store.list_api_keys()
    assert record.name == "ci" and record.scopes == ("read",)
    assert raw.split("_")[-1] not in repr(record)
    assert record.secret_hash != raw


async def test_a_missing_scope_is_403(service: Service) -> None:
    reader = await service.key(("read",))
    starter = await service.key(("start",))
    run_id = await start(service, starter)
    body = problem(
        await service.http.post(
            "/api/v1/runs", json={"workflow": "svc-price", "input": ORDER}, headers=reader
        ),
        403,
        2,
    )
    assert "'start'" in str(body["detail"])
    problem(await service.http.get("/api/v1/runs", headers=starter), 403, 2)
    problem(await service.http.post(f"/api/v1/runs/{run_id}/cancel", headers=reader), 403, 2)
    problem(
        await service.http.put(
            "/api/v1/queues/bulk", json={"concurrency": 1}, headers=await service.key(("operate",))
        ),
        403,
        2,
    )
    approver = await service.key(("approve",))
    problem(
        await service.http.post("/api/v1/events", json={"detail_type": "x"}, headers=approver),
        403,
        2,
    )


async def test_another_tenants_objects_are_404_and_never_listed(service: Service) -> None:
    theirs = await service.key(tenant="globex")
    mine = await service.key(tenant="acme")
    run_id = await start(service, theirs, "svc-approve")
    await service.drive(run_id)
    [wait] = (await service.http.get(f"/api/v1/runs/{run_id}/callbacks", headers=theirs)).json()
    rule = {"pattern": {"detail-type": ["go"]}, "target": "start_workflow"}
    rule["params"] = {"workflow": "svc-price"}
    assert (
        await service.http.put("/api/v1/rules/r1", json=rule, headers=theirs)
    ).status_code == 201
    event = {"detail_type": "hello", "detail": {"secret": 1}}
    assert (
        await service.http.post("/api/v1/events", json=event, headers=theirs)
    ).status_code == 201

    for path in ("", "/result", "/history", "/state", "/callbacks", "/stream"):
        problem(await service.http.get(f"/api/v1/runs/{run_id}{path}", headers=mine), 404, 3)
    for path in ("/cancel", "/retry"):
        problem(await service.http.post(f"/api/v1/runs/{run_id}{path}", headers=mine), 404, 3)
    problem(
        await service.http.post(f"/api/v1/runs/{run_id}/fork", json={"from_op": "1"}, headers=mine),
        404,
        3,
    )
    for verb, body in (
        ("succeed", {"payload": {"approved": True}}),
        ("fail", {}),
        ("heartbeat", None),
    ):
        response = await service.http.post(
            f"/api/v1/callbacks/{wait['token']}/{verb}", json=body, headers=mine
        )
        problem(response, 404, 3)
    problem(await service.http.get("/api/v1/rules/r1", headers=mine), 404, 3)
    problem(await service.http.delete("/api/v1/rules/r1", headers=mine), 404, 3)
    # The same message as for a run that does not exist at all.
    missing = await service.http.get("/api/v1/runs/r-nothing", headers=mine)
    hidden = await service.http.get(f"/api/v1/runs/{run_id}", headers=mine)
    assert hidden.json()["detail"] == missing.json()["detail"].replace("r-nothing", run_id)

    assert (await service.http.get("/api/v1/runs", headers=mine)).json()["runs"] == []
    listed = await service.http.get("/api/v1/runs", params={"tenant": "globex"}, headers=mine)
    assert listed.json()["runs"] == []
    assert (await service.http.get("/api/v1/rules", headers=mine)).json() == []
    assert (await service.http.get("/api/v1/events", headers=mine)).json() == []
    # A rule of the same name is the tenant's own, and leaves the other one alone.
    mine_rule = await service.http.put("/api/v1/rules/r1", json=rule, headers=mine)
    assert mine_rule.status_code == 201
    theirs_rules = (await service.http.get("/api/v1/rules", headers=theirs)).json()
    assert [r["name"] for r in theirs_rules] == ["r1"]
    # The owner still sees everything of its own.
    assert len((await service.http.get("/api/v1/runs", headers=theirs)).json()["runs"]) == 1
    own_events = (await service.http.get("/api/v1/events", headers=theirs)).json()
    assert [e["detail-type"] for e in own_events] == ["hello"]


async def test_rules_and_events_of_a_tenant_reach_only_its_runs(service: Service) -> None:
    acme = await service.key(tenant="acme")
    globex = await service.key(tenant="globex")
    rule = {
        "pattern": {"detail-type": ["order.placed"]},
        "target": "start_workflow",
        "params": {"workflow": "svc-price"},
    }
    await service.http.put("/api/v1/rules/price", json=rule, headers=acme)
    event = {"detail_type": "order.placed", "detail": ORDER, "id": "evt-1"}
    published = await service.http.post("/api/v1/events", json=event, headers=globex)
    assert published.json()["id"] == "globex:evt-1"
    assert (await service.http.get("/api/v1/runs", headers=acme)).json()["runs"] == []
    await service.http.post("/api/v1/events", json=event, headers=acme)
    [run] = (await service.http.get("/api/v1/runs", headers=acme)).json()["runs"]
    assert run["workflow"] == "svc-price" and run["tenant"] == "acme"
    assert (await service.http.get("/api/v1/runs", headers=globex)).json()["runs"] == []


async def test_the_audit_trail_names_the_key(service: Service) -> None:
    starter = await service.key(("start", "read"), name="shop-frontend")
    approver = await service.key(("approve", "read"), name="manager-bot")
    operator = await service.key(("operate", "read"), name="oncall")
    run_id = await start(service, starter, "svc-approve")
    await service.drive(run_id)
    [wait] = (await service.http.get(f"/api/v1/runs/{run_id}/callbacks", headers=approver)).json()
    await service.http.post(
        f"/api/v1/callbacks/{wait['token']}/succeed",
        json={"payload": {"approved": False}},
        headers=approver,
    )
    await service.drive(run_id)
    forked = await service.http.post(
        f"/api/v1/runs/{run_id}/fork", json={"from_op": "2"}, headers=operator
    )
    fork_id = forked.json()["run_id"]
    await service.http.post(f"/api/v1/runs/{fork_id}/cancel", headers=operator)
    await service.http.post(f"/api/v1/runs/{fork_id}/retry", headers=operator)

    def actions(history: list[dict[str, object]]) -> list[tuple[object, object]]:
        return [
            (e["details"]["action"], e["details"]["by"]["name"])  # type: ignore[index]
            for e in history
            if e["type"] == "ActionRequested"
        ]

    history = (await service.http.get(f"/api/v1/runs/{run_id}/history", headers=operator)).json()
    assert actions(history) == [
        ("start", "shop-frontend"),
        ("callback.succeed", "manager-bot"),
        ("forked", "oncall"),
    ]
    by = next(e for e in history if e["type"] == "ActionRequested")["details"]["by"]
    assert set(by) == {"key_id", "name", "tenant"} and by["tenant"] == "default"
    fork_history = (
        await service.http.get(f"/api/v1/runs/{fork_id}/history", headers=operator)
    ).json()
    assert actions(fork_history) == [("fork", "oncall"), ("cancel", "oncall"), ("retry", "oncall")]


async def test_a_tenants_chosen_run_ids_carry_its_name(service: Service) -> None:
    acme = await service.key(tenant="acme")
    body = {"workflow": "svc-price", "input": ORDER, "run_id": "order-1"}
    refused = await service.http.post("/api/v1/runs", json=body, headers=acme)
    assert "acme.order-1" in str(problem(refused, 422, 2)["detail"])
    own = await service.http.post(
        "/api/v1/runs", json={**body, "run_id": "acme.order-1"}, headers=acme
    )
    assert own.status_code == 201 and own.json()["run_id"] == "acme.order-1"
    default = await service.key()
    chosen = await service.http.post("/api/v1/runs", json=body, headers=default)
    assert chosen.status_code == 201 and chosen.json()["run_id"] == "order-1"


async def test_tokens_are_shown_to_keys_that_may_approve(service: Service) -> None:
    starter = await service.key(("start", "read"))
    approver = await service.key(("read", "approve"))
    run_id = await start(service, starter, "svc-approve")
    await service.drive(run_id)
    for path in (f"/api/v1/runs/{run_id}/callbacks", f"/api/v1/runs/{run_id}"):
        as_reader = (await service.http.get(path, headers=starter)).json()
        as_approver = (await service.http.get(path, headers=approver)).json()
        waits = as_reader if isinstance(as_reader, list) else as_reader["waiting_for"]
        shown = as_approver if isinstance(as_approver, list) else as_approver["waiting_for"]
        assert [w["token"] for w in waits] == [None]
        assert shown[0]["token"].startswith("cdz1.")
