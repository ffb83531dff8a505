"""The Lambda entry points of the serverless shape, configured from the environment.

=======================  ==========================================  ====================
handler                  trigger                                     does
=======================  ==========================================  ====================
``worker_handler``       SQS work queue (ReportBatchItemFailures)    activates runs
``sweeper_handler``      EventBridge schedule (every minute)         outbox, schedules,
                                                                     due runs → work queue
``rules_handler``        SQS rules queue (cadenza rules on the bus)  starts workflows,
                                                                     completes callbacks
``waiters_handler``      SQS waiters queue (every cadenza event)     resumes wait_for_event
``api_handler``          API Gateway (HTTP API)                      the HTTP service
=======================  ==========================================  ====================

Environment: ``CADENZA_STORE`` (``dynamodb://TABLE``), ``CADENZA_ARTIFACTS``
(``s3://BUCKET/PREFIX``), ``CADENZA_SECRET``, ``CADENZA_WORK_QUEUE_URL``,
``CADENZA_EVENT_BUS`` and ``CADENZA_WORKFLOWS`` (``MODULE:WORKFLOW`` references,
comma-separated, imported once per container). One engine and one event loop live as
long as the container, so a warm invocation opens nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from cadenza.aws._delivery import apply_rules, resume_waiters
from cadenza.aws._eventbridge import EventBridgePublisher, event_from_bus
from cadenza.aws._rules import rule_from_json
from cadenza.aws._work import (
    AwsRuntime,
    LambdaContext,
    SqsWorkQueue,
    due_run_ids,
    handle_work,
    new_owner,
    relay_quietly,
    sweep,
)
from cadenza.errors import ConfigurationError, MissingDependency
from cadenza.ports.run_store import Rule

log = logging.getLogger("cadenza.aws")
T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_runtime: AwsRuntime | None = None
_api: Any = None


def _loop_of_container() -> asyncio.AbstractEventLoop:
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop


def _run(coroutine: Awaitable[T]) -> T:
    """Run on the container's loop: the engine and its clients outlive one invocation."""
    return _loop_of_container().run_until_complete(coroutine)


async def runtime_from_environment() -> AwsRuntime:
    """The runtime the environment describes (see the module docstring)."""
    from cadenza.config import open_engine
    from cadenza.workflow import load

    queue_url = os.environ.get("CADENZA_WORK_QUEUE_URL")
    if not queue_url:
        raise ConfigurationError(
            "CADENZA_WORK_QUEUE_URL is not set; the template 'cadenza aws template' writes"
            " sets it on every function"
        )
    for ref in filter(None, os.environ.get("CADENZA_WORKFLOWS", "").split(",")):
        load(ref.strip())
    os.environ.setdefault("CADENZA_HOME", "/tmp/cadenza")  # the only writable folder
    engine = await open_engine(owner=new_owner())
    bus = os.environ.get("CADENZA_EVENT_BUS")
    return AwsRuntime(
        engine=engine,
        work_queue=SqsWorkQueue(queue_url),
        publisher=EventBridgePublisher(bus) if bus else None,
    )


def use_runtime(runtime: AwsRuntime | None) -> None:
    """Make the handlers use ``runtime`` (None: build it from the environment again)."""
    global _runtime, _api
    _runtime, _api = runtime, None


def _current() -> AwsRuntime:
    global _runtime
    if _runtime is None:
        _runtime = _run(runtime_from_environment())
    return _runtime


def worker_handler(event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
    """SQS work queue → activate the named runs; failures retried alone."""
    runtime = _current()
    return _run(handle_work(runtime, event, context)).response()


def sweeper_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """Scheduled: publish the outbox, fire due schedules, enqueue runnable runs."""
    report = _run(sweep(_current()))
    return {"relayed": report.relayed, "fired": report.fired, "enqueued": report.enqueued}


async def handle_deliveries(
    runtime: AwsRuntime,
    event: Mapping[str, Any],
    act: Callable[[Any, dict[str, Any]], Awaitable[list[str]]],
) -> dict[str, Any]:
    """Feed each SQS record (an EventBridge event) to ``act``; enqueue the runs it made
    runnable. A record that fails is reported alone for SQS to deliver again."""
    failures = []
    woken: list[str] = []
    for record in event.get("Records", []):
        try:
            delivered = event_from_bus(json.loads(record["body"]))
            woken += await act(runtime.engine, delivered)
        except Exception:
            log.exception("delivery %s failed; SQS delivers it again", record.get("messageId"))
            failures.append({"itemIdentifier": record["messageId"]})
    if woken:
        await runtime.work_queue.enqueue(woken)
    return {"batchItemFailures": failures}


def deployed_rules() -> list[Rule]:
    """The rules the template deployed (``CADENZA_RULES``, JSON), validated."""
    from cadenza.events.relay import validate_rule

    text = os.environ.get("CADENZA_RULES")
    if not text:
        return []
    rules = [rule_from_json(r) for r in json.loads(text)]
    for rule in rules:
        validate_rule(rule)
    return rules


def rules_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """SQS rules queue → start workflows / complete callbacks (idempotent by event id)."""
    deployed = deployed_rules()

    async def act(engine: Any, delivered: dict[str, Any]) -> list[str]:
        return await apply_rules(engine, delivered, deployed=deployed)

    return _run(handle_deliveries(_current(), event, act))


def waiters_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """SQS waiters queue → complete the ``wait_for_event`` waits an event matches."""
    return _run(handle_deliveries(_current(), event, resume_waiters))


async def enqueue_due(runtime: AwsRuntime) -> int:
    """Put the runs that are runnable now on the work queue (after an API request that
    may have started or woken some); duplicates of queued runs are acknowledged."""
    due = await due_run_ids(runtime.engine.store, runtime.engine.clock.now(), limit=200)
    await runtime.work_queue.enqueue(due)
    return len(due)


def api_app(runtime: AwsRuntime) -> Any:
    """The HTTP service over the runtime's engine, enqueuing what its writes made runnable."""
    from cadenza.client import Client
    from cadenza.service import create_app

    app = create_app(Client(runtime.engine))

    @app.middleware("http")
    async def enqueue_after_writes(request: Any, call_next: Any) -> Any:
        response = await call_next(request)
        if request.method not in ("GET", "HEAD", "OPTIONS") and response.status_code < 400:
            await enqueue_due(runtime)
            await relay_quietly(runtime)  # events put through the API
        return response

    return app


def api_handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """API Gateway → the HTTP service (through Mangum, in the ``aws`` extra)."""
    global _api
    if _api is None:
        try:
            from mangum import Mangum
        except ImportError as exc:
            raise MissingDependency("the API handler", "aws") from exc
        runtime = _current()
        _api = Mangum(api_app(runtime), lifespan="off")
    _loop_of_container()  # Mangum runs the request on the current loop: ours
    return _api(event, context)  # type: ignore[no-any-return]
