"""The cluster shape end to end: ``cadenza serve --no-worker`` and two ``cadenza worker``
processes on one PostgreSQL database. A run started over the API is approved from the link
in its notification and finishes on a worker; a failed run is retried over the API after
the fix and finishes too."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.contract.pg import fresh_database

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
CADENZA = str(Path(sys.executable).with_name("cadenza"))
WORKFLOWS = "tests.service.service_workflows"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    def __init__(self, home: Path, store: str) -> None:
        self.home = home
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "CADENZA_HOME": str(home),
            "CADENZA_STORE": store,
            "CADENZA_SERVICE_BASE_URL": self.url,
            "PYTHONPATH": str(REPO_ROOT),
        }
        self.procs: list[subprocess.Popen[bytes]] = []

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [CADENZA, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def spawn(self, name: str, *args: str) -> None:
        with (self.home / f"{name}.log").open("ab") as log:
            self.procs.append(
                subprocess.Popen(
                    [CADENZA, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
                )
            )

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in self.home.glob("*.log"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with fresh_database() as url:
        running = Cluster(tmp_path, f"{url}?schema=s_{uuid.uuid4().hex[:8]}")
        try:
            yield running
        finally:
            running.stop()


def _wait(what: str, check: Any, cluster: Cluster, within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {within} s\n{cluster.logs()}")


def test_approve_by_link_and_retry_across_two_workers(cluster: Cluster, tmp_path: Path) -> None:
    key = json.loads(cluster.cli("keys", "create", "--name", "ops", "--scope", "admin", "--json"))[
        "key"
    ]
    cluster.spawn("serve", "serve", "--no-worker", "--port", str(cluster.port), "-w", WORKFLOWS)
    for n in (1, 2):
        cluster.spawn(f"worker{n}", "worker", "--poll", "0.2", "-w", WORKFLOWS)
    with httpx.Client(
        base_url=f"{cluster.url}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as api:
        _scenario(cluster, api, tmp_path)


def _scenario(cluster: Cluster, api: httpx.Client, tmp_path: Path) -> None:
    def up() -> bool:
        try:
            return api.get("/workflows").status_code == 200
        except httpx.TransportError:
            return False

    _wait("the service starting", up, cluster)

    def status(run_id: str) -> str | None:
        return str(api.get(f"/runs/{run_id}").json()["status"])

    # A run that waits for a reviewer: the link in the notification answers it.
    order = {"order_id": "A-7", "amount_eur": 10}
    started = api.post("/runs", json={"workflow": "svc-review", "input": order})
    assert started.status_code in (200, 201), started.text
    run_id = started.json()["run_id"]
    _wait("the review request", lambda: status(run_id) == "SUSPENDED", cluster)
    log = cluster.home / "notifications.log"
    [link] = json.loads(log.read_text().splitlines()[-1])["links"]
    assert link["url"].startswith(f"{cluster.url}/approve/")
    page = httpx.get(link["url"], timeout=30)
    assert page.status_code == 200 and "<strong>12.0 EUR</strong>" in page.text
    answered = httpx.post(link["url"], data={"decision": "approve", "comment": ""}, timeout=30)
    assert answered.status_code == 200, answered.text
    _wait("the approved run finishing", lambda: status(run_id) == "SUCCEEDED", cluster)
    assert api.get(f"/runs/{run_id}/result").json()["result"] == "A-7: 12.0 approved"

    # A run that fails until an operator fixes what it needs, then retries it.
    flag = tmp_path / "price-list"
    request = {"order_id": "B-2", "amount_eur": "5", "flag": str(flag)}
    failed = api.post("/runs", json={"workflow": "svc-fixable", "input": request}).json()
    _wait("the run failing", lambda: status(failed["run_id"]) == "FAILED", cluster)
    flag.write_text("prices")
    retried = api.post(f"/runs/{failed['run_id']}/retry")
    assert retried.status_code in (200, 202), retried.text
    _wait("the retried run finishing", lambda: status(failed["run_id"]) == "SUCCEEDED", cluster)

    workers = set()
    for run in (run_id, failed["run_id"]):
        for event in api.get(f"/runs/{run}/history").json():
            if event["type"] == "InvocationCompleted":
                workers.add(event["details"]["worker"])
    assert workers and all(":" in w for w in workers)  # activations ran on the workers
