"""The CLI over HTTP: ``CADENZA_URL`` against ``cadenza serve`` on loopback, same output
and exit codes as the embedded commands."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.test_cli import CADENZA, REPO_ROOT, TOKEN, Cli

ORDER = '{"order_id": "A-1", "amount_eur": 10}'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Cli, Cli]]:
    """A service on a fresh home, and two CLIs: one over HTTP, one on the store itself."""
    home = tmp_path / "home"
    home.mkdir()
    local = Cli(home)
    key = local("keys", "create", "--name", "cli", "--scope", "admin", "--json").json()["key"]
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [CADENZA, "serve", "--port", str(port), "-w", "tests.service.service_workflows"],
            cwd=REPO_ROOT,
            env=local.env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/api/v1/openapi.json", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"cadenza serve did not start: {log.read_text()}")
                time.sleep(0.1)
        remote = Cli(home)
        remote.env.update({"CADENZA_URL": url, "CADENZA_API_KEY": key})
        yield remote, local
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_runs_start_show_and_list_over_http(server: tuple[Cli, Cli]) -> None:
    remote, local = server
    ran = remote("run", "svc-price", "--input", ORDER, "--json").json()
    assert ran["status"] == "SUCCEEDED" and ran["result"] == 12.0
    assert ran["waiting_for"] == []
    human = remote("run", "tests.service.service_workflows:price", "--input", ORDER)
    assert "succeeded:" in human.out and "12.0" in human.out
    detached = remote("run", "svc-price", "--input", ORDER, "--detach")
    assert detached.out.startswith("started run ")
    # The same JSON as the embedded command on the same store.
    shown = remote("runs", "show", ran["run_id"], "--json").json()
    assert shown == local("runs", "show", ran["run_id"], "--json").json()
    remote_list = remote("runs", "list", "--json", "--status", "SUCCEEDED").json()
    assert remote_list == local("runs", "list", "--json", "--status", "SUCCEEDED").json()

    def shown_to_people(cli: Cli) -> list[str]:  # but the "started 2s ago" line
        out = cli("runs", "show", ran["run_id"]).out
        return [line for line in out.splitlines() if not line.startswith("  started")]

    assert shown_to_people(remote) == shown_to_people(local)


def test_callbacks_over_http(server: tuple[Cli, Cli]) -> None:
    remote, local = server
    waiting = remote("run", "svc-approve", "--input", ORDER)
    assert "waiting for callback manager" in waiting.out
    match = TOKEN.search(waiting.out)
    assert match is not None
    token = match.group(1)
    done = remote("callback", "succeed", token, "--payload", '{"approved": true}')
    run_id = waiting.out.split()[1]
    assert done.out.strip() == f"callback 2 of run {run_id} succeeded"
    refused = remote("callback", "succeed", token, "--payload", '{"approved": true}', code=4)
    assert "a token completes its callback once" in refused.err
    for _ in range(100):
        shown = remote("runs", "show", run_id, "--json").json()
        if shown["status"] == "SUCCEEDED":
            break
        time.sleep(0.1)
    assert shown["result"] == "A-1: 12.0 approved"
    history = remote("runs", "history", run_id, "--json").json()
    assert history == local("runs", "history", run_id, "--json").json()
    assert "ActionRequested" in remote("runs", "history", run_id).out
    state = remote("runs", "state", run_id, "--json").json()
    assert state == local("runs", "state", run_id, "--json").json()
    second = remote("run", "svc-approve", "--input", ORDER, "--json").json()
    failed = remote(
        "callback", "fail", second["waiting_for"][0]["token"], "--message", "no", "--json"
    ).json()
    assert failed == {"run_id": second["run_id"], "op_id": "2", "callback": "failed"}
    third = remote("run", "svc-approve", "--input", ORDER, "--json").json()
    cancelled = remote("cancel", third["run_id"], "--json").json()
    assert cancelled["status"] == "CANCELLED"
    assert remote("cancel", third["run_id"], code=5).err.startswith("error:")


def test_events_and_errors_over_http(server: tuple[Cli, Cli]) -> None:
    remote, _ = server
    event = remote("events", "put", "--detail-type", "hello", "--detail", '{"a": 1}', "--json")
    data = event.json()
    assert data["detail-type"] == "hello" and data["detail"] == {"a": 1}
    assert data["source"] == "cadenza.cli"
    plain = remote("events", "put", "--detail-type", "hello", "--id", "evt-7")
    assert plain.out.strip() == "published event evt-7 (hello)"
    missing = remote("runs", "show", "r-nothing", code=3)
    assert "no run with id 'r-nothing'" in missing.err
    bad_input = remote("run", "svc-price", "--input", '{"order_id": 1}', code=2)
    assert "amount_eur" in bad_input.err
    unknown = remote("run", "nope", code=3)
    assert "svc-price" in unknown.err
    revoked = Cli(remote.home)
    revoked.env.update({**remote.env, "CADENZA_API_KEY": "cdzk_000000000000_" + "x" * 43})
    assert "API key is unknown" in revoked("runs", "list", code=2).err
    gone = Cli(remote.home)
    gone.env.update({**remote.env, "CADENZA_URL": f"http://127.0.0.1:{free_port()}"})
    assert "cannot reach the cadenza service" in gone("runs", "list", code=6).err


def test_keys_cli(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    created = cli(
        "keys", "create", "--name", "ops", "--tenant", "acme", "--scope", "read", "--json"
    )
    key = created.json()
    assert key["tenant"] == "acme" and key["scopes"] == ["read"] and key["key"].startswith("cdzk_")
    listed = cli("keys", "list", "--json").json()
    assert [k["key_id"] for k in listed] == [key["key_id"]] and "key" not in listed[0]
    assert key["key"] not in cli("keys", "list").out
    cli("keys", "revoke", key["key_id"])
    assert cli("keys", "list", "--json").json()[0]["revoked_at"] is not None
    assert "no API key" in cli("keys", "revoke", "nope", code=3).err
    assert "tenant" in cli("keys", "create", "--name", "x", "--tenant", "Bad Tenant", code=2).err
    assert json.loads(cli("keys", "list", "--json").out)[0]["name"] == "ops"
    assert os.path.exists(tmp_path / "cadenza.db")


def test_costs_over_http_are_the_key_tenants_roll_up(server: tuple[Cli, Cli]) -> None:
    remote, local = server
    ran = remote("run", "svc-write", "--input", ORDER, "--json").json()
    assert ran["status"] == "SUCCEEDED"
    rolled = remote("costs", "--json").json()
    rolled_here = local("costs", "--json").json()
    assert rolled.pop("since") and rolled_here.pop("since")  # "30 days ago", a moment apart
    assert rolled == rolled_here
    assert rolled["model"]["scripted:svc-writer"]["requests"] == 1
    assert rolled["total"]["output_tokens"] > 0
    assert "svc-write" in remote("costs").out
    assert "API key's tenant" in remote("costs", "--tenant", "acme", code=2).err
    # Another tenant's key sees none of it.
    other = local("keys", "create", "--name", "o", "--tenant", "acme", "--json").json()["key"]
    acme = Cli(remote.home)
    acme.env.update({**remote.env, "CADENZA_API_KEY": other})
    assert acme("costs", "--json").json()["total"]["requests"] == 0
