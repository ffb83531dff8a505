"""Models: one small async port, adapters per provider, and wrappers that add behaviour.

Pick a model by name and switch providers by changing the string::

    model = infer_model("local:smollm2")            # offline, in-process llama.cpp
    model = infer_model("bedrock:us.amazon.nova-lite-v1:0")
    reply = await model.request(ModelRequest.of("Name three colours", max_tokens=40))

Caching, rate limits, fallback, timeouts and budgets wrap any model
(:class:`CachedModel`, :class:`RateLimitedModel`, :class:`FallbackModel`,
:class:`TimeoutModel`, :class:`BudgetedModel`); :func:`generate_structured` returns a
validated value for a pydantic model or JSON Schema. The adapter classes are imported on
first use, so their libraries stay optional.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._base import Model, WrapperModel
from ._budget import BudgetedModel, BudgetTracker
from ._cache import CachedModel, CacheStore, InMemoryCacheStore, request_key
from ._json import extract_json, schema_errors
from ._pricing import Price, cost, price_for, prices, register_price
from ._ratelimit import RateLimitedModel, TokenBucket
from ._registry import Provider, infer_model, providers, register_provider
from ._resilience import DEFAULT_FALLBACK_ON, FallbackModel, TimeoutModel
from ._structured import generate_structured, output_schema_for
from ._types import (
    FinishReason,
    Message,
    ModelRequest,
    ModelResponse,
    Role,
    StreamChunk,
    ToolCall,
    ToolSpec,
    Usage,
)

if TYPE_CHECKING:
    from ._anthropic import AnthropicModel
    from ._bedrock import BedrockModel
    from ._local import LlamaCppModel
    from ._openai import OpenAIModel

__all__ = [
    "DEFAULT_FALLBACK_ON",
    "AnthropicModel",
    "BedrockModel",
    "BudgetTracker",
    "BudgetedModel",
    "CacheStore",
    "CachedModel",
    "FallbackModel",
    "FinishReason",
    "InMemoryCacheStore",
    "LlamaCppModel",
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "OpenAIModel",
    "Price",
    "Provider",
    "RateLimitedModel",
    "Role",
    "StreamChunk",
    "TimeoutModel",
    "TokenBucket",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "WrapperModel",
    "cost",
    "extract_json",
    "generate_structured",
    "infer_model",
    "output_schema_for",
    "price_for",
    "prices",
    "providers",
    "register_price",
    "register_provider",
    "request_key",
    "schema_errors",
]

_ADAPTERS = {
    "AnthropicModel": "._anthropic",
    "BedrockModel": "._bedrock",
    "LlamaCppModel": "._local",
    "OpenAIModel": "._openai",
}


def __getattr__(name: str) -> Any:
    # Adapters import their provider's library; load them only when asked for.
    if name in _ADAPTERS:
        import importlib

        return getattr(importlib.import_module(_ADAPTERS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
