"""Helpers shared by this folder's tests."""

from __future__ import annotations

import json
from typing import Any

from cadenza.events import compile_pattern

# An EC2 state-change event in the EventBridge envelope, used by the documented examples.
EC2_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-12-22T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {
        "instance-id": "i-1234567890abcdef0",
        "state": "terminated",
        "c-count": 5,
        "d-count": 3,
        "x-limit": 301.8,
        "source-ip": "10.0.0.33",
    },
}


def check(pattern: dict[str, Any], event: dict[str, Any], expected: bool) -> None:
    assert compile_pattern(pattern).matches(event) is expected
    # The JSON text form compiles to the same matcher.
    assert compile_pattern(json.dumps(pattern)).matches(event) is expected


def field(value: Any) -> dict[str, Any]:
    return {"detail": {"f": value}}


def leaf(*alternatives: Any) -> dict[str, Any]:
    return {"detail": {"f": list(alternatives)}}
