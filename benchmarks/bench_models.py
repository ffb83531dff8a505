"""The offline model and the response cache: load, speed, structured output, cache hits.

    python benchmarks/bench_models.py              # medians of 5
    python benchmarks/bench_models.py --repeat 9
    python benchmarks/bench_models.py --json out.json

Runs SmolLM2-135M-Instruct (``local:smollm2``) in-process through llama.cpp. The load time
is the first load in this process (the file is usually in the OS page cache already).
Generation runs at temperature 0 with a fixed length so runs are comparable. Medians; the
machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cadenza.models import CachedModel, ModelRequest, generate_structured
from cadenza.models._local import LlamaCppModel


class Ticket(BaseModel):
    category: Literal["legal", "billing", "technical", "other"]
    urgent: bool
    summary: str


async def median_seconds(fn: Callable[[int], Awaitable[object]], repeat: int) -> float:
    times = []
    for i in range(repeat):
        started = time.perf_counter()
        await fn(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def main(repeat: int) -> dict[str, float]:
    model = LlamaCppModel("smollm2")
    figures: dict[str, float] = {}
    figures["load_s"] = await model.load()

    # Throughput: a fixed number of new tokens, no early stop.
    length = 128
    speeds = []
    for i in range(repeat):
        req = ModelRequest.of(
            f"Tell a long story about a lighthouse keeper, number {i}.",
            max_tokens=length,
            temperature=0,
        )
        started = time.perf_counter()
        reply = await model.request(req)
        speeds.append(reply.usage.output_tokens / (time.perf_counter() - started))
    figures["tokens_per_s"] = statistics.median(speeds)

    # A long prompt evaluated from scratch, then again with its prefix reused (the shape of
    # an agent loop: the conversation grows, the start stays the same).
    history = " ".join(
        f"Step {i}: the agent looked up order A-{i} and found it shipped." for i in range(50)
    )
    fresh = LlamaCppModel("smollm2", reuse_prompt_cache=False)

    async def prompt_eval(m: LlamaCppModel, i: int) -> None:
        await m.request(ModelRequest.of(f"{history} Question {i}: summarise.", max_tokens=1))

    figures["prompt_tokens"] = (
        await model.request(ModelRequest.of(f"{history} Question 0: summarise.", max_tokens=1))
    ).usage.input_tokens
    figures["prompt_fresh_s"] = await median_seconds(lambda i: prompt_eval(fresh, i), repeat)
    figures["prompt_reused_s"] = await median_seconds(lambda i: prompt_eval(model, i), repeat)

    # Time to the first streamed token.
    async def first_token(i: int) -> None:
        req = ModelRequest.of(f"Name a colour ({i}).", max_tokens=16, temperature=0)
        async for chunk in model.stream(req):
            if chunk.delta:
                break

    figures["first_token_s"] = await median_seconds(first_token, repeat)

    # Time to a schema-valid structured answer (grammar-constrained, validated).
    requests = [
        "Can you help me review my contract terms?",
        "I was charged twice for my subscription this month.",
        "The app crashes when I upload a photo.",
    ]
    attempts: list[int] = []

    async def structured(i: int) -> None:
        _, responses = await generate_structured(
            model,
            ModelRequest.of(
                f"Classify this support request: {requests[i % len(requests)]!r}",
                temperature=0,
                max_tokens=120,
            ),
            Ticket,
        )
        attempts.append(len(responses))

    figures["structured_s"] = await median_seconds(structured, repeat)
    figures["structured_attempts_max"] = max(attempts)

    # The response cache: a miss runs the model, a hit answers from memory.
    cached = CachedModel(model, ttl=timedelta(minutes=5))

    def ask(i: int) -> ModelRequest:
        return ModelRequest.of(f"Say a short greeting number {i}.", max_tokens=24, temperature=0)

    figures["cache_miss_s"] = await median_seconds(lambda i: cached.request(ask(i)), repeat)
    figures["cache_hit_s"] = await median_seconds(lambda i: cached.request(ask(i)), repeat)
    return figures


def show(figures: dict[str, float], repeat: int) -> None:
    rows = [
        ("model load (first, this process)", f"{figures['load_s'] * 1000:.0f} ms"),
        ("generation speed (128 new tokens)", f"{figures['tokens_per_s']:.0f} tokens/s"),
        (
            f"prompt of {figures['prompt_tokens']:.0f} tokens, from scratch",
            f"{figures['prompt_fresh_s'] * 1000:.0f} ms",
        ),
        ("  same prompt prefix reused", f"{figures['prompt_reused_s'] * 1000:.0f} ms"),
        ("time to first streamed token", f"{figures['first_token_s'] * 1000:.0f} ms"),
        ("time to schema-valid JSON (Ticket)", f"{figures['structured_s'] * 1000:.0f} ms"),
        ("  attempts needed (max)", f"{figures['structured_attempts_max']:.0f}"),
        ("cache miss (model call)", f"{figures['cache_miss_s'] * 1000:.1f} ms"),
        ("cache hit", f"{figures['cache_hit_s'] * 1_000_000:.0f} µs"),
    ]
    print(f"local:smollm2 on this machine, medians of {repeat}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>14}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = asyncio.run(main(args.repeat))
    show(results, args.repeat)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
