"""Agents and durable model/tool calls.

    researcher = Agent("researcher", "Find facts.", model="local:smollm2", tools=[search])
    result = await researcher.run(ctx, "Who designed the Lisbon aqueduct?")

Every model call and tool call is a journaled step: replay after a crash or a suspension
never calls a model or a tool again. What a model replies is data, never control: limits,
the allow-list and the tool policy hold whatever it asks for.
"""

from cadenza.agents._agent import TOOL_RETRY, Agent, AgentResult
from cadenza.agents._calls import (
    MODEL_RETRY,
    Budget,
    ToolOutcome,
    budget_scope,
    budgets_in_force,
    call_model,
    call_tool,
    check_budget,
    generate,
    register_model,
    resolve_model,
    usage_of,
)
from cadenza.agents._memory import ConversationMemory, estimate_tokens
from cadenza.agents._policy import ToolCallReview, ToolDecision, ToolPolicy, ToolRule

__all__ = [
    "MODEL_RETRY",
    "TOOL_RETRY",
    "Agent",
    "AgentResult",
    "Budget",
    "ConversationMemory",
    "ToolCallReview",
    "ToolDecision",
    "ToolOutcome",
    "ToolPolicy",
    "ToolRule",
    "budget_scope",
    "budgets_in_force",
    "call_model",
    "call_tool",
    "check_budget",
    "estimate_tokens",
    "generate",
    "register_model",
    "resolve_model",
    "usage_of",
]
