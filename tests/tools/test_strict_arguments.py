"""Arguments are validated strictly against the schema the model was shown, and what goes
back to the model about bad arguments is bounded, however large the arguments."""

from __future__ import annotations

from datetime import date
from enum import Enum
from typing import Any

import pytest
from pydantic import BaseModel

from cadenza.errors import ToolArgumentsInvalid
from cadenza.tools import Tool, tool


class Cabin(Enum):
    ECONOMY = "economy"
    BUSINESS = "business"


class Passenger(BaseModel):
    name: str
    age: int


@tool
def reserve(
    seats: int, price: float, refundable: bool, day: date, cabin: Cabin, who: list[Passenger]
) -> dict[str, Any]:
    """Reserve seats."""
    return {
        "seats": seats,
        "price": price,
        "refundable": refundable,
        "day": day,
        "cabin": cabin,
        "who": [p.name for p in who],
    }


GOOD: dict[str, Any] = {
    "seats": 2,
    "price": 120.5,
    "refundable": False,
    "day": "2026-05-01",
    "cabin": "business",
    "who": [{"name": "Ada", "age": 36}],
}


async def test_json_forms_of_the_schema_are_accepted() -> None:
    result = await reserve.call({**GOOD, "price": 120})  # an integer is a JSON number
    assert result == {
        "seats": 2,
        "price": 120.0,
        "refundable": False,
        "day": date(2026, 5, 1),
        "cabin": Cabin.BUSINESS,
        "who": ["Ada"],
    }


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("seats", "5", "seats: Input should be a valid integer"),
        ("seats", True, "seats: Input should be a valid integer"),
        ("seats", 2.5, "seats: Input should be a valid integer"),
        ("price", "1e3", "price: Input should be a valid number"),
        ("price", "12.5", "price: Input should be a valid number"),
        ("refundable", "yes", "refundable: Input should be a valid boolean"),
        ("refundable", 1, "refundable: Input should be a valid boolean"),
        ("cabin", "first", "cabin: Input should be"),
        ("who", [{"name": "Ada", "age": "36"}], "who.0.age: Input should be a valid integer"),
    ],
)
async def test_values_the_schema_rejects_are_not_coerced(
    field: str, value: object, expected: str
) -> None:
    ran: list[object] = []

    @tool
    def probe(seats: int = 1, price: float = 0.0, refundable: bool = False) -> None:
        """Record a call."""
        ran.append((seats, price, refundable))

    with pytest.raises(ToolArgumentsInvalid) as caught:
        await reserve.call({**GOOD, field: value})
    assert expected in str(caught.value)
    if field in ("seats", "price", "refundable"):
        with pytest.raises(ToolArgumentsInvalid):
            await probe.call({field: value})
        assert ran == []  # the tool never ran with a coerced value


async def test_a_huge_argument_is_quoted_clipped() -> None:
    huge = "x" * 10_000_000
    with pytest.raises(ToolArgumentsInvalid) as caught:
        await reserve.call({**GOOD, "seats": huge})
    message = str(caught.value)
    assert len(message) < 2_000
    assert "[10000002 characters in all]" in message  # the repr, quotes included
    assert "seats: Input should be a valid integer" in message


async def test_many_errors_and_huge_names_are_bounded() -> None:
    arguments = {f"{'k' * 5_000}{i}": i for i in range(1_000)}
    with pytest.raises(ToolArgumentsInvalid) as caught:
        await reserve.call(arguments)
    message = str(caught.value)
    assert len(message) < 6_000
    assert "more problems" in message


async def test_schema_tools_clip_their_errors_too() -> None:
    async def handler(arguments: dict[str, Any], _: object) -> str:
        return "ran"

    mcp_like = Tool(
        "lookup",
        "Look up a code.",
        {"type": "object", "properties": {"code": {"type": "integer"}}, "required": ["code"]},
        handler,
    )
    with pytest.raises(ToolArgumentsInvalid) as caught:
        await mcp_like.call({"code": "9" * 1_000_000})
    assert len(str(caught.value)) < 2_000
    assert await mcp_like.call({"code": 9}) == "ran"
