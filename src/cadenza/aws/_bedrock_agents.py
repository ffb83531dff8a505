"""Amazon Bedrock Agents and Knowledge Bases as parts of cadenza's patterns.

:class:`BedrockAgent` is an existing Bedrock Agent (by agent and alias id) usable wherever
a pattern takes a role: it is an async ``(ctx, prompt) -> str`` responder whose call is
one durable step. ``InvokeAgent`` streams its completion in chunks; they are collected
into the step's result. The session id is derived from the step's idempotency key, so a
retried attempt of the step continues the same agent session rather than opening another,
and replay never invokes the agent again.

:class:`BedrockKnowledgeBase` is the read side of the knowledge pattern on a Bedrock
Knowledge Base (``Retrieve``): give it to ``KnowledgeBase(retriever=...)`` in place of the
local vector store. Its write side is the Knowledge Base's own data source sync.

Credentials and region come from the standard AWS chain; pass ``client`` to use your own.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

from cadenza.aws._clients import THROTTLED, LazyClient, error_code
from cadenza.context import Context
from cadenza.errors import (
    ConfigurationError,
    ModelError,
    ModelNotFound,
    ModelThrottled,
    ModelUnavailable,
)
from cadenza.operations import StepContext
from cadenza.patterns._vectors import VectorHit

# One attempt per call: the step's retry policy decides, seeing the translated error.
_RETRIES: dict[str, Any] = {"mode": "standard", "total_max_attempts": 1}


#: The model of the serverless shape when a deployment names none: Amazon Nova Lite through
#: the US cross-region inference profile (on-demand, Converse with tool use).
DEFAULT_MODEL = "us.amazon.nova-lite-v1:0"


def default_model() -> str:
    """The shape's default model name: ``bedrock:`` + ``CADENZA_BEDROCK_MODEL`` (which the
    template sets to its first ``--bedrock-model``), else :data:`DEFAULT_MODEL`.

    >>> Agent("writer", "Write the report.", model=default_model())
    """
    return f"bedrock:{os.environ.get('CADENZA_BEDROCK_MODEL') or DEFAULT_MODEL}"


def _agent_runtime(region: str | None, client: Any) -> LazyClient:
    """The Bedrock Agent runtime client both the agent and the knowledge base call."""
    return LazyClient(
        "bedrock-agent-runtime", client=client, region=region, retries=_RETRIES, read_timeout=300
    )


def session_id(idempotency_key: str) -> str:
    """A Bedrock Agent session id for a step (stable across its attempts and replays)."""
    return "cadenza-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]


class BedrockAgent:
    """An existing Bedrock Agent as a role in the patterns.

    >>> researcher = BedrockAgent("AGENT123", "ALIAS456", name="researcher")
    >>> Scatter("views", [Branch("bedrock", researcher), Branch("local", "local:smollm2")])
    """

    def __init__(
        self,
        agent_id: str,
        alias_id: str,
        *,
        name: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        if not agent_id or not alias_id:
            raise ConfigurationError("a BedrockAgent needs the agent id and the alias id")
        self.agent_id = agent_id
        self.alias_id = alias_id
        self.name = name or agent_id
        self.__name__ = f"bedrock-agent:{self.name}"  # how patterns name the responder
        self._client = _agent_runtime(region, client)

    @property
    def client(self) -> Any:
        return self._client.get()

    async def __call__(self, ctx: Context, prompt: str) -> str:
        """Ask the agent, as one durable step of ``ctx``."""
        return await ctx.step(self.invoke, prompt, name=f"bedrock-agent:{self.name}")

    async def invoke(self, step: StepContext, prompt: str) -> str:
        """The step: ``InvokeAgent`` in the step's session, the completion collected."""
        return await asyncio.to_thread(self._invoke, session_id(step.idempotency_key), prompt)

    def _invoke(self, session: str, prompt: str) -> str:
        try:
            reply = self.client.invoke_agent(
                agentId=self.agent_id,
                agentAliasId=self.alias_id,
                sessionId=session,
                inputText=prompt,
            )
            parts = []
            for event in reply["completion"]:
                if "chunk" in event:
                    parts.append(event["chunk"].get("bytes", b"").decode("utf-8"))
                    continue
                for key, value in event.items():  # an error inside the stream
                    if key.endswith("Exception"):
                        raise _stream_error(key, value)
            return "".join(parts)
        except ModelError:
            raise
        except Exception as exc:
            raise _translate(exc, f"Bedrock agent {self.agent_id}/{self.alias_id}") from exc

    def __repr__(self) -> str:
        return f"BedrockAgent({self.agent_id!r}, {self.alias_id!r}, name={self.name!r})"


class BedrockKnowledgeBase:
    """The read side of the knowledge pattern on a Bedrock Knowledge Base (``Retrieve``).

    >>> kb = KnowledgeBase("handbook", model="bedrock:us.amazon.nova-lite-v1:0",
    ...                    retriever=BedrockKnowledgeBase("KB12345678"))
    """

    def __init__(
        self,
        knowledge_base_id: str,
        *,
        region: str | None = None,
        client: Any = None,
        filter: dict[str, Any] | None = None,
    ) -> None:
        if not knowledge_base_id:
            raise ConfigurationError("a BedrockKnowledgeBase needs the knowledge base id")
        self.knowledge_base_id = knowledge_base_id
        self.filter = filter
        self._client = _agent_runtime(region, client)

    @property
    def client(self) -> Any:
        return self._client.get()

    async def retrieve(self, query: str, k: int) -> list[VectorHit]:
        """The ``k`` passages the Knowledge Base ranks best for ``query``, best first."""
        return await asyncio.to_thread(self._retrieve, query, k)

    def _retrieve(self, query: str, k: int) -> list[VectorHit]:
        search: dict[str, Any] = {"numberOfResults": k}
        if self.filter is not None:
            search["filter"] = self.filter
        try:
            reply = self.client.retrieve(
                knowledgeBaseId=self.knowledge_base_id,
                retrievalQuery={"text": query},
                retrievalConfiguration={"vectorSearchConfiguration": search},
            )
        except Exception as exc:
            raise _translate(exc, f"Bedrock knowledge base {self.knowledge_base_id}") from exc
        hits = []
        for n, result in enumerate(reply.get("retrievalResults", [])):
            text = result.get("content", {}).get("text", "")
            source = _location(result.get("location") or {})
            metadata = result.get("metadata") or {}
            chunk = (
                metadata.get("x-amz-bedrock-kb-chunk-id")
                or hashlib.sha256(f"{source}|{text}".encode()).hexdigest()[:16]
            )
            hits.append(
                VectorHit(
                    chunk_id=str(chunk),
                    document_id=source or str(chunk),
                    position=n,
                    text=text,
                    score=float(result.get("score", 0.0)),
                    source=source,
                )
            )
        return hits

    def __repr__(self) -> str:
        return f"BedrockKnowledgeBase({self.knowledge_base_id!r})"


def _location(location: dict[str, Any]) -> str:
    """The source of a passage: the document's URI or URL, whatever its store."""
    for value in location.values():
        if isinstance(value, dict):
            for key in ("uri", "url"):
                if isinstance(value.get(key), str):
                    return str(value[key])
    return ""


def _stream_error(key: str, value: Any) -> ModelError:
    message = value.get("message", "") if isinstance(value, dict) else str(value)
    code = key[0].upper() + key[1:]
    return _error(code, message, "Bedrock agent")


def _translate(exc: BaseException, what: str) -> Exception:
    code = error_code(exc)
    if not code:
        try:
            from botocore.exceptions import ConnectionError, ReadTimeoutError
        except ImportError:  # pragma: no cover - boto3 brings botocore
            return ModelError(f"{what}: {exc}")
        if isinstance(exc, ConnectionError | ReadTimeoutError):
            return ModelUnavailable(f"{what} cannot be reached: {exc}", retryable=True)
        return ModelError(f"{what}: {exc}")
    message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
    return _error(code, message, what)


def _error(code: str, message: str, what: str) -> ModelError:
    if code in THROTTLED or code == "ServiceQuotaExceededException":
        return ModelThrottled(f"{what} is throttled ({code}): {message}; retried with backoff")
    if code in ("ResourceNotFoundException", "ValidationException"):
        return ModelNotFound(f"{what}: {message} ({code}); check the ids and the region")
    if code in ("AccessDeniedException", "UnrecognizedClientException"):
        return ModelNotFound(
            f"{what}: access denied ({code}); allow bedrock:InvokeAgent / bedrock:Retrieve"
            " on it for the function's role"
        )
    if code in ("BadGatewayException", "ConflictException"):
        return ModelUnavailable(f"{what}: {message} ({code})", retryable=True)
    return ModelError(f"{what} failed ({code}): {message}")
