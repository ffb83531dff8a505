"""The model port: one async method that turns a request into a response.

Adapters (local llama.cpp, Bedrock, OpenAI-compatible, Anthropic, scripted) implement
:class:`Model`. Behaviour that applies to any model — caching, rate limits, fallback,
timeouts, budgets — is a :class:`WrapperModel` around another model, never a branch inside
an adapter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from ._types import ModelRequest, ModelResponse, StreamChunk

__all__ = ["Model", "WrapperModel"]


class Model(ABC):
    """A language model behind a ``provider:model`` name.

    ``request`` returns the whole reply; ``stream`` yields it piece by piece, the last
    :class:`StreamChunk` carrying the complete :class:`ModelResponse`. Adapters that cannot
    stream inherit a ``stream`` that yields the whole reply as one chunk.
    """

    name: str

    @abstractmethod
    async def request(self, req: ModelRequest) -> ModelResponse:
        """Send one request and return the complete reply."""

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        """Yield the reply as it is produced; the final chunk has ``response`` set."""
        response = await self.request(req)
        yield StreamChunk(delta=response.text, response=response)

    @property
    def provider(self) -> str:
        return self.name.partition(":")[0]

    @property
    def model_id(self) -> str:
        return self.name.partition(":")[2]

    async def aclose(self) -> None:
        """Release connections the model holds. Wrappers close what they wrap."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class WrapperModel(Model):
    """A model that delegates to ``wrapped``; subclasses add one behaviour around it."""

    def __init__(self, wrapped: Model) -> None:
        self.wrapped = wrapped

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.wrapped.name

    async def request(self, req: ModelRequest) -> ModelResponse:
        return await self.wrapped.request(req)

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        async for chunk in self.wrapped.stream(req):
            yield chunk

    async def aclose(self) -> None:
        await self.wrapped.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.wrapped!r})"
