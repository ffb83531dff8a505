from __future__ import annotations

import sys
from typing import Literal

import pytest
from pydantic import BaseModel

from cadenza.errors import StructuredOutputError
from cadenza.models import ModelRequest, extract_json, generate_structured, schema_errors
from cadenza.models._json import _Validator
from cadenza.testing.scripted_model import ScriptedModel


class Ticket(BaseModel):
    category: Literal["legal", "billing", "technical"]
    urgent: bool


class Order(BaseModel):
    items: list[Ticket]


async def test_valid_reply_first_time_and_schema_is_sent() -> None:
    model = ScriptedModel(['{"category": "legal", "urgent": false}'])
    ticket, responses = await generate_structured(model, "Review my contract", Ticket)
    assert ticket == Ticket(category="legal", urgent=False)
    assert len(responses) == 1
    sent = model.requests[0].output_schema
    assert sent is not None and sent["properties"]["category"]["enum"] == [
        "legal",
        "billing",
        "technical",
    ]


async def test_fenced_json_and_leading_prose_are_tolerated() -> None:
    model = ScriptedModel(
        ['Sure! Here it is:\n```json\n{"category": "billing", "urgent": true}\n```\nAnything else?']
    )
    ticket, _ = await generate_structured(model, "Refund please", Ticket)
    assert ticket.category == "billing"


async def test_garbage_is_repaired_with_the_errors_shown_to_the_model() -> None:
    model = ScriptedModel(
        [
            "I think it is legal.",
            '{"category": "lawyer", "urgent": false}',
            '{"category": "legal", "urgent": false}',
        ]
    )
    ticket, responses = await generate_structured(model, "Contract?", Ticket, max_repairs=2)
    assert ticket.category == "legal"
    assert len(responses) == 3
    repair = model.requests[2].messages
    assert repair[-2].role == "assistant" and "lawyer" in repair[-2].content
    assert repair[-1].role == "user" and "category" in repair[-1].content


async def test_repairs_are_bounded_and_the_raw_reply_is_kept() -> None:
    model = ScriptedModel(default="no JSON here, sorry")
    with pytest.raises(StructuredOutputError) as caught:
        await generate_structured(model, "Contract?", Ticket, max_repairs=2)
    assert len(model.requests) == 3
    error = caught.value
    assert error.raw_reply == "no JSON here, sorry"
    assert error.errors and "no JSON" in error.errors[0]
    assert error.details["raw_reply"] == "no JSON here, sorry"
    assert "after 3 attempts" in str(error)


async def test_zero_repairs_means_one_attempt() -> None:
    model = ScriptedModel(default='{"category": 1}')
    with pytest.raises(StructuredOutputError):
        await generate_structured(model, "x", Ticket, max_repairs=0)
    assert len(model.requests) == 1


async def test_dict_schema_and_nested_models() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}},
        "required": ["n"],
    }
    model = ScriptedModel(['{"n": 0}', '{"n": 3}'])
    value, responses = await generate_structured(model, "pick", schema)
    assert value == {"n": 3} and len(responses) == 2

    nested = ScriptedModel(['{"items": [{"category": "technical", "urgent": true}]}'])
    order, _ = await generate_structured(nested, "x", Order)
    assert order.items[0].urgent


async def test_existing_request_keeps_its_options() -> None:
    model = ScriptedModel(['{"category": "legal", "urgent": true}'])
    await generate_structured(
        model, ModelRequest.of("x", system="be strict", max_tokens=50), Ticket
    )
    assert model.requests[0].max_tokens == 50
    assert model.requests[0].system_prompt == "be strict"


def test_extract_json_variants() -> None:
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json("```\n[1, 2]\n```") == [1, 2]
    assert extract_json('The answer: {"a": {"b": 2}} hope that helps') == {"a": {"b": 2}}
    assert extract_json('junk {not json} then {"ok": true}') == {"ok": True}
    with pytest.raises(ValueError, match="no JSON"):
        extract_json("nothing")


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 2},
        "count": {"type": "integer", "maximum": 5},
        "kind": {"$ref": "#/$defs/Kind"},
    },
    "required": ["name"],
    "additionalProperties": False,
    "$defs": {"Kind": {"anyOf": [{"const": "x"}, {"type": "null"}]}},
}

BAD = {"name": "z", "tags": ["a", "c", "b"], "count": "7", "kind": "y", "extra": 1}


def test_minimal_validator_agrees_with_jsonschema_on_what_fails() -> None:
    assert schema_errors({"name": "ok", "kind": None}, SCHEMA) == []
    full = schema_errors(BAD, SCHEMA)
    minimal = _Validator(SCHEMA).errors(BAD, SCHEMA, "$")
    assert len(full) == len(minimal) == 6
    assert _Validator(SCHEMA).errors({"name": "ok", "kind": "x"}, SCHEMA, "$") == []
    assert _Validator({"type": "integer"}).errors(True, {"type": "integer"}, "$")


def test_minimal_validator_is_used_without_jsonschema(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    errors = schema_errors({"count": 1}, SCHEMA)
    assert errors == ["$: 'name' is a required property"]


def test_raw_newlines_inside_strings_are_accepted() -> None:
    """Small local models write literal newlines in JSON strings; the reply is still usable."""
    from cadenza.models import extract_json

    reply = '{"scores": {"coverage": 0.4}, "critique": "too short\nadd the fees"}'
    assert extract_json(reply) == {
        "scores": {"coverage": 0.4},
        "critique": "too short\nadd the fees",
    }
