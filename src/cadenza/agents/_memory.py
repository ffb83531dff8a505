"""Conversation memory that keeps a long history inside the model's context window.

The system prompt and the most recent messages are always kept. When the rest grows past
the token budget, it is summarised by the agent's model (one durable call, so a replay
reuses the same summary) or, with ``summarize=False``, dropped with a note saying so.
Large tool outputs never reach the history whole: ``call_tool`` stores them as artifacts
and the conversation keeps a preview and the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cadenza.errors import WorkflowDefinitionError
from cadenza.models import Message, Model, ModelRequest

if TYPE_CHECKING:
    from cadenza.agents._calls import Budget
    from cadenza.context import Context


def estimate_tokens(messages: list[Message]) -> int:
    """A provider-independent estimate: about four characters a token."""
    return sum(len(m.content) + 16 * len(m.tool_calls) + 4 for m in messages) // 4 + 1


@dataclass(frozen=True)
class ConversationMemory:
    max_tokens: int = 1_500
    keep_recent: int = 6
    summarize: bool = True

    def __post_init__(self) -> None:
        if self.max_tokens < 100 or self.keep_recent < 1:
            raise WorkflowDefinitionError(
                "ConversationMemory needs max_tokens >= 100 and keep_recent >= 1"
            )

    async def fit(
        self,
        ctx: Context,
        model: str | Model,
        messages: list[Message],
        *,
        name: str,
        budget: Budget | None = None,
    ) -> list[Message]:
        system = [m for m in messages if m.role == "system"]
        rest = [m for m in messages if m.role != "system"]
        if estimate_tokens(rest) <= self.max_tokens or len(rest) <= self.keep_recent:
            return messages
        cut = len(rest) - self.keep_recent
        while cut > 0 and rest[cut].role == "tool":  # keep a tool result with its call
            cut -= 1
        older, recent = rest[:cut], rest[cut:]
        if not older:
            return messages
        if self.summarize:
            from cadenza.agents._calls import call_model

            transcript = "\n".join(f"{m.role}: {m.content[:800]}" for m in older)
            reply = await call_model(
                ctx,
                model,
                ModelRequest.of(
                    "Summarise this conversation in a few sentences, keeping facts, numbers"
                    f" and decisions:\n\n{transcript}",
                    max_tokens=200,
                ),
                name=name,
                budget=budget,
            )
            note = f"Summary of the conversation so far: {reply.text.strip()}"
        else:
            note = f"({len(older)} earlier messages were left out to fit the context window.)"
        return [*system, Message.user(note), *recent]
