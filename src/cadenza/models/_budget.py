"""Token and cost budgets.

A :class:`BudgetTracker` sums the usage and cost of every response recorded into it, per
model; one tracker can be shared by all the models of a run or an agent. A
:class:`BudgetedModel` checks the tracker before each call and refuses with
:class:`~cadenza.errors.BudgetExceeded` once the budget is spent. A call never asks for
more output tokens than a token budget has left, and a reply that goes over the budget
anyway (the prompt counts too) is recorded and refused with ``BudgetExceeded`` instead
of being returned: spend ends at most one reply above the limit, and that reply is unused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from ..errors import BudgetExceeded
from ._base import Model, WrapperModel
from ._pricing import cost
from ._types import ModelRequest, ModelResponse, StreamChunk, Usage

__all__ = ["BudgetTracker", "BudgetedModel"]


def capped_request(req: ModelRequest, left: int) -> ModelRequest:
    """``req`` asking for at most ``left`` output tokens.

    The cap is ``left`` rounded down to a power of two: requests, and so the keys of a
    response cache, stay the same for long stretches while a budget is spent, instead of
    changing with every call.
    """
    cap = 1 << (max(1, left).bit_length() - 1)
    if req.max_tokens is not None and req.max_tokens <= cap:
        return req
    return replace(req, max_tokens=cap)


@dataclass
class BudgetTracker:
    """Usage and cost so far, against optional limits (USD and total tokens).

    ``tracker = BudgetTracker(max_cost_usd=0.50, max_tokens=200_000)``
    """

    max_cost_usd: float | None = None
    max_tokens: int | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    by_model: dict[str, Usage] = field(default_factory=dict)

    def record(self, response: ModelResponse) -> float:
        """Add a response's usage and cost; returns the cost of this response in USD."""
        spent = cost(response.model, response.usage)
        self.usage += response.usage
        self.cost_usd += spent
        self.by_model[response.model] = self.by_model.get(response.model, Usage()) + (
            response.usage
        )
        return spent

    @property
    def exhausted(self) -> bool:
        return (self.max_cost_usd is not None and self.cost_usd >= self.max_cost_usd) or (
            self.max_tokens is not None and self.usage.total_tokens >= self.max_tokens
        )

    def capped(self, req: ModelRequest) -> ModelRequest:
        """``req`` asking for no more output tokens than the token budget has left."""
        if self.max_tokens is None:
            return req
        return capped_request(req, self.max_tokens - self.usage.total_tokens)

    def check_reply(self, response: ModelResponse) -> None:
        """Raise :class:`BudgetExceeded` if recording ``response`` went over the budget."""
        over_cost = self.max_cost_usd is not None and self.cost_usd > self.max_cost_usd
        over_tokens = self.max_tokens is not None and self.usage.total_tokens > self.max_tokens
        if not (over_cost or over_tokens):
            return
        spent = (
            f"${self.cost_usd:.4f} of ${self.max_cost_usd:.4f}"
            if over_cost
            else f"{self.usage.total_tokens} of {self.max_tokens} tokens"
        )
        raise BudgetExceeded(
            f"the reply of {response.model or 'the model'} went over the budget ({spent} over"
            f" {self.usage.requests} calls) and is not used; raise the budget or shorten the"
            " prompts"
        )

    def check(self, model_name: str = "") -> None:
        """Raise :class:`BudgetExceeded` when the budget is spent."""
        target = f" before calling {model_name}" if model_name else ""
        if self.max_cost_usd is not None and self.cost_usd >= self.max_cost_usd:
            raise BudgetExceeded(
                f"cost budget exhausted{target}: spent ${self.cost_usd:.4f} of "
                f"${self.max_cost_usd:.4f} over {self.usage.requests} calls; raise the "
                "budget or use a cheaper model"
            )
        if self.max_tokens is not None and self.usage.total_tokens >= self.max_tokens:
            raise BudgetExceeded(
                f"token budget exhausted{target}: used {self.usage.total_tokens} of "
                f"{self.max_tokens} tokens over {self.usage.requests} calls; raise the "
                "budget or shorten the prompts"
            )


class BudgetedModel(WrapperModel):
    """Record every call of ``wrapped`` in ``tracker``, cap each call to what is left,
    and refuse calls, and a reply going over, once it is spent."""

    def __init__(self, wrapped: Model, tracker: BudgetTracker) -> None:
        super().__init__(wrapped)
        self.tracker = tracker

    async def request(self, req: ModelRequest) -> ModelResponse:
        self.tracker.check(self.wrapped.name)
        response = await self.wrapped.request(self.tracker.capped(req))
        self.tracker.record(response)
        self.tracker.check_reply(response)
        return response

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamChunk]:
        self.tracker.check(self.wrapped.name)
        async for chunk in self.wrapped.stream(self.tracker.capped(req)):
            if chunk.response is not None:
                self.tracker.record(chunk.response)
                self.tracker.check_reply(chunk.response)
            yield chunk
