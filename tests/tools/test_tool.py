from __future__ import annotations

import asyncio
import threading
from datetime import date
from typing import Literal

import pytest
from pydantic import BaseModel

from cadenza.errors import ToolArgumentsInvalid
from cadenza.tools import Tool, ToolContext, tool, tool_result_text
from cadenza.tools._docstring import parse_docstring


class Address(BaseModel):
    street: str
    city: str


@tool
async def book_flight(
    ctx: ToolContext,
    destination: str,
    day: date,
    seats: int = 1,
    cabin: Literal["economy", "business"] = "economy",
) -> dict[str, object]:
    """Book a flight for the traveller.

    Args:
        destination: IATA code of the destination airport.
        day: Day of departure.
        seats: How many seats,
            at most nine.
        cabin: Cabin class.
    """
    return {"key": ctx.idempotency_key, "to": destination, "day": day, "seats": seats}


def test_schema_from_type_hints_and_docstring() -> None:
    assert book_flight.name == "book_flight"
    assert book_flight.description == "Book a flight for the traveller."
    schema = book_flight.parameters
    assert schema["type"] == "object"
    assert schema["required"] == ["destination", "day"]
    props = schema["properties"]
    assert set(props) == {"destination", "day", "seats", "cabin"}  # ctx is not a parameter
    assert props["destination"] == {
        "type": "string",
        "description": "IATA code of the destination airport.",
    }
    assert props["day"]["format"] == "date"
    assert props["seats"]["default"] == 1
    assert props["seats"]["description"] == "How many seats, at most nine."
    assert props["cabin"]["enum"] == ["economy", "business"]
    assert schema["additionalProperties"] is False
    assert book_flight.spec.name == "book_flight"


async def test_call_validates_parses_and_passes_the_idempotency_key() -> None:
    result = await book_flight.call(
        {"destination": "LIS", "day": "2026-05-01", "seats": 2}, idempotency_key="run-1/op-4"
    )
    assert result == {"key": "run-1/op-4", "to": "LIS", "day": date(2026, 5, 1), "seats": 2}


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"day": "2026-05-01"}, "destination: this parameter is required"),
        ({"destination": "LIS", "day": "soon"}, "day: Input should be a valid date"),
        ({"destination": "LIS", "day": "2026-05-01", "pets": 1}, "pets: there is no such"),
        ({"destination": "LIS", "day": "2026-05-01", "cabin": "first"}, "cabin: Input should"),
    ],
)
async def test_bad_arguments_get_a_message_a_model_can_act_on(
    arguments: dict[str, object], expected: str
) -> None:
    with pytest.raises(ToolArgumentsInvalid) as caught:
        await book_flight.call(arguments)
    message = str(caught.value)
    assert expected in message
    assert message.startswith("invalid arguments for tool 'book_flight'")
    assert "Call it again" in message
    assert caught.value.details["tool"] == "book_flight"


async def test_arguments_must_be_an_object() -> None:
    with pytest.raises(ToolArgumentsInvalid, match="JSON object"):
        await book_flight.call(["LIS"])  # type: ignore[arg-type]


async def test_sync_tools_run_off_the_event_loop() -> None:
    seen: list[str] = []

    @tool
    def where(label: str) -> str:
        """Report the thread."""
        seen.append(threading.current_thread().name)
        return label

    assert await where.call({"label": "x"}) == "x"
    assert seen and seen[0] != threading.main_thread().name


async def test_nested_models_and_options() -> None:
    @tool(name="ship", description="Ship a parcel.")
    async def ship_parcel(to: Address, weight_kg: float) -> str:
        return f"{to.city}:{weight_kg}"

    assert ship_parcel.name == "ship"
    assert ship_parcel.description == "Ship a parcel."
    assert "$defs" in ship_parcel.parameters
    assert await ship_parcel.call({"to": {"street": "R. A", "city": "Porto"}, "weight_kg": 2}) == (
        "Porto:2.0"
    )
    with pytest.raises(ToolArgumentsInvalid, match=r"to\.city: this parameter is required"):
        await ship_parcel.call({"to": {"street": "R. A"}, "weight_kg": 2})


async def test_context_by_annotation_under_any_name() -> None:
    @tool
    def whoami(context: ToolContext) -> str:
        """Names the tool."""
        return f"{context.tool_name}:{context.idempotency_key}"

    assert whoami.parameters["properties"] == {}
    assert await whoami.call({}, idempotency_key="k") == "whoami:k"


def test_unsupported_signatures_are_refused() -> None:
    def splat(*args: int) -> int:
        return 0

    with pytest.raises(TypeError, match=r"\*args"):
        Tool.from_function(splat)
    with pytest.raises(TypeError, match="name"):
        Tool.from_function(lambda x: x)


async def test_tool_from_schema_and_handler() -> None:
    async def handler(arguments: dict[str, object], ctx: ToolContext) -> object:
        return arguments["n"]

    echo = Tool(
        "echo",
        "Echo n",
        {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        handler,
    )
    assert await echo.call({"n": 3}) == 3
    with pytest.raises(ToolArgumentsInvalid, match="'n' is a required property"):
        await echo.call({})


def test_result_text() -> None:
    assert tool_result_text("plain") == "plain"
    assert tool_result_text({"a": date(2026, 1, 2)}) == '{"a": "2026-01-02"}'
    assert tool_result_text(Address(street="s", city="c")) == '{"street":"s","city":"c"}'


def test_docstring_styles() -> None:
    numpy = parse_docstring(
        """Search the catalogue.

        Longer explanation
        over two lines.

        Parameters
        ----------
        query : str
            Words to look for.
        limit : int, optional
            Most results.

        Returns
        -------
        list
            The hits.
        """
    )
    assert numpy == (
        "Search the catalogue.\n\nLonger explanation over two lines.",
        {"query": "Words to look for.", "limit": "Most results."},
    )
    sphinx = parse_docstring(
        """Fetch a page.

        :param url: The address.
        :param int timeout: Seconds to wait.
        :returns: The body.
        """
    )
    assert sphinx == ("Fetch a page.", {"url": "The address.", "timeout": "Seconds to wait."})
    google = parse_docstring(
        """Send mail.

        Args:
            to (str): Recipient.
            body: Text.

        Raises:
            ValueError: never.
        """
    )
    assert google == ("Send mail.", {"to": "Recipient.", "body": "Text."})
    assert parse_docstring(None) == ("", {})


async def test_concurrent_calls() -> None:
    @tool
    async def slow(n: int) -> int:
        """Wait a little."""
        await asyncio.sleep(0.01)
        return n

    assert await asyncio.gather(*(slow.call({"n": i}) for i in range(5))) == list(range(5))
