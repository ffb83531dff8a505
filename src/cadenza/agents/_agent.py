"""Agent: a role (instructions, model, tools, memory, limits) and its reasoning loop.

The loop is the reference architecture's: observe → reflect → plan → act with a tool →
check → re-plan. Every model call and tool call is a durable step; the agent state
document (``ctx.state``) is updated at every turn, so an operator can read what the agent
believes, plans and has done while it runs:

    PLANNING → PLANNING_COMPLETE → TOOL_EXECUTION_PENDING → TOOL_EXECUTION_SUCCESS / FAILED
    → … → COMPLETED (or FAILED)

A plan the agent cannot carry out — a reply that is not usable, a tool it does not have
or may not use, a tool that fails — is reported back to the model and re-planned. After
``max_failures`` such failures in a row, or when the turns run out, the agent publishes an
``AgentError`` event (a rule can start a recovery workflow) and raises :class:`AgentError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cadenza.agents._calls import Budget, ToolOutcome, call_model, call_tool, usage_of
from cadenza.agents._memory import ConversationMemory
from cadenza.context import Context
from cadenza.errors import AgentError, OperationFailed, ToolError, WorkflowDefinitionError
from cadenza.models import Message, Model, ModelRequest
from cadenza.retry import RetryPolicy
from cadenza.state import AgentStatus
from cadenza.tools import Tool, Toolset

#: Tool calls that fail transiently (network, timeouts) are retried durably; any other
#: error goes straight back to the model, which re-plans: retrying "sold out" is useless.
TOOL_RETRY = RetryPolicy(
    max_attempts=3,
    initial_interval=timedelta(seconds=1),
    retryable_errors=(ConnectionError, TimeoutError, "StepTimedOut"),
)

_GUIDANCE = (
    "Work step by step. When a tool helps, call it; you will see its result. When you"
    " have the answer, reply with the answer itself and no tool call."
)


_LAST_TURN = "This is your last turn: give your final answer now, from what you found."


@dataclass(frozen=True)
class AgentResult:
    answer: str
    turns: int
    tool_calls: int
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Agent:
    """A role. ``allow`` limits the tools it may call (least privilege)."""

    name: str
    instructions: str
    model: str | Model = "local:smollm2"
    tools: Sequence[Tool | Callable[..., Any]] | Toolset = ()
    allow: Sequence[str] | None = None
    max_turns: int = 8
    max_failures: int = 3
    budget: Budget | None = None
    memory: ConversationMemory = field(default_factory=ConversationMemory)
    tool_retry: RetryPolicy = TOOL_RETRY
    max_tokens: int | None = 512
    toolset: Toolset = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_turns < 1 or self.max_failures < 1:
            raise WorkflowDefinitionError(
                f"agent {self.name!r}: max_turns and max_failures must be >= 1"
            )
        toolset = self.tools if isinstance(self.tools, Toolset) else Toolset(self.tools)
        if self.allow is not None:
            toolset = toolset.restrict(self.allow)
        object.__setattr__(self, "toolset", toolset)

    async def run(self, ctx: Context, task: str, *, track_state: bool = True) -> AgentResult:
        """Work on ``task`` until an answer, or give up with :class:`AgentError`.

        With ``track_state`` (the default) the agent owns the run's state document; pass
        False for a helper agent that shares a run with another.
        """
        loop = _Loop(self, ctx, task, track_state)
        return await loop.run()


class _Loop:
    def __init__(self, agent: Agent, ctx: Context, task: str, track_state: bool) -> None:
        self.agent = agent
        self.ctx = ctx
        self.task = task
        self.tracking = track_state
        system = (
            f"{agent.instructions}\n\n{_GUIDANCE}" if agent.toolset.allowed else agent.instructions
        )
        self.messages: list[Message] = [Message.system(system), Message.user(task)]
        self.failures = 0
        self.tool_calls = 0
        self.last_error: str | None = None

    def _status(self, status: AgentStatus) -> None:
        """Set the status and keep a short trail, since several may pass between two
        checkpoints and the document only stores the last."""
        if not self.tracking or self.ctx.state.get("status") == status:
            return
        self.ctx.state.status = status
        trail = self.ctx.state.to_dict().setdefault("metadata", {}).setdefault("statusTrail", [])
        trail.append(str(status))
        del trail[:-50]

    def _remember(self) -> None:
        if self.tracking:
            self.ctx.state.context["conversation"] = [
                {
                    "role": m.role,
                    "content": m.content[:500],
                    **({"tool_calls": [c.name for c in m.tool_calls]} if m.tool_calls else {}),
                }
                for m in self.messages[-20:]
            ]

    async def run(self) -> AgentResult:
        agent, ctx = self.agent, self.ctx
        if self.tracking:
            ctx.state.goal = self.task
            ctx.state.tools = agent.toolset.allowed
        for turn in range(1, agent.max_turns + 1):
            self._status(AgentStatus.PLANNING)
            self.messages = await agent.memory.fit(
                ctx,
                agent.model,
                self.messages,
                name=f"{agent.name}:memory{turn}",
                budget=agent.budget,
            )
            # On the last turn no tools are offered: the model must answer with what it has.
            last = turn == agent.max_turns and turn > 1
            messages = tuple(self.messages)
            if last:
                messages = (*messages, Message.user(_LAST_TURN))
            try:
                response = await call_model(
                    ctx,
                    agent.model,
                    ModelRequest(
                        messages=messages,
                        tools=() if last else agent.toolset.specs,
                        max_tokens=agent.max_tokens,
                    ),
                    name=f"{agent.name}:plan{turn}",
                    budget=agent.budget,
                )
            except OperationFailed as exc:
                if exc.error_type == "BudgetExceeded":
                    await self._give_up(exc.message, exc.error_type)
                await self._failed(
                    f"your last reply could not be used ({exc.message})", exc.error_type
                )
                self.messages.append(
                    Message.user(
                        "Your last reply could not be used. Reply again: call one of the tools,"
                        " or give the final answer."
                    )
                )
                continue
            self.messages.append(response.message)
            if response.tool_calls:
                await self._act(response.tool_calls)
                self._remember()
                continue
            answer = response.text.strip()
            if not answer:
                self._count_error()
                await self._failed("the reply was empty", "EmptyReply")
                self.messages.append(Message.user("Reply with the final answer."))
                continue
            self._status(AgentStatus.COMPLETED)
            self._remember()
            return AgentResult(answer, turn, self.tool_calls, dict(usage_of(ctx)))
        await self._give_up(f"no answer after {agent.max_turns} turns", "MaxTurns")
        raise AssertionError("unreachable")  # _give_up raises

    async def _act(self, calls: Sequence[Any]) -> None:
        agent, ctx = self.agent, self.ctx
        steps = []
        for call in calls:
            step = {
                "action": f"call {call.name}",
                "toolName": call.name,
                "parameters": call.arguments,
                "status": "PENDING",
                "result": None,
            }
            steps.append(step)
            if self.tracking:
                ctx.state.plan.append(step)
        self._status(AgentStatus.PLANNING_COMPLETE)
        self._status(AgentStatus.TOOL_EXECUTION_PENDING)
        all_ok = True
        for call, step in zip(calls, steps, strict=True):
            if call.name not in agent.toolset:  # refused without running anything
                try:
                    agent.toolset.get(call.name)
                except ToolError as exc:  # UnknownTool or ToolNotAllowed, phrased for the model
                    outcome = ToolOutcome(call.id, call.name, False, str(exc), type(exc).__name__)
                    self._count_error()
            else:
                self.tool_calls += 1
                outcome = await call_tool(
                    ctx,
                    agent.toolset,
                    call,
                    name=f"{agent.name}:{call.name}",
                    retry=agent.tool_retry,
                )
            step["status"] = "SUCCEEDED" if outcome.ok else "FAILED"
            step["result"] = outcome.output[:500]
            if not outcome.ok:
                all_ok = False
                self.last_error = outcome.error_type
            self.messages.append(outcome.message())
        if all_ok:
            self.failures = 0
            self._status(AgentStatus.TOOL_EXECUTION_SUCCESS)
        else:
            self._status(AgentStatus.TOOL_EXECUTION_FAILED)
            await self._failed("a tool call failed", self.last_error or "ToolError")

    def _count_error(self) -> None:
        """Count a failure that no step recorded (steps count their own)."""
        metadata = self.ctx.state.to_dict().setdefault("metadata", {})
        metadata["errorCount"] = int(metadata.get("errorCount", 0)) + 1

    async def _failed(self, reason: str, error_type: str) -> None:
        self.failures += 1
        self.last_error = error_type
        if self.failures >= self.agent.max_failures:
            await self._give_up(
                f"{self.failures} failures in a row, the last: {reason}", error_type
            )

    async def _give_up(self, reason: str, error_type: str) -> None:
        agent, ctx = self.agent, self.ctx
        self._status(AgentStatus.FAILED)
        self._remember()
        details = {
            "agent": agent.name,
            "task": self.task[:500],
            "reason": reason,
            "error_type": error_type,
            "run_id": ctx.run_id,
            "workflow": ctx.workflow.name,
        }
        await ctx.emit("AgentError", details, source="cadenza.agents")
        raise AgentError(
            f"agent {agent.name!r} gave up: {reason}", error_type="AgentError", details=details
        )
