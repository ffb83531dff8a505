"""The event envelope: what cadenza publishes, stores and matches, shaped as EventBridge
shapes it.

``Event.to_dict()`` gives exactly the JSON an EventBridge rule sees (``detail-type`` with a
hyphen, ``time`` in UTC with a ``Z``), so a pattern written for an AWS event bus works
unchanged on a local one and back. cadenza adds three optional fields that tie an event to
the run that caused it: ``run_id``, ``trace_id`` and ``causation_id``.

Every ``Event`` is valid once built: the fields are checked, ``detail`` is copied into plain
JSON, and the whole entry must fit in :data:`MAX_EVENT_BYTES`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, cast

from cadenza.errors import InvalidInput, PayloadTooLarge

__all__ = ["MAX_EVENT_BYTES", "Event"]

MAX_EVENT_BYTES: Final = 1024 * 1024
"""Largest serialised event, in bytes of compact UTF-8 JSON (EventBridge's entry limit)."""

_KEYS: Final = (
    "version",
    "id",
    "detail-type",
    "source",
    "account",
    "time",
    "region",
    "resources",
    "detail",
    "run_id",
    "trace_id",
    "causation_id",
)
_LINKS: Final = ("run_id", "trace_id", "causation_id")


def _new_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Event:
    """One event, immutable. Create with :meth:`Event.new`; restore with :meth:`from_dict`.

    >>> e = Event.new("OrderPlaced", {"order": 42}, source="shop.orders")
    >>> e.to_dict()["detail-type"]
    'OrderPlaced'
    """

    version: str = "0"
    id: str = field(default_factory=_new_id)
    detail_type: str
    source: str
    time: datetime = field(default_factory=_now)
    account: str = "local"
    region: str = "local"
    resources: tuple[str, ...] = ()
    detail: dict[str, Any]
    run_id: str | None = None
    trace_id: str | None = None
    causation_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("detail_type", "source", "id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidInput(f"event {_wire(name)} must be a non-empty string, got {value!r}")
        for name in ("version", "account", "region"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InvalidInput(f"event {name} must be a string, got {value!r}")
        for name in _LINKS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInput(
                    f"event {name} must be a non-empty string or None, got {value!r}"
                )
        object.__setattr__(self, "time", _utc(self.time))
        object.__setattr__(self, "resources", _resources(self.resources))
        object.__setattr__(self, "detail", _json_object(self.detail))
        size = len(self.to_json().encode())
        if size > MAX_EVENT_BYTES:
            raise PayloadTooLarge(
                f"event {self.detail_type!r} from {self.source!r} is {size:,} bytes, over the "
                f"{MAX_EVENT_BYTES:,}-byte limit; store large payloads as an artifact and "
                f"put a reference to it in the detail"
            )

    # An event is identified by its id; equal events share it, so hashing stays consistent
    # with equality although ``detail`` is a dict.
    def __hash__(self) -> int:
        return hash(self.id)

    @classmethod
    def new(
        cls,
        detail_type: str,
        detail: Mapping[str, Any],
        *,
        source: str,
        resources: Iterable[str] = (),
        run_id: str | None = None,
        trace_id: str | None = None,
        causation_id: str | None = None,
        id: str | None = None,
        time: datetime | None = None,
    ) -> Event:
        """A new event with a fresh uuid4 id and the current UTC time unless given."""
        return cls(
            id=id if id is not None else _new_id(),
            detail_type=detail_type,
            source=source,
            time=time if time is not None else _now(),
            resources=_resources(resources),
            detail=cast("dict[str, Any]", detail),
            run_id=run_id,
            trace_id=trace_id,
            causation_id=causation_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """The event as EventBridge shapes it, ready for ``json.dumps``.

        The dict shares ``detail`` with the event; copy it before changing it.
        """
        data: dict[str, Any] = {
            "version": self.version,
            "id": self.id,
            "detail-type": self.detail_type,
            "source": self.source,
            "account": self.account,
            "time": _format_time(self.time),
            "region": self.region,
            "resources": list(self.resources),
            "detail": self.detail,
        }
        for name in _LINKS:
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data

    def to_json(self) -> str:
        """The event as compact JSON text, the form whose size :data:`MAX_EVENT_BYTES` caps."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Restore an event from :meth:`to_dict` output (or any EventBridge-shaped dict).

        ``version``, ``account``, ``region`` and ``resources`` default when absent; ``id``,
        ``time``, ``detail-type``, ``source`` and ``detail`` are required.
        """
        if not isinstance(data, Mapping):
            raise InvalidInput(f"an event must be a JSON object, got {type(data).__name__}")
        unknown = [key for key in data if key not in _KEYS]
        if unknown:
            raise InvalidInput(
                f"unknown event field {unknown[0]!r}; an event has only "
                f"{', '.join(_KEYS)} (put your own data in 'detail')"
            )
        for key in ("id", "time", "detail-type", "source", "detail"):
            if key not in data:
                hint = (
                    "; Event.new(...) assigns an id and time to a new event"
                    if key in ("id", "time")
                    else ""
                )
                raise InvalidInput(f"event is missing the required field {key!r}{hint}")
        resources = data.get("resources", [])
        if not isinstance(resources, list):
            raise InvalidInput(
                f"event resources must be a list of strings, got {type(resources).__name__}"
            )
        return cls(
            version=data.get("version", "0"),
            id=data["id"],
            detail_type=data["detail-type"],
            source=data["source"],
            time=_parse_time(data["time"]),
            account=data.get("account", "local"),
            region=data.get("region", "local"),
            resources=tuple(resources),
            detail=data["detail"],
            run_id=data.get("run_id"),
            trace_id=data.get("trace_id"),
            causation_id=data.get("causation_id"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Restore an event from :meth:`to_json` text."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"event is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def _wire(name: str) -> str:
    return "detail-type" if name == "detail_type" else name


def _utc(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidInput(f"event time must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInput(
            f"event time {value.isoformat()} has no timezone; pass an aware datetime such "
            f"as datetime.now(UTC)"
        )
    return value.astimezone(UTC)


def _format_time(value: datetime) -> str:
    timespec = "microseconds" if value.microsecond else "seconds"
    return value.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidInput(
            f"event time must be an ISO-8601 string like '2026-01-31T12:00:00Z', got {value!r}"
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(
            f"event time {value!r} is not ISO-8601; use a form like '2026-01-31T12:00:00Z'"
        ) from exc
    if parsed.tzinfo is None:
        raise InvalidInput(
            f"event time {value!r} has no timezone; end it with 'Z' for UTC, like "
            f"'2026-01-31T12:00:00Z'"
        )
    return parsed


def _resources(value: Any) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidInput(f"event resources must be a list of strings such as ARNs, got {value!r}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise InvalidInput(f"event resources must be strings, got {item!r}")
    return items


def _json_object(value: Any) -> dict[str, Any]:
    """A private plain-JSON copy of ``detail``, so later changes to the caller's dict do not
    reach an event that may already be stored or delivered."""
    if not isinstance(value, Mapping):
        raise InvalidInput(
            f"event detail must be a JSON object (a dict), got {type(value).__name__}; wrap "
            f'other values, like {{"value": ...}}'
        )
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"event detail is not JSON-serialisable: {exc}; convert values to str, int, "
            f"float, bool, None, list or dict"
        ) from exc
    copied: dict[str, Any] = json.loads(text)
    return copied
