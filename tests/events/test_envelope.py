"""The EventBridge envelope: shape, round trip, validation and the size limit."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cadenza.errors import InvalidInput, PayloadTooLarge
from cadenza.events import MAX_EVENT_BYTES, Event

WHEN = datetime(2026, 1, 31, 12, 30, 5, tzinfo=UTC)


def make(**overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "detail_type": "OrderPlaced",
        "detail": {"order": 42},
        "source": "shop.orders",
        "id": "e-1",
        "time": WHEN,
    }
    fields.update(overrides)
    detail_type = fields.pop("detail_type")
    detail = fields.pop("detail")
    return Event.new(detail_type, detail, **fields)


def wire(**overrides: Any) -> dict[str, Any]:
    data = make().to_dict()
    data.update(overrides)
    return data


# --- shape -----------------------------------------------------------------------------


def test_to_dict_is_shaped_as_eventbridge_shapes_it() -> None:
    event = make(resources=["arn:aws:s3:::bucket"])
    assert event.to_dict() == {
        "version": "0",
        "id": "e-1",
        "detail-type": "OrderPlaced",
        "source": "shop.orders",
        "account": "local",
        "time": "2026-01-31T12:30:05Z",
        "region": "local",
        "resources": ["arn:aws:s3:::bucket"],
        "detail": {"order": 42},
    }
    assert list(event.to_dict()) == [
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    ]


def test_cadenza_links_appear_only_when_set() -> None:
    event = make(run_id="r-42", causation_id="e-0")
    data = event.to_dict()
    assert data["run_id"] == "r-42"
    assert data["causation_id"] == "e-0"
    assert "trace_id" not in data


def test_new_assigns_a_uuid4_id_and_the_current_utc_time() -> None:
    before = datetime.now(UTC)
    event = Event.new("Ping", {}, source="test")
    after = datetime.now(UTC)
    assert uuid.UUID(event.id).version == 4
    assert before <= event.time <= after
    assert event.time.tzinfo is UTC
    assert Event.new("Ping", {}, source="test").id != event.id


def test_time_is_stored_in_utc_and_written_with_z() -> None:
    cet = timezone(timedelta(hours=1))
    event = make(time=datetime(2026, 1, 31, 13, 30, 5, tzinfo=cet))
    assert event.time == WHEN
    assert event.time.utcoffset() == timedelta(0)
    assert event.to_dict()["time"] == "2026-01-31T12:30:05Z"


def test_sub_second_time_keeps_its_microseconds() -> None:
    event = make(time=WHEN.replace(microsecond=1500))
    assert event.to_dict()["time"] == "2026-01-31T12:30:05.001500Z"
    assert Event.from_dict(event.to_dict()).time == event.time


def test_to_json_is_compact_utf8_json_of_to_dict() -> None:
    event = make(detail={"name": "Zoë"})
    assert json.loads(event.to_json()) == event.to_dict()
    assert "Zoë" in event.to_json()
    assert ", " not in event.to_json()


def test_events_are_immutable_and_hash_by_id() -> None:
    event = make()
    with pytest.raises(AttributeError):
        event.source = "other"  # type: ignore[misc]
    assert hash(event) == hash(make())
    assert {event, make()} == {event}


def test_detail_is_copied_so_later_changes_do_not_leak_in() -> None:
    detail: dict[str, Any] = {"items": [1, 2]}
    event = make(detail=detail)
    detail["items"].append(3)
    assert event.detail == {"items": [1, 2]}


def test_resources_become_a_tuple() -> None:
    assert make(resources=["a", "b"]).resources == ("a", "b")
    assert make(resources=("a",)).to_dict()["resources"] == ["a"]


# --- round trip ------------------------------------------------------------------------


def test_round_trip_through_dict_and_json() -> None:
    event = make(resources=["r"], run_id="r-1", trace_id="t-1", causation_id="c-1")
    assert Event.from_dict(event.to_dict()) == event
    assert Event.from_json(event.to_json()) == event
    assert Event.from_json(event.to_json().encode()) == event


def test_from_dict_accepts_a_real_eventbridge_event() -> None:
    data = {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": "111122223333",
        "time": "2017-12-22T18:43:48Z",
        "region": "us-west-1",
        "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
        "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated"},
    }
    event = Event.from_dict(data)
    assert event.detail_type == "EC2 Instance State-change Notification"
    assert event.time == datetime(2017, 12, 22, 18, 43, 48, tzinfo=UTC)
    assert event.to_dict() == data


def test_from_dict_defaults_the_optional_envelope_fields() -> None:
    data = {
        "id": "e-9",
        "time": "2026-01-31T12:30:05Z",
        "detail-type": "Ping",
        "source": "test",
        "detail": {},
    }
    event = Event.from_dict(data)
    assert (event.version, event.account, event.region, event.resources) == (
        "0",
        "local",
        "local",
        (),
    )
    assert event.run_id is None


def test_from_dict_reads_offsets_and_null_links() -> None:
    event = Event.from_dict(wire(time="2026-01-31T13:30:05+01:00", run_id=None))
    assert event.time == WHEN
    assert event.run_id is None


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_detail = st.dictionaries(
    st.text(),
    st.recursive(
        json_leaf,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c, max_size=3),
        max_leaves=10,
    ),
    max_size=5,
)


@given(
    detail=json_detail,
    source=st.text(min_size=1),
    detail_type=st.text(min_size=1),
    resources=st.lists(st.text(), max_size=3),
    when=st.datetimes(timezones=st.just(UTC)),
    run_id=st.none() | st.text(min_size=1),
)
def test_any_valid_event_survives_a_json_round_trip(
    detail: dict[str, Any],
    source: str,
    detail_type: str,
    resources: list[str],
    when: datetime,
    run_id: str | None,
) -> None:
    event = Event.new(
        detail_type, detail, source=source, resources=resources, time=when, run_id=run_id
    )
    assert Event.from_json(event.to_json()) == event


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"detail_type": ""}, "detail-type must be a non-empty string"),
        ({"detail_type": 5}, "detail-type must be a non-empty string"),
        ({"source": ""}, "source must be a non-empty string"),
        ({"source": None}, "source must be a non-empty string"),
        ({"id": ""}, "id must be a non-empty string"),
        ({"detail": ["a"]}, "detail must be a JSON object"),
        ({"detail": "text"}, "detail must be a JSON object"),
        ({"detail": None}, "detail must be a JSON object"),
        ({"detail": {"when": datetime.now(UTC)}}, "not JSON-serialisable"),
        ({"detail": {"x": float("nan")}}, "not JSON-serialisable"),
        ({"detail": {"s": {1, 2}}}, "not JSON-serialisable"),
        ({"resources": "arn:aws:s3:::bucket"}, "resources must be a list of strings"),
        ({"resources": [1]}, "resources must be strings"),
        ({"resources": 5}, "resources must be a list of strings"),
        ({"time": datetime(2026, 1, 1)}, "has no timezone"),
        ({"time": "2026-01-01T00:00:00Z"}, "time must be a datetime"),
        ({"run_id": ""}, "run_id must be a non-empty string or None"),
        ({"trace_id": 7}, "trace_id must be a non-empty string or None"),
    ],
)
def test_new_rejects_bad_fields(overrides: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        make(**overrides)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({**wire(), "id": None}, "id must be a non-empty string"),
        (
            {k: v for k, v in wire().items() if k != "id"},
            "missing the required field 'id'; Event.new",
        ),
        ({k: v for k, v in wire().items() if k != "time"}, "missing the required field 'time'"),
        ({k: v for k, v in wire().items() if k != "detail"}, "missing the required field 'detail'"),
        (
            {k: v for k, v in wire().items() if k != "detail-type"},
            "missing the required field 'detail-type'",
        ),
        ({k: v for k, v in wire().items() if k != "source"}, "missing the required field 'source'"),
        (wire(detail_type="x"), "unknown event field 'detail_type'.*put your own data in 'detail'"),
        (wire(extra=1), "unknown event field 'extra'"),
        (wire(version=0), "version must be a string"),
        (wire(account=None), "account must be a string"),
        (wire(region=["eu"]), "region must be a string"),
        (wire(resources="arn"), "resources must be a list of strings"),
        (wire(resources=[None]), "resources must be strings"),
        (wire(detail=[]), "detail must be a JSON object"),
        (wire(time=1700000000), "time must be an ISO-8601 string"),
        (wire(time="yesterday"), "not ISO-8601"),
        (wire(time="2026-01-31T12:30:05"), "has no timezone; end it with 'Z'"),
        (wire(run_id=5), "run_id must be a non-empty string or None"),
    ],
)
def test_from_dict_says_which_field_is_wrong(data: dict[str, Any], says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        Event.from_dict(data)


def test_from_dict_rejects_a_non_object() -> None:
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        Event.from_dict(["not", "an", "event"])  # type: ignore[arg-type]


def test_from_json_rejects_bad_json() -> None:
    with pytest.raises(InvalidInput, match="not valid JSON"):
        Event.from_json("{")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        Event.from_json(b"\xff")


# --- size limit ------------------------------------------------------------------------


def envelope_bytes() -> int:
    return len(make(detail={"blob": ""}).to_json().encode())


def test_an_event_of_exactly_the_limit_is_accepted() -> None:
    padding = MAX_EVENT_BYTES - envelope_bytes()
    event = make(detail={"blob": "x" * padding})
    assert len(event.to_json().encode()) == MAX_EVENT_BYTES


def test_one_byte_over_the_limit_is_too_large() -> None:
    padding = MAX_EVENT_BYTES - envelope_bytes() + 1
    with pytest.raises(PayloadTooLarge) as caught:
        make(detail={"blob": "x" * padding})
    message = str(caught.value)
    assert f"{MAX_EVENT_BYTES + 1:,} bytes" in message
    assert f"{MAX_EVENT_BYTES:,}-byte limit" in message
    assert "artifact" in message and "reference" in message


def test_size_counts_utf8_bytes_not_characters() -> None:
    characters = (MAX_EVENT_BYTES - envelope_bytes()) // 2 + 1
    with pytest.raises(PayloadTooLarge):
        make(detail={"blob": "é" * characters})


def test_from_dict_enforces_the_limit_too() -> None:
    data = wire(detail={"blob": "x" * MAX_EVENT_BYTES})
    with pytest.raises(PayloadTooLarge):
        Event.from_dict(data)


def test_payload_too_large_is_an_invalid_input() -> None:
    assert issubclass(PayloadTooLarge, InvalidInput)
    assert MAX_EVENT_BYTES == 1_048_576
