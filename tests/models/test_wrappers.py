"""Cache, rate limit, fallback, timeout and budget wrappers, driven by scripted models."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from cadenza.errors import (
    BudgetExceeded,
    ModelError,
    ModelThrottled,
    ModelTimeout,
    ModelUnavailable,
)
from cadenza.models import (
    BudgetedModel,
    BudgetTracker,
    CachedModel,
    FallbackModel,
    InMemoryCacheStore,
    ModelRequest,
    ModelResponse,
    RateLimitedModel,
    TimeoutModel,
    TokenBucket,
    Usage,
    register_price,
)
from cadenza.testing import FakeClock
from cadenza.testing.scripted_model import ScriptedModel


async def settle() -> None:
    """Let every ready task run until it blocks (on the fake clock, say)."""
    for _ in range(10):
        await asyncio.sleep(0)


# --- cache ---------------------------------------------------------------------------------


async def test_cache_hit_returns_the_same_reply_marked_and_free() -> None:
    inner = ScriptedModel(["first", "second"])
    model = CachedModel(inner, ttl=timedelta(minutes=5))
    req = ModelRequest.of("What is 2+2?")

    miss = await model.request(req)
    hit = await model.request(ModelRequest.of("What is 2+2?"))  # an equal, separate request

    assert (miss.text, hit.text) == ("first", "first")
    assert len(inner.requests) == 1
    assert not miss.cache_hit and hit.cache_hit
    assert miss.usage.requests == 1 and hit.usage == Usage()
    # a different request is a different key
    assert (await model.request(ModelRequest.of("What is 3+3?"))).text == "second"


async def test_cache_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    inner = ScriptedModel(["old", "new"])
    model = CachedModel(inner, ttl=timedelta(seconds=30), clock=clock)
    req = ModelRequest.of("Weather?")

    assert (await model.request(req)).text == "old"
    clock.advance(29)
    assert (await model.request(req)).cache_hit
    clock.advance(2)
    fresh = await model.request(req)
    assert (fresh.text, fresh.cache_hit) == ("new", False)
    assert len(inner.requests) == 2


async def test_a_cache_store_ages_entries_by_its_clock() -> None:
    clock = FakeClock()
    store = InMemoryCacheStore(clock=clock)
    await store.set("k", {"v": 1}, timedelta(minutes=1))
    clock.advance(timedelta(seconds=59))
    assert await store.get("k") == {"v": 1}
    clock.advance(timedelta(seconds=1))
    assert await store.get("k") is None


async def test_cache_key_depends_on_options_and_model() -> None:
    inner = ScriptedModel(["a", "b", "c"])
    model = CachedModel(inner)
    await model.request(ModelRequest.of("Hi"))
    await model.request(ModelRequest.of("Hi", temperature=0.5))
    await model.request(ModelRequest.of("Hi", output_schema={"type": "object"}))
    assert len(inner.requests) == 3


async def test_concurrent_identical_requests_call_the_model_once() -> None:
    inner = ScriptedModel(["only"], delay=0.05)
    model = CachedModel(inner)
    replies = await asyncio.gather(*(model.request(ModelRequest.of("Hi")) for _ in range(5)))
    assert {r.text for r in replies} == {"only"}
    assert len(inner.requests) == 1


async def test_cache_store_is_bounded() -> None:
    store = InMemoryCacheStore(max_entries=2)
    model = CachedModel(ScriptedModel(default="x"), store=store)
    for prompt in ("a", "b", "c"):
        await model.request(ModelRequest.of(prompt))
    assert len(store) == 2


async def test_streamed_reply_is_cached() -> None:
    inner = ScriptedModel(["streamed words"])
    model = CachedModel(inner)
    first = [c async for c in model.stream(ModelRequest.of("Hi"))]
    second = [c async for c in model.stream(ModelRequest.of("Hi"))]
    assert first[-1].response is not None and first[-1].response.text == "streamed words"
    assert second[-1].response is not None and second[-1].response.cache_hit
    assert len(inner.requests) == 1


# --- rate limits ---------------------------------------------------------------------------


async def test_request_rate_is_enforced() -> None:
    clock = FakeClock()
    model = RateLimitedModel(ScriptedModel(default="ok"), requests_per_minute=2, clock=clock)
    for _ in range(2):
        await model.request(ModelRequest.of("Hi"))
    third = asyncio.create_task(model.request(ModelRequest.of("Hi")))
    # the bucket holds 2 requests and refills one every 30 s: the third call waits 30 s
    clock.advance(29.9)
    await settle()
    assert not third.done()
    clock.advance(0.1)
    assert (await asyncio.wait_for(third, timeout=1)).text == "ok"


async def test_token_rate_is_charged_with_real_usage() -> None:
    clock = FakeClock()
    reply = ModelResponse("long", usage=Usage(input_tokens=500, output_tokens=500))
    model = RateLimitedModel(ScriptedModel(default=reply), tokens_per_minute=1200, clock=clock)
    await model.request(ModelRequest.of("Hi", max_tokens=300))  # estimated 300, really 1000
    second = asyncio.create_task(model.request(ModelRequest.of("Hi", max_tokens=300)))
    # 200 tokens were left after the correction; 100 more refill in 5 s (20 per second)
    clock.advance(4.9)
    await settle()
    assert not second.done()
    clock.advance(0.1)
    await asyncio.wait_for(second, timeout=1)
    assert model.tokens is not None and model.tokens.level == pytest.approx(-700)


async def test_a_fake_clock_advance_refills_the_bucket_without_waiting() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, per=timedelta(seconds=10), clock=clock)
    assert await bucket.take(10) == 0
    assert bucket.level == 0
    clock.advance(4)
    assert bucket.level == pytest.approx(4)
    assert await asyncio.wait_for(bucket.take(4), timeout=1) == 0  # no wait: refilled


async def test_short_real_window() -> None:
    model = RateLimitedModel(
        ScriptedModel(default="ok"), requests_per_minute=2, per=timedelta(milliseconds=200)
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(4):
        await model.request(ModelRequest.of("Hi"))
    # 2 at once, then one per 100 ms
    assert loop.time() - started >= 0.18


async def test_concurrency_cap() -> None:
    model = RateLimitedModel(ScriptedModel(default="ok", delay=0.02), max_concurrency=2)
    await asyncio.gather(*(model.request(ModelRequest.of(str(i))) for i in range(6)))
    assert model.peak_in_flight == 2


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0)
    with pytest.raises(ValueError):
        RateLimitedModel(ScriptedModel(), max_concurrency=0)


# --- fallback ------------------------------------------------------------------------------


async def test_throttled_primary_falls_back_and_records_who_answered() -> None:
    primary = ScriptedModel(name="primary").fail(ModelThrottled("slow down"))
    backup = ScriptedModel(["from backup"], name="backup")
    model = FallbackModel([primary, backup])

    reply = await model.request(ModelRequest.of("Hi"))

    assert reply.text == "from backup"
    assert reply.model == "scripted:backup"
    assert len(primary.requests) == len(backup.requests) == 1


async def test_errors_outside_the_set_do_not_fall_back() -> None:
    primary = ScriptedModel(name="primary").fail(ModelError("bad request"))
    backup = ScriptedModel(["unused"], name="backup")
    with pytest.raises(ModelError, match="bad request"):
        await FallbackModel([primary, backup]).request(ModelRequest.of("Hi"))
    assert backup.requests == []


async def test_fallback_classes_are_configurable() -> None:
    primary = ScriptedModel(name="primary").fail(ValueError("odd"))
    backup = ScriptedModel(["ok"], name="backup")
    model = FallbackModel([primary, backup], fallback_on=(ValueError,))
    assert (await model.request(ModelRequest.of("Hi"))).text == "ok"


async def test_all_failing_raises_the_last_error_naming_every_failure() -> None:
    a = ScriptedModel(name="a").fail(ModelThrottled("a is busy"))
    b = ScriptedModel(name="b").fail(ModelUnavailable("b is down"))
    with pytest.raises(ModelUnavailable) as caught:
        await FallbackModel([a, b]).request(ModelRequest.of("Hi"))
    assert caught.value.retryable
    note = "\n".join(caught.value.__notes__)
    assert "a is busy" in note and "b is down" in note


async def test_stream_falls_back_before_the_first_chunk() -> None:
    primary = ScriptedModel(name="primary").fail(ModelUnavailable("down"))
    backup = ScriptedModel(["hello there"], name="backup")
    chunks = [c async for c in FallbackModel([primary, backup]).stream(ModelRequest.of("Hi"))]
    assert chunks[-1].response is not None and chunks[-1].response.model == "scripted:backup"


# --- timeout -------------------------------------------------------------------------------


async def test_slow_model_times_out() -> None:
    model = TimeoutModel(ScriptedModel(default="late", delay=1.0), timedelta(milliseconds=50))
    with pytest.raises(ModelTimeout, match=r"within 0\.05s") as caught:
        await model.request(ModelRequest.of("Hi"))
    assert caught.value.retryable


async def test_timeout_then_fallback_to_a_fast_model() -> None:
    slow = TimeoutModel(ScriptedModel(default="late", delay=1.0), timedelta(milliseconds=50))
    fast = ScriptedModel(["quick"], name="fast")
    assert (await FallbackModel([slow, fast]).request(ModelRequest.of("Hi"))).text == "quick"


async def test_stream_timeout_per_chunk() -> None:
    model = TimeoutModel(ScriptedModel(default="late", delay=1.0), timedelta(milliseconds=50))
    with pytest.raises(ModelTimeout):
        async for _ in model.stream(ModelRequest.of("Hi")):
            pass


# --- budget --------------------------------------------------------------------------------


async def test_budget_refuses_calls_once_spent() -> None:
    register_price("scripted:priced", input=1000.0, output=1000.0)  # $0.001 per token
    usage = Usage(input_tokens=4, output_tokens=6)
    inner = ScriptedModel(default=ModelResponse("x", usage=usage), name="priced")
    tracker = BudgetTracker(max_cost_usd=0.025)
    model = BudgetedModel(inner, tracker)

    await model.request(ModelRequest.of("1"))
    await model.request(ModelRequest.of("2"))
    # The third starts at $0.02 < $0.025 and ends at $0.03: its reply is not handed out.
    with pytest.raises(BudgetExceeded, match="went over the budget") as over:
        await model.request(ModelRequest.of("3"))
    assert "$0.0300 of $0.0250" in str(over.value)
    with pytest.raises(BudgetExceeded) as caught:
        await model.request(ModelRequest.of("4"))

    assert len(inner.requests) == 3
    assert "$0.0300 of $0.0250" in str(caught.value)
    assert not caught.value.retryable
    assert tracker.usage.total_tokens == 30
    assert tracker.cost_usd == pytest.approx(0.03)


async def test_token_budget_caps_max_tokens_and_refuses_a_reply_over_it() -> None:
    huge = ModelResponse("x", usage=Usage(input_tokens=2, output_tokens=2_000_000))
    inner = ScriptedModel(["a b c", huge], name="huge")
    tracker = BudgetTracker(max_tokens=1000)
    model = BudgetedModel(inner, tracker)

    await model.request(ModelRequest.of("x y", max_tokens=4000))  # 2 in + 3 out
    # Never more than the budget, rounded down to a power of two (stable cache keys).
    assert inner.requests[0].max_tokens == 512
    with pytest.raises(BudgetExceeded, match="2000007 of 1000 tokens"):
        await model.request(ModelRequest.of("again", max_tokens=4000))
    assert inner.requests[1].max_tokens == 512  # 995 left
    with pytest.raises(BudgetExceeded, match="exhausted"):
        await model.request(ModelRequest.of("more"))
    assert len(inner.requests) == 2


async def test_token_budget_shared_by_two_models() -> None:
    tracker = BudgetTracker(max_tokens=10)
    a = BudgetedModel(ScriptedModel(default="one two three", name="a"), tracker)
    b = BudgetedModel(ScriptedModel(default="four five", name="b"), tracker)
    await a.request(ModelRequest.of("x y"))  # 2 in + 3 out
    await b.request(ModelRequest.of("x y z"))  # 3 in + 2 out
    with pytest.raises(BudgetExceeded, match="used 10 of 10 tokens"):
        await a.request(ModelRequest.of("again"))
    assert set(tracker.by_model) == {"scripted:a", "scripted:b"}


async def test_cache_hits_do_not_spend_budget() -> None:
    tracker = BudgetTracker(max_tokens=5)
    model = BudgetedModel(CachedModel(ScriptedModel(default="a b c")), tracker)
    for _ in range(5):  # max_tokens under the budget: the cap leaves the cache key alone
        await model.request(ModelRequest.of("x", max_tokens=1))
    assert tracker.usage.total_tokens == 4
