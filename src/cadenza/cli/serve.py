"""``cadenza serve`` (the HTTP service) and ``cadenza keys …`` (its API keys)."""

from __future__ import annotations

import asyncio
import contextlib

import click
from rich.table import Table

from cadenza.cli._common import (
    console,
    emit_json,
    err_console,
    json_option,
    literal,
    literal_text,
    run_async,
)
from cadenza.engine.engine import Engine
from cadenza.errors import MissingDependency, NotFound


def register(cli: click.Group) -> None:
    """Mount ``serve`` and ``keys`` on the main command."""
    cli.add_command(serve_command)
    cli.add_command(keys_group)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "-w",
    "--workflows",
    "refs",
    multiple=True,
    help="MODULE:WORKFLOW (or MODULE) the API may start; repeat.",
)
@click.option(
    "--worker/--no-worker",
    default=None,
    help="Also execute runs in this process (default: yes on the embedded SQLite store,"
    " no on a cluster, where 'cadenza worker' processes do).",
)
@click.option("--concurrency", default=100, show_default=True, help="Runs the worker executes.")
@click.option("--base-url", help="The address people reach the service at (for links).")
def serve_command(
    host: str,
    port: int,
    refs: tuple[str, ...],
    worker: bool | None,
    concurrency: int,
    base_url: str | None,
) -> None:
    """Serve the HTTP API (and the web console) on the configured store.

    Settings come from CADENZA_SERVICE_* (see docs/service.md); API keys from
    'cadenza keys create'.
    """
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise click.ClickException(str(MissingDependency("cadenza serve", "service"))) from None
    from cadenza.cli import _import_workflows
    from cadenza.client import Client
    from cadenza.engine.worker import Worker
    from cadenza.service import ServiceSettings, create_app

    @run_async
    async def body(engine: Engine) -> None:
        for ref in refs:
            _import_workflows(ref)
        settings = ServiceSettings.from_env(base_url=base_url)
        client = Client(engine)
        app = create_app(client, settings=settings)
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off", access_log=False
        )
        server = uvicorn.Server(config)
        run_worker = worker if worker is not None else engine.store.url.startswith("sqlite")
        stop = asyncio.Event()
        task = None
        if run_worker:
            task = asyncio.create_task(
                Worker(engine, concurrency=concurrency).run(stop=stop, grace=10.0)
            )
        err_console.print(
            f"cadenza service on http://{literal(host)}:{port}/api/v1 over"
            f" {literal(engine.store.url)}"
            f"{' with a worker' if run_worker else ' (no worker: run cadenza worker)'};"
            " Ctrl-C to stop"
        )
        try:
            await server.serve()
        finally:
            stop.set()
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await client.close()
        err_console.print("service stopped")

    body()


@click.group("keys")
def keys_group() -> None:
    """API keys of the service: each has a tenant and scopes."""


@keys_group.command("create")
@click.option("--name", required=True, help="Who or what uses the key, e.g. ci-deploy.")
@click.option("--tenant", default="default", show_default=True, help="The key's tenant.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["read", "start", "approve", "operate", "admin"]),
    help="What the key may do; repeat. Default: read.",
)
@json_option
def keys_create(name: str, tenant: str, scopes: tuple[str, ...], as_json: bool) -> None:
    """Create a key; it is shown once, only its hash is stored."""
    from cadenza.security.api_keys import create_key

    @run_async
    async def body(engine: Engine) -> None:
        record, key = await create_key(
            engine, name=name, tenant=tenant, scopes=scopes or ("read",), now=engine.clock.now()
        )
        if as_json:
            emit_json({**_key(record), "key": key})
            return
        console.print(
            f"created key {record.key_id} ({literal(record.name)}) for tenant"
            f" {literal(record.tenant)}, scopes {', '.join(record.scopes)}"
        )
        console.print(f"key: {key}")
        console.print("it is shown once: store it now (only its hash is kept)")

    body()


@keys_group.command("list")
@json_option
def keys_list(as_json: bool) -> None:
    """Every key: id, name, tenant, scopes, revoked or not (never the key itself)."""

    @run_async
    async def body(engine: Engine) -> None:
        keys = await engine.store.list_api_keys()
        if as_json:
            emit_json([_key(k) for k in keys])
            return
        if not keys:
            console.print("no API keys yet; create one with: cadenza keys create --name NAME")
            return
        table = Table(box=None)
        for column in ("KEY", "NAME", "TENANT", "SCOPES", "CREATED", "REVOKED"):
            table.add_column(column)
        for k in keys:
            table.add_row(
                k.key_id,
                literal_text(k.name),
                literal_text(k.tenant),
                ",".join(k.scopes),
                f"{k.created_at:%Y-%m-%d %H:%M}",
                f"{k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "-",
            )
        console.print(table)

    body()


@keys_group.command("revoke")
@click.argument("key_id")
@json_option
def keys_revoke(key_id: str, as_json: bool) -> None:
    """Revoke a key: requests with it are refused (401) from now on."""

    @run_async
    async def body(engine: Engine) -> None:
        if not await engine.store.revoke_api_key(key_id, now=engine.clock.now()):
            key = await engine.store.get_api_key(key_id)
            if key is None:
                raise NotFound(f"no API key {key_id!r}; list keys with 'cadenza keys list'")
        if as_json:
            emit_json({"key_id": key_id, "revoked": True})
        else:
            console.print(f"key {literal(key_id)} revoked")

    body()


def _key(record: object) -> dict[str, object]:
    from cadenza.ports.run_store import ApiKeyRecord

    assert isinstance(record, ApiKeyRecord)
    return {
        "key_id": record.key_id,
        "name": record.name,
        "tenant": record.tenant,
        "scopes": list(record.scopes),
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    }
