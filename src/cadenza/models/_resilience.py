"""Fallback chains and timeouts around models.

:class:`FallbackModel` tries its models in order and moves on when one fails with an error
of a configured class (by default the retryable ones: throttled, unavailable, timed out).
Any other error — a bad request, a schema failure — is the caller's to see and stops the
chain. The response's ``model`` says which model answered.

:class:`TimeoutModel` gives up on a call after a duration with :class:`ModelTimeout`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

from ..errors import ModelThrottled, ModelTimeout, ModelUnavailable
from ._base import Model, WrapperModel
from ._types import ModelRequest, ModelResponse, StreamChunk

__all__ = ["DEFAULT_FALLBACK_ON", "FallbackModel", "TimeoutModel"]

DEFAULT_FALLBACK_ON: tuple[type[BaseException], ...] = (
    ModelThrottled,
    ModelUnavailable,
    ModelTimeout,
)


class FallbackModel(Model):
    """Try ``models`` in order, moving on when one fails with an error in ``fallback_on``.

    ``FallbackModel([infer_model("bedrock:anthropic.claude-3-5-sonnet-20240620-v1:0"),
    infer_model("local:smollm2")])``

    When every model fails, the last error is raised, with a note naming each failure.
    """

    def __init__(
        self,
        models: Sequence[Model],
        *,
        fallback_on: tuple[type[BaseException], ...] = DEFAULT_FALLBACK_ON,
    ) -> None:
        if not models:
            raise ValueError("a fallback chain needs at least one model")
        self.models = list(models)
        self.fallback_on = fallback_on

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.models[0].name

    def _note(self, exc: BaseException, failures: list[tuple[str, BaseException]]) -> None:
        tried = "; ".join(f"{name}: {type(e).__name__}: {e}" for name, e in failures)
        exc.add_note(f"every model in the fallback chain failed ({tried})")

    async def request(self, req: ModelRequest) -> ModelResponse:
        failures: list[tuple[str, BaseException]] = []
        for index, model in enumerate(self.models):
            try:
                return await model.request(req)
            except self.fallback_on as exc:
                failures.append((model.name, exc))
                if index == len(self.models) - 1:
                    self._note(exc, failures)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        # A model that fails before its first chunk is skipped; once text has been yielded
        # the reply cannot be taken back, so later failures propagate.
        failures: list[tuple[str, BaseException]] = []
        for index, model in enumerate(self.models):
            started = False
            try:
                async for chunk in model.stream(req):
                    started = True
                    yield chunk
                return
            except self.fallback_on as exc:
                if started:
                    raise
                failures.append((model.name, exc))
                if index == len(self.models) - 1:
                    self._note(exc, failures)
                    raise

    async def aclose(self) -> None:
        for model in self.models:
            await model.aclose()

    def __repr__(self) -> str:
        return f"FallbackModel({self.models!r})"


class TimeoutModel(WrapperModel):
    """Fail a call to ``wrapped`` with :class:`ModelTimeout` when it takes longer than ``timeout``.

    For a stream the limit applies to the wait for each chunk, not to the whole reply. A
    call that runs in a worker thread (the local model, boto3) cannot be interrupted: the
    caller stops waiting, the thread finishes its call in the background.
    """

    def __init__(self, wrapped: Model, timeout: timedelta) -> None:
        super().__init__(wrapped)
        self.timeout = timeout

    def _error(self) -> ModelTimeout:
        return ModelTimeout(
            f"{self.wrapped.name} gave no reply within {self.timeout.total_seconds():g}s; "
            "raise the timeout or use a faster model"
        )

    async def request(self, req: ModelRequest) -> ModelResponse:
        try:
            async with asyncio.timeout(self.timeout.total_seconds()):
                return await self.wrapped.request(req)
        except TimeoutError as exc:
            raise self._error() from exc

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        chunks = aiter(self.wrapped.stream(req))
        try:
            while True:
                try:
                    async with asyncio.timeout(self.timeout.total_seconds()):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise self._error() from exc
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
