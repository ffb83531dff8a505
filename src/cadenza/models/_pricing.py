"""What a call costs: a price table in USD per million tokens, keyed by ``provider:model``.

The built-in entries are list prices for on-demand use at the time of writing; providers
change them, so check their pricing pages and override with :func:`register_price`. A name
is looked up exactly first, then by the longest registered prefix (so ``openai:gpt-4o``
prices ``openai:gpt-4o-2024-08-06``), then under ``provider:*``. Bedrock cross-region
inference profile prefixes (``us.``, ``eu.``, ``apac.``, ``global.``) are ignored.
An unknown model costs 0: its tokens are still counted, its cost is not.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._types import Usage

__all__ = ["Price", "cost", "price_for", "prices", "register_price"]


@dataclass(frozen=True)
class Price:
    """USD per one million tokens."""

    input: float
    output: float
    cached: float | None = None  # defaults to the input price

    def cost(self, usage: Usage) -> float:
        cached = self.input if self.cached is None else self.cached
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cached_tokens * cached
        ) / 1_000_000


_FREE = Price(0.0, 0.0, 0.0)

_PRICES: dict[str, Price] = {
    "local:*": _FREE,
    "scripted:*": _FREE,
    # OpenAI
    "openai:gpt-4o": Price(2.50, 10.00, 1.25),
    "openai:gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "openai:gpt-4.1": Price(2.00, 8.00, 0.50),
    "openai:gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "openai:gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "openai:o3-mini": Price(1.10, 4.40, 0.55),
    # Anthropic (cached = cache read)
    "anthropic:claude-3-haiku": Price(0.25, 1.25, 0.03),
    "anthropic:claude-3-5-haiku": Price(0.80, 4.00, 0.08),
    "anthropic:claude-3-5-sonnet": Price(3.00, 15.00, 0.30),
    "anthropic:claude-3-7-sonnet": Price(3.00, 15.00, 0.30),
    "anthropic:claude-sonnet-4": Price(3.00, 15.00, 0.30),
    "anthropic:claude-opus-4": Price(15.00, 75.00, 1.50),
    # Amazon Bedrock (on-demand)
    "bedrock:anthropic.claude-3-haiku": Price(0.25, 1.25, 0.03),
    "bedrock:anthropic.claude-3-5-haiku": Price(0.80, 4.00, 0.08),
    "bedrock:anthropic.claude-3-5-sonnet": Price(3.00, 15.00, 0.30),
    "bedrock:anthropic.claude-3-7-sonnet": Price(3.00, 15.00, 0.30),
    "bedrock:anthropic.claude-sonnet-4": Price(3.00, 15.00, 0.30),
    "bedrock:amazon.nova-micro-v1": Price(0.035, 0.14, 0.00875),
    "bedrock:amazon.nova-lite-v1": Price(0.06, 0.24, 0.015),
    "bedrock:amazon.nova-pro-v1": Price(0.80, 3.20, 0.20),
    "bedrock:meta.llama3-1-8b-instruct": Price(0.22, 0.22),
    "bedrock:meta.llama3-1-70b-instruct": Price(0.72, 0.72),
    "bedrock:mistral.mistral-small": Price(1.00, 3.00),
}

_BEDROCK_PROFILE_PREFIXES = ("us.", "eu.", "apac.", "global.", "us-gov.")


def register_price(
    model_name: str, *, input: float, output: float, cached: float | None = None
) -> None:
    """Set the price of ``model_name`` (or of a prefix, or ``provider:*``) in USD per 1M tokens.

    ``register_price("openai:my-finetune", input=3.0, output=12.0)``
    """
    if ":" not in model_name:
        raise ValueError(f"price entries are named 'provider:model', got {model_name!r}")
    _PRICES[model_name] = Price(input, output, cached)


def prices() -> dict[str, Price]:
    """A copy of the price table."""
    return dict(_PRICES)


def price_for(model_name: str) -> Price | None:
    """The price of ``model_name``, or None when the table does not know it."""
    provider, _, model = model_name.partition(":")
    if provider == "bedrock":
        for prefix in _BEDROCK_PROFILE_PREFIXES:
            if model.startswith(prefix):
                model = model[len(prefix) :]
                break
    key = f"{provider}:{model}"
    if key in _PRICES:
        return _PRICES[key]
    best: str | None = None
    for entry in _PRICES:
        if entry.endswith(":*") or not key.startswith(entry):
            continue
        if best is None or len(entry) > len(best):
            best = entry
    if best is not None:
        return _PRICES[best]
    return _PRICES.get(f"{provider}:*")


def cost(model_name: str, usage: Usage) -> float:
    """The cost in USD of ``usage`` on ``model_name``; 0 for models without a price."""
    price = price_for(model_name)
    return 0.0 if price is None else price.cost(usage)
