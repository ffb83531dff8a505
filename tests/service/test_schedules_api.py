"""``/api/v1/schedules``: the schedules of the default tenant over HTTP."""

from __future__ import annotations

from tests.service.conftest import Service
from tests.service.test_runs_api import ORDER, problem


async def test_schedule_lifecycle(service: Service) -> None:
    key = await service.key()
    body = {"workflow": "svc-price", "cron": "0 9 * * MON-FRI", "input": ORDER}
    created = await service.http.put("/api/v1/schedules/daily", json=body, headers=key)
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert schedule["expression"] == "cron(0 9 * * MON-FRI)" and schedule["next_fire_at"]
    replaced = await service.http.put(
        "/api/v1/schedules/daily", json={**body, "cron": None, "every_minutes": 15}, headers=key
    )
    assert replaced.status_code == 200 and replaced.json()["expression"] == "rate(15 minutes)"
    paused = await service.http.post("/api/v1/schedules/daily/pause", headers=key)
    assert paused.json()["paused"] is True
    resumed = await service.http.post("/api/v1/schedules/daily/resume", headers=key)
    assert resumed.json()["paused"] is False
    listed = (await service.http.get("/api/v1/schedules", headers=key)).json()
    assert [s["name"] for s in listed] == ["daily"]
    assert (await service.http.get("/api/v1/schedules/daily", headers=key)).status_code == 200
    deleted = await service.http.delete("/api/v1/schedules/daily", headers=key)
    assert deleted.status_code == 204
    problem(await service.http.get("/api/v1/schedules/daily", headers=key), 404, 3)


async def test_bad_schedules_are_422(service: Service) -> None:
    key = await service.key()
    both = {"workflow": "svc-price", "cron": "0 9 * * *", "every_minutes": 5, "input": ORDER}
    problem(await service.http.put("/api/v1/schedules/x", json=both, headers=key), 422, 2)
    bad_input = {"workflow": "svc-price", "cron": "0 9 * * *", "input": {"amount_eur": 1}}
    response = await service.http.put("/api/v1/schedules/x", json=bad_input, headers=key)
    assert "order_id" in str(problem(response, 422, 2)["errors"])
    bad_cron = {"workflow": "svc-price", "cron": "every tuesday", "input": ORDER}
    problem(await service.http.put("/api/v1/schedules/x", json=bad_cron, headers=key), 422, 2)
    assert (await service.http.get("/api/v1/schedules", headers=key)).json() == []


async def test_schedules_are_the_default_tenants(service: Service) -> None:
    default = await service.key()
    acme = await service.key(tenant="acme")
    body = {"workflow": "svc-price", "every_minutes": 60, "input": ORDER}
    await service.http.put("/api/v1/schedules/hourly", json=body, headers=default)
    assert (await service.http.get("/api/v1/schedules", headers=acme)).json() == []
    for method, path in (
        ("GET", "/api/v1/schedules/hourly"),
        ("POST", "/api/v1/schedules/hourly/pause"),
        ("DELETE", "/api/v1/schedules/hourly"),
    ):
        problem(await service.http.request(method, path, headers=acme), 404, 3)
    problem(await service.http.put("/api/v1/schedules/hourly", json=body, headers=acme), 404, 3)
    assert (await service.http.get("/api/v1/schedules/hourly", headers=default)).status_code == 200
