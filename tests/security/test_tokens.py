"""Callback tokens: unforgeable, bound to their run and operation, expiring, used once
(Guarantee 6), and the deployment secret that signs them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cadenza import (
    CallbackAlreadyCompleted,
    CallbackTimedOut,
    CallbackTokenExpired,
    ConfigurationError,
    Context,
    Engine,
    InvalidCallbackToken,
    RunStatus,
    drive,
    open_engine,
    workflow,
)
from cadenza.clock import parse_iso
from cadenza.errors import RunStateError
from cadenza.security import CallbackTokens, TokenClaims, load_secret
from cadenza.testing import FakeClock, TestEnvironment

SECRET = b"0123456789abcdef-the-real-secret"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signed(body: str, secret: bytes = SECRET) -> str:
    """A token whose signature is genuine, whatever its claims say."""
    signature = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    return f"cdz1.{body}.{signature}"


def _with_claims(token: str, **changes: object) -> str:
    """``token`` with some claims changed but the original signature kept."""
    prefix, body, signature = token.split(".")
    claims = json.loads(_unb64(body))
    claims.update(changes)
    altered = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{prefix}.{altered}.{signature}"


# --- CallbackTokens -------------------------------------------------------------------


def test_a_token_verifies_to_the_claims_it_was_issued_with() -> None:
    tokens = CallbackTokens(SECRET)
    token = tokens.issue("cb-1", "r-42", "3.1", LATER)
    assert tokens.verify(token, now=NOW) == TokenClaims("cb-1", "r-42", "3.1", LATER)
    # Pasted from a terminal or a mail, with the line break that comes along.
    assert tokens.verify(f"  {token}\n", now=NOW).run_id == "r-42"


@pytest.mark.parametrize(
    "claim, value",
    [
        ("r", "r-43"),
        ("o", "3.2"),
        ("c", "cb-2"),
        ("e", int((LATER + timedelta(days=9)).timestamp())),
    ],
)
def test_altering_any_claim_breaks_the_signature(claim: str, value: object) -> None:
    tokens = CallbackTokens(SECRET)
    altered = _with_claims(tokens.issue("cb-1", "r-42", "3.1", LATER), **{claim: value})
    with pytest.raises(InvalidCallbackToken, match="signature does not match"):
        tokens.verify(altered, now=NOW)


def test_an_altered_signature_is_refused() -> None:
    tokens = CallbackTokens(SECRET)
    token = tokens.issue("cb-1", "r-42", "3.1", LATER)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(InvalidCallbackToken):
        tokens.verify(flipped, now=NOW)


def test_a_token_of_another_deployment_is_refused() -> None:
    theirs = CallbackTokens(b"another-deployment-secret-value").issue("cb-1", "r-42", "3.1", LATER)
    with pytest.raises(InvalidCallbackToken, match="CADENZA_SECRET"):
        CallbackTokens(SECRET).verify(theirs, now=NOW)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "approve",
        "cdz1",
        "cdz1.only-two",
        "cdz1.a.b.c",
        "cdz2.eyJjIjoiY2IifQ.c2ln",
        "Bearer cdz1.x.y",
    ],
)
def test_malformed_strings_are_refused_with_a_hint(text: str) -> None:
    with pytest.raises(InvalidCallbackToken, match=r"cdz1\.<claims>\.<signature>"):
        CallbackTokens(SECRET).verify(text, now=NOW)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t[:-1] + "é",  # in the signature
        lambda t: t.replace(".", ".é", 1),  # in the claims
        lambda t: t.replace(".", "\u202e.", 1),  # an invisible right-to-left override
        lambda t: t[:10] + "\udcff" + t[10:],  # an undecodable byte from the command line
        lambda t: t + "\x07",
    ],
)
def test_a_token_with_characters_no_token_has_is_refused_not_a_crash(change: Any) -> None:
    tokens = CallbackTokens(SECRET)
    token = tokens.issue("cb-1", "r-42", "1", LATER)
    with pytest.raises(InvalidCallbackToken, match="contains characters no token has"):
        tokens.verify(change(token), now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        _b64(b"not json"),
        _b64(b'{"c": "cb-1", "r": "r-42"}'),  # no operation, no expiry
        _b64(b'{"c": "cb-1", "r": "r-42", "o": "1", "e": "soon"}'),
        _b64(b"[1, 2, 3]"),
        _b64(b'{"c": "cb-1", "r": "r-42", "o": "1", "e": 1e300}'),  # no such time
        "%%%",
    ],
)
def test_signed_but_malformed_claims_are_refused(body: str) -> None:
    with pytest.raises(InvalidCallbackToken, match="malformed"):
        CallbackTokens(SECRET).verify(_signed(body), now=NOW)


def test_an_expired_token_says_when_and_which_run() -> None:
    tokens = CallbackTokens(SECRET)
    token = tokens.issue("cb-1", "r-42", "3.1", LATER)
    tokens.verify(token, now=LATER - timedelta(seconds=1))
    for now in (LATER, LATER + timedelta(days=3)):
        with pytest.raises(CallbackTokenExpired) as caught:
            tokens.verify(token, now=now)
        message = str(caught.value)
        assert "expired at 2026-03-01T13:00:00Z" in message
        assert "r-42" in message and "3.1" in message
        assert "cadenza runs show r-42" in message


def test_a_token_lives_as_long_as_its_callback_to_the_second() -> None:
    tokens = CallbackTokens(SECRET)
    deadline = LATER + timedelta(milliseconds=500)  # claims carry whole seconds
    token = tokens.issue("cb-1", "r-42", "3.1", deadline)
    tokens.verify(token, now=deadline - timedelta(microseconds=1))
    with pytest.raises(CallbackTokenExpired):
        tokens.verify(token, now=deadline + timedelta(seconds=1))


def test_a_secret_shorter_than_16_bytes_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="16 bytes"):
        CallbackTokens(b"short")


# --- the deployment secret ------------------------------------------------------------


def test_the_secret_file_is_created_private_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CADENZA_SECRET", raising=False)
    home = tmp_path / "not-yet-there"
    first = load_secret(home)
    path = home / "secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert load_secret(home) == first
    assert load_secret(tmp_path / "elsewhere") != first


def test_cadenza_secret_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CADENZA_SECRET", raising=False)
    from_file = load_secret(tmp_path)
    monkeypatch.setenv("CADENZA_SECRET", "shared-by-every-worker-of-the-cluster")
    assert load_secret(tmp_path) == b"shared-by-every-worker-of-the-cluster"
    assert (tmp_path / "secret").read_bytes().strip() == from_file  # left alone


def test_a_truncated_secret_file_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CADENZA_SECRET", raising=False)
    (tmp_path / "secret").write_bytes(b"\n")
    with pytest.raises(ConfigurationError, match="at least 16 bytes"):
        CallbackTokens(load_secret(tmp_path))


async def test_tokens_signed_under_one_secret_fail_under_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CADENZA_HOME", str(tmp_path))
    monkeypatch.delenv("CADENZA_STORE", raising=False)
    monkeypatch.delenv("CADENZA_SECRET", raising=False)
    engine = await open_engine()
    try:
        run = await engine.start(approval, "invoice-7")
        token = await _pending_token(engine, run.run_id)
    finally:
        await engine.close()
    monkeypatch.setenv("CADENZA_SECRET", "a-different-secret-for-this-worker")
    engine = await open_engine()
    try:
        with pytest.raises(InvalidCallbackToken, match="another secret"):
            await engine.succeed_callback(token, {"ok": True})
        assert (await engine.store.get_run(run.run_id)).status == RunStatus.SUSPENDED
    finally:
        await engine.close()


async def _pending_token(engine: Engine, run_id: str) -> str:
    """Run until the run waits, and issue its callback's token as the CLI prints it."""
    await drive(engine, run_id, linger=timedelta(0))
    journal = {op.op_id: op for op in await engine.store.load_journal(run_id)}
    (callback,) = await engine.store.load_callbacks(run_id)
    expires_at = parse_iso(journal[callback.op_id].data["token_expires_at"])
    return engine.tokens.issue(callback.callback_id, run_id, callback.op_id, expires_at)


# --- through the engine ---------------------------------------------------------------


@workflow(name="sec-approval")
async def approval(ctx: Context, subject: str) -> str:
    callback = await ctx.create_callback(name="approve", timeout=timedelta(hours=2))
    try:
        answer = await callback.result()
    except CallbackTimedOut:
        return f"{subject}: nobody answered"
    return f"{subject}: {answer['verdict']}"


@workflow(name="sec-two-callbacks")
async def two_callbacks(ctx: Context) -> list[object]:
    first = await ctx.create_callback(name="first")
    second = await ctx.create_callback(name="second")
    return [await first.result(), await second.result()]


@workflow(name="sec-heartbeat")
async def long_job(ctx: Context) -> str:
    callback = await ctx.create_callback(name="job", heartbeat_timeout=timedelta(minutes=10))
    try:
        answer = await callback.result()
    except CallbackTimedOut as exc:
        return f"gave up: {exc.message}"
    return f"done: {answer}"


async def test_a_forged_token_changes_nothing(env: TestEnvironment) -> None:
    run = await env.run(approval, "invoice-1")
    token = await env.token(run)
    forged = [
        _with_claims(token, e=int((datetime.now(UTC) + timedelta(days=99)).timestamp())),
        _signed(token.split(".")[1], b"guessed-secret-guessed-secret!!"),
        token.replace("cdz1.", "cdz1.x"),
    ]
    for fake in forged:
        with pytest.raises(InvalidCallbackToken):
            await env.succeed(fake, {"verdict": "approved"})
        with pytest.raises(InvalidCallbackToken):
            await env.engine.heartbeat_callback(fake)
    assert (await env.resume(run)).status == RunStatus.SUSPENDED
    assert await env.tokens(run) == [token]  # still pending, the genuine token still works
    await env.succeed(token, {"verdict": "approved"})
    assert await env.result(await env.resume(run)) == "invoice-1: approved"


async def test_an_expired_token_is_refused_and_the_run_times_out(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(approval, "invoice-2")
    token = await fake_env.token(run)
    await fake_env.advance(timedelta(hours=2, seconds=1))
    with pytest.raises(CallbackTokenExpired, match=run.run_id) as caught:
        await fake_env.succeed(token, {"verdict": "approved"})
    assert f"cadenza runs show {run.run_id}" in str(caught.value)
    with pytest.raises(CallbackTokenExpired):
        await fake_env.engine.heartbeat_callback(token)
    run = await fake_env.resume(run)
    assert await fake_env.result(run) == "invoice-2: nobody answered"
    assert "CallbackSucceeded" not in await fake_env.history(run)


@workflow(name="sec-quick-answer")
async def quick_answer(ctx: Context) -> object:
    callback = await ctx.create_callback(name="ping", timeout=timedelta(milliseconds=800))
    return await callback.result()


async def test_a_callback_with_a_sub_second_timeout_can_be_completed_in_time() -> None:
    clock = FakeClock(datetime(2026, 1, 1, 9, 0, 0, 100_000, tzinfo=UTC))
    async with TestEnvironment(clock=clock) as env:
        run = await env.run(quick_answer)
        await env.advance(timedelta(milliseconds=700))
        await env.succeed(await env.token(run), "pong")
        assert await env.result(await env.resume(run)) == "pong"


async def test_a_genuine_token_bound_to_another_run_is_refused(env: TestEnvironment) -> None:
    mine = await env.run(approval, "mine")
    theirs = await env.run(approval, "theirs")
    their_callback = (await env.engine.store.load_callbacks(theirs.run_id))[0]
    # Signed with the real secret, naming their callback but claiming my run.
    crafted = env.engine.tokens.issue(
        their_callback.callback_id, mine.run_id, their_callback.op_id, LATER + timedelta(days=3650)
    )
    with pytest.raises(InvalidCallbackToken, match="another run or operation"):
        await env.succeed(crafted, {"verdict": "approved"})
    unknown = env.engine.tokens.issue(
        "no-such-callback", mine.run_id, "1", LATER + timedelta(days=3650)
    )
    with pytest.raises(InvalidCallbackToken, match="no-such-callback"):
        await env.succeed(unknown, {"verdict": "approved"})
    for run in (mine, theirs):
        assert (await env.resume(run)).status == RunStatus.SUSPENDED


async def test_a_genuine_token_bound_to_another_operation_is_refused(
    env: TestEnvironment,
) -> None:
    run = await env.run(two_callbacks)
    first, second = sorted(
        await env.engine.store.load_callbacks(run.run_id), key=lambda cb: cb.op_id
    )
    crafted = env.engine.tokens.issue(
        first.callback_id, run.run_id, second.op_id, LATER + timedelta(days=3650)
    )
    with pytest.raises(InvalidCallbackToken, match="another run or operation"):
        await env.succeed(crafted, "wrong")
    first_token, second_token = await env.tokens(run)
    await env.succeed(second_token, "two")
    await env.succeed(first_token, "one")
    assert await env.result(await env.resume(run)) == ["one", "two"]


async def test_a_token_completes_its_callback_once(env: TestEnvironment) -> None:
    run = await env.run(approval, "invoice-3")
    token = await env.token(run)
    await env.succeed(token, {"verdict": "approved"})
    # Before the run moved on, and after: the second answer is refused, whatever it says.
    with pytest.raises(CallbackAlreadyCompleted, match="completes its callback once"):
        await env.succeed(token, {"verdict": "rejected"})
    with pytest.raises(CallbackAlreadyCompleted):
        await env.fail(token, "Rejected", "changed my mind")
    run = await env.resume(run)
    assert await env.result(run) == "invoice-3: approved"
    with pytest.raises(CallbackAlreadyCompleted):
        await env.succeed(token, {"verdict": "rejected"})
    with pytest.raises(CallbackAlreadyCompleted):
        await env.engine.heartbeat_callback(token)
    assert await env.result(run) == "invoice-3: approved"
    assert (await env.history(run)).count("CallbackSucceeded") == 1


async def test_racing_completions_let_exactly_one_through(env: TestEnvironment) -> None:
    run = await env.run(approval, "invoice-4")
    token = await env.token(run)
    verdicts = [f"verdict-{i}" for i in range(8)]
    outcomes = await asyncio.gather(
        *(env.succeed(token, {"verdict": v}) for v in verdicts), return_exceptions=True
    )
    winners = [v for v, outcome in zip(verdicts, outcomes, strict=True) if outcome is None]
    assert len(winners) == 1
    assert all(
        isinstance(outcome, CallbackAlreadyCompleted) for outcome in outcomes if outcome is not None
    )
    assert await env.result(await env.resume(run)) == f"invoice-4: {winners[0]}"


async def test_heartbeats_keep_a_callback_alive_past_its_heartbeat_timeout(
    fake_env: TestEnvironment,
) -> None:
    run = await fake_env.run(long_job)
    token = await fake_env.token(run)
    for _ in range(4):  # 36 minutes, never 10 in a row without a heartbeat
        await fake_env.advance(timedelta(minutes=9))
        await fake_env.engine.heartbeat_callback(token)
        assert (await fake_env.resume(run)).status == RunStatus.SUSPENDED
    await fake_env.advance(timedelta(minutes=9))
    await fake_env.succeed(token, "42 rows")
    assert await fake_env.result(await fake_env.resume(run)) == "done: 42 rows"


async def test_silence_times_a_heartbeat_callback_out(fake_env: TestEnvironment) -> None:
    run = await fake_env.run(long_job)
    token = await fake_env.token(run)
    await fake_env.advance(timedelta(minutes=9))
    await fake_env.engine.heartbeat_callback(token)
    await fake_env.advance(timedelta(minutes=10))  # silent for a whole heartbeat timeout
    with pytest.raises(CallbackTokenExpired):
        await fake_env.engine.heartbeat_callback(token)  # too late to revive it
    run = await fake_env.resume(run)
    result = await fake_env.result(run)
    assert result.startswith("gave up: callback 'job' missed its heartbeat"), result
    assert "CallbackTimedOut" in await fake_env.history(run)
    with pytest.raises(CallbackAlreadyCompleted):
        await fake_env.succeed(token, "late")


def test_load_secret_does_not_follow_umask_into_a_readable_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CADENZA_SECRET", raising=False)
    previous = os.umask(0)
    try:
        load_secret(tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600


async def test_the_tokens_of_a_cancelled_run_complete_nothing(env: TestEnvironment) -> None:
    run = await env.run(approval, "invoice-5")
    token = await env.token(run)
    await env.engine.cancel(run.run_id)
    with pytest.raises(RunStateError, match="its callbacks are closed"):
        await env.succeed(token, {"verdict": "approved"})
    with pytest.raises(RunStateError, match="its callbacks are closed"):
        await env.fail(token, "Rejected")
    assert (await env.engine.store.get_run(run.run_id)).status == RunStatus.CANCELLED


async def test_a_heartbeat_for_a_cancelled_run_is_refused(env: TestEnvironment) -> None:
    run = await env.run(long_job)
    token = await env.token(run)
    await env.engine.cancel(run.run_id)
    with pytest.raises(RunStateError):
        await env.engine.heartbeat_callback(token)
