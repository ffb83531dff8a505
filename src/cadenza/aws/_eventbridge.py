"""cadenza events on an Amazon EventBridge bus: the outbox relay's target and the rules.

The relay reads the outbox as the in-process relay does, but instead of matching rules
itself it publishes each event to the bus (``PutEvents``, ten entries a request). An
entry the bus refuses is retried alone, with a short backoff, while the others of its
batch count as published; only published events are marked delivered, so a refused one
comes round again with the next relay (at least once).

EventBridge gives every event its own id, so the cadenza envelope fields that the bus has
no place for travel in the detail under ``_cadenza``: the cadenza event id (what
consumers deduplicate by), ``run_id``, ``trace_id``, ``causation_id`` and the tenant.
:func:`event_from_bus` restores the cadenza event from a delivery; :func:`bus_pattern`
rewrites a rule's pattern so that fields of the cadenza envelope are matched where they
travel, and adds the rule's tenant. The pattern language is the same on both sides: a
rule is validated by cadenza's own compiler before it is deployed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from cadenza.aws._clients import THROTTLED, LazyClient, aws_client, error_code
from cadenza.errors import ConfigurationError, StoreUnavailable
from cadenza.events.relay import tenant_of, validate_rule
from cadenza.ports.run_store import Rule

if TYPE_CHECKING:
    from cadenza.engine.engine import Engine

log = logging.getLogger("cadenza.aws")

META: Final = "_cadenza"
"""The detail key that carries the cadenza envelope fields across the bus."""
_LINKS: Final = ("id", "run_id", "trace_id", "causation_id", "tenant")
BATCH: Final = 10  # PutEvents takes at most ten entries a request
_TRANSIENT: Final = THROTTLED | {"InternalFailure", "ThrottlingException"}


def bus_entry(event: Mapping[str, Any], bus: str) -> dict[str, Any]:
    """One ``PutEvents`` entry for a cadenza event (as the outbox holds it)."""
    meta = {k: event[k] for k in _LINKS if isinstance(event.get(k), str) and event[k]}
    meta["tenant"] = tenant_of(dict(event))
    detail = {**event.get("detail", {}), META: meta}
    entry: dict[str, Any] = {
        "EventBusName": bus,
        "Source": event["source"],
        "DetailType": event["detail-type"],
        "Detail": json.dumps(detail, separators=(",", ":"), ensure_ascii=False),
        "Resources": list(event.get("resources", [])),
    }
    if isinstance(event.get("time"), str):
        entry["Time"] = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    return entry


def event_from_bus(delivered: Mapping[str, Any]) -> dict[str, Any]:
    """The cadenza event (as the outbox held it) from an EventBridge event delivered to a
    target. An event published to the bus by something else keeps the bus's id."""
    detail = dict(delivered.get("detail") or {})
    meta = detail.pop(META, None) or {}
    event: dict[str, Any] = {
        "version": delivered.get("version", "0"),
        "id": meta.get("id") or delivered["id"],
        "detail-type": delivered["detail-type"],
        "source": delivered["source"],
        "account": delivered.get("account", "local"),
        "time": delivered["time"],
        "region": delivered.get("region", "local"),
        "resources": list(delivered.get("resources", [])),
        "detail": detail,
    }
    for name in ("run_id", "trace_id", "causation_id"):
        if meta.get(name):
            event[name] = meta[name]
    if meta.get("tenant") and meta["tenant"] != tenant_of({}):
        event["tenant"] = meta["tenant"]
    return event


def bus_pattern(rule: Rule) -> dict[str, Any]:
    """The EventBridge pattern of a cadenza rule: validated by cadenza's compiler, the
    envelope fields moved to where they travel on the bus, and the rule's tenant added."""
    validate_rule(rule)
    pattern = _move_links(rule.pattern)
    detail = pattern.setdefault("detail", {})
    if not isinstance(detail, dict):  # validate_rule has refused anything else
        raise ConfigurationError(f"rule {rule.name!r}: 'detail' must be an object pattern")
    detail.setdefault(META, {})["tenant"] = [rule.tenant]
    return pattern


def _move_links(pattern: Mapping[str, Any]) -> dict[str, Any]:
    moved: dict[str, Any] = {}
    links: dict[str, Any] = {}
    for key, value in pattern.items():
        if key == "$or":
            moved[key] = [_move_links(branch) for branch in value]
        elif key in _LINKS:
            links[key] = value
        else:
            moved[key] = json.loads(json.dumps(value))
    if links:
        detail = moved.setdefault("detail", {})
        detail.setdefault(META, {}).update(links)
    return moved


def rule_name(prefix: str, rule: Rule) -> str:
    """An EventBridge rule name for a cadenza rule (64 characters of [.-_A-Za-z0-9])."""
    tenant = "" if rule.tenant == tenant_of({}) else f"{rule.tenant}-"
    return re.sub(r"[^.\-_A-Za-z0-9]", "-", f"{prefix}{tenant}{rule.name}")[:64]


@dataclass
class PublishReport:
    """What a publish did: ids published, and ids refused (with the bus's reason)."""

    published: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)


class EventBridgePublisher:
    """Publishes cadenza events to an EventBridge bus.

    >>> publisher = EventBridgePublisher("cadenza-events")
    >>> await publisher.publish([event.to_dict()])
    """

    def __init__(
        self,
        bus: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
        attempts: int = 4,
        backoff: float = 0.2,
    ) -> None:
        if not bus:
            raise ConfigurationError("an EventBridge publisher needs a bus name or ARN")
        self.bus = bus
        self.attempts = attempts
        self.backoff = backoff
        self._client = LazyClient("events", client=client, region=region, endpoint_url=endpoint_url)

    @property
    def client(self) -> Any:
        return self._client.get()

    async def publish(self, events: Sequence[Mapping[str, Any]]) -> PublishReport:
        """Publish ``events`` ten at a time; each refused entry is retried alone."""
        report = PublishReport()
        for start in range(0, len(events), BATCH):
            batch = list(events[start : start + BATCH])
            failed = await self._put(batch, report)
            for event, reason in failed:
                await self._retry_alone(event, reason, report)
        return report

    async def _put(
        self, batch: list[Mapping[str, Any]], report: PublishReport
    ) -> list[tuple[Mapping[str, Any], str]]:
        entries = [bus_entry(e, self.bus) for e in batch]
        try:
            reply = await asyncio.to_thread(self.client.put_events, Entries=entries)
        except Exception as exc:
            if _transient(exc):
                return [(e, error_code(exc) or str(exc)) for e in batch]
            raise _translate(exc, self.bus) from exc
        failed = []
        for event, result in zip(batch, reply.get("Entries", []), strict=False):
            if result.get("ErrorCode"):
                failed.append((event, f"{result['ErrorCode']}: {result.get('ErrorMessage', '')}"))
            else:
                report.published.append(event["id"])
        return failed

    async def _retry_alone(
        self, event: Mapping[str, Any], reason: str, report: PublishReport
    ) -> None:
        for attempt in range(1, self.attempts):
            if reason.split(":")[0] not in _TRANSIENT:
                break  # the bus refused the entry itself: sending it again cannot help
            await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            failed = await self._put([event], report)
            if not failed:
                return
            reason = failed[0][1]
        report.refused[event["id"]] = reason
        log.error("event %s not published to bus %s: %s", event["id"], self.bus, reason)


def _transient(exc: BaseException) -> bool:
    try:
        from botocore.exceptions import ConnectionError, HTTPClientError
    except ImportError:  # pragma: no cover - boto3 brings botocore
        return False
    return error_code(exc) in _TRANSIENT or isinstance(exc, ConnectionError | HTTPClientError)


def _translate(exc: BaseException, bus: str) -> Exception:
    code = error_code(exc)
    if code == "ResourceNotFoundException":
        return ConfigurationError(
            f"EventBridge bus {bus!r} does not exist; deploy the template"
            " ('cadenza aws template') or set CADENZA_EVENT_BUS to an existing bus"
        )
    if code in ("AccessDeniedException", "UnrecognizedClientException"):
        return ConfigurationError(
            f"EventBridge refused to publish to {bus!r} ({code}); give the function"
            " events:PutEvents on the bus"
        )
    return StoreUnavailable(f"EventBridge did not take the events ({code or exc}); retried later")


async def relay_to_eventbridge(
    engine: Engine, publisher: EventBridgePublisher, *, limit: int = 200
) -> PublishReport:
    """Publish up to ``limit`` undelivered outbox events to the bus and mark the published
    ones delivered. Refused events stay in the outbox for the next relay."""
    entries = await engine.store.fetch_outbox(limit=limit)
    if not entries:
        return PublishReport()
    report = await publisher.publish([e.event for e in entries])
    done = set(report.published)
    seqs = [e.seq for e in entries if e.event["id"] in done]
    if seqs:
        await engine.store.mark_delivered(seqs, now=engine.clock.now())
    return report


async def deploy_rules(
    rules: Sequence[Rule],
    *,
    bus: str,
    queue_arn: str,
    prefix: str = "cadenza-",
    client: Any = None,
) -> list[str]:
    """Put each start-workflow / complete-callback rule on the bus, delivering to the SQS
    queue ``queue_arn`` that the rules handler reads. Returns the EventBridge rule names."""
    events = client or aws_client("events")
    names = []
    for rule in rules:
        name = rule_name(prefix, rule)
        pattern = bus_pattern(rule)
        await asyncio.to_thread(
            events.put_rule,
            Name=name,
            EventBusName=bus,
            EventPattern=json.dumps(pattern),
            State="ENABLED" if rule.enabled else "DISABLED",
            Description=f"cadenza rule {rule.name} ({rule.target})",
        )
        await asyncio.to_thread(
            events.put_targets,
            Rule=name,
            EventBusName=bus,
            Targets=[{"Id": "cadenza-rules", "Arn": queue_arn}],
        )
        names.append(name)
    return names


WAITERS_PATTERN: Final = {"detail": {META: {"id": [{"exists": True}]}}}
"""Every cadenza event on the bus: what the waiters queue receives (the patterns of
``wait_for_event`` belong to runs, not to the deployment, so they are matched there)."""


async def deploy_waiter_rule(
    *, bus: str, queue_arn: str, name: str = "cadenza-waiters", client: Any = None
) -> str:
    """Deliver every cadenza event on the bus to the queue the waiters handler reads."""
    events = client or aws_client("events")
    await asyncio.to_thread(
        events.put_rule,
        Name=name,
        EventBusName=bus,
        EventPattern=json.dumps(WAITERS_PATTERN),
        State="ENABLED",
        Description="cadenza events, for runs waiting in wait_for_event",
    )
    await asyncio.to_thread(
        events.put_targets,
        Rule=name,
        EventBusName=bus,
        Targets=[{"Id": "cadenza-waiters", "Arn": queue_arn}],
    )
    return name
