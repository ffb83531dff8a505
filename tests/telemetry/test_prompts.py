"""A model call keeps what it asked in its journal record — the system prompt and the
latest messages, within a bound — so the console and traces can show the prompt."""

from __future__ import annotations

import json

from cadenza import Context, workflow
from cadenza.agents import call_model
from cadenza.agents._calls import PROMPT_RECORD_CHARS, recorded_request
from cadenza.models import Message, ModelRequest
from cadenza.telemetry import model_call
from cadenza.testing import ScriptedModel, TestEnvironment

MODEL = ScriptedModel(default="Lisbon", name="scripted:prompts")


@workflow(name="prompt-record")
async def ask(ctx: Context, question: str) -> str:
    request = ModelRequest.of(question, system="Answer with one city.")
    return (await call_model(ctx, MODEL, request, name="ask")).text


async def test_the_prompt_is_in_the_model_calls_record(env: TestEnvironment) -> None:
    run = await env.run(ask, "Where is the Tagus estuary?")
    assert await env.result(run) == "Lisbon"
    [op] = await env.engine.store.load_journal(run.run_id)
    call = model_call(op)
    assert call is not None and call.reply == "Lisbon"
    assert call.prompt == [
        {"role": "system", "content": "Answer with one city."},
        {"role": "user", "content": "Where is the Tagus estuary?"},
    ]
    assert call.omitted_messages == 0


def test_a_long_conversation_keeps_the_system_prompt_and_the_latest_messages() -> None:
    turns = [Message.user(f"turn {i}: " + "x" * 1_000) for i in range(60)]
    request = ModelRequest.of(turns, system="You are terse.")
    recorded = recorded_request(request)
    size = len(json.dumps(recorded))
    assert size <= PROMPT_RECORD_CHARS + 200
    assert recorded["messages"][0] == {"role": "system", "content": "You are terse."}
    assert recorded["messages"][-1]["content"].startswith("turn 59:")
    assert recorded["omitted_messages"] == 60 - (len(recorded["messages"]) - 1)
    # One message too long on its own is cut, not dropped.
    huge = recorded_request(ModelRequest.of("y" * 100_000))
    assert huge["messages"][0]["content"].startswith("yyy")
    assert len(json.dumps(huge)) <= PROMPT_RECORD_CHARS + 200
