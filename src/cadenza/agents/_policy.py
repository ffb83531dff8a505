"""Tool policy: per tool, allow it, deny it, or ask a person before it runs.

The allow-list decides which tools an agent may see at all; the policy decides, call by
call, whether a tool it may see runs now, never, or after a reviewer approves::

    def outside_company(args: Mapping[str, Any]) -> ToolDecision:
        external = [r for r in args["to"] if not r.endswith("@example.com")]
        return "ask" if external else "allow"

    agent = Agent(
        "assistant", "Answer customer mail.", tools=[search, send_email, delete_account],
        tool_policy={"send_email": outside_company, "delete_account": "deny"},
        approval=ApprovalGate(notify=WebhookNotifier("https://ops.example.com/approvals")),
    )

A rule is ``"allow"``, ``"deny"``, ``"ask"``, or a function of the call's validated
arguments returning one of them; tools without a rule get ``default``. A function runs in
the workflow, on every replay: it must decide from the arguments alone (no clock, no I/O).
A function that raises denies the call. "ask" pauses the run on the agent's
:class:`~cadenza.patterns.approval.ApprovalGate`: the reviewer is shown the agent, the tool
and its arguments, the run suspends (it holds no process) until the answer, and the tool
runs only if approved; anything else is reported to the model as a refused call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from cadenza.errors import WorkflowDefinitionError

__all__ = ["ToolCallReview", "ToolDecision", "ToolPolicy", "ToolRule"]

ToolDecision = Literal["allow", "deny", "ask"]
ToolRule = ToolDecision | Callable[[Mapping[str, Any]], ToolDecision]

_DECISIONS: tuple[str, ...] = get_args(ToolDecision)


@dataclass(frozen=True)
class ToolPolicy:
    """Rules by tool name; ``default`` for the tools without one."""

    rules: Mapping[str, ToolRule] = field(default_factory=dict)
    default: ToolDecision = "allow"

    def __post_init__(self) -> None:
        for name, rule in {**self.rules, "(default)": self.default}.items():
            if not callable(rule) and rule not in _DECISIONS:
                raise WorkflowDefinitionError(
                    f"tool policy for {name!r}: {rule!r} is not a rule; use 'allow', 'deny',"
                    " 'ask', or a function of the arguments returning one of them"
                )

    @classmethod
    def of(cls, value: ToolPolicy | Mapping[str, ToolRule] | None) -> ToolPolicy:
        if value is None:
            return cls()
        return value if isinstance(value, ToolPolicy) else cls(dict(value))

    def rule(self, tool: str) -> ToolRule:
        return self.rules.get(tool, self.default)

    def may_ask(self, tools: list[str]) -> bool:
        """Whether a call of one of ``tools`` may need a reviewer."""
        return any(self.rule(t) == "ask" or callable(self.rule(t)) for t in tools)

    def decide(self, tool: str, arguments: Mapping[str, Any]) -> tuple[ToolDecision, str]:
        """The decision for one call, and why (for the model and the record)."""
        rule = self.rule(tool)
        if not callable(rule):
            return rule, f"the tool policy says {rule!r} for {tool!r}"
        try:
            decided = rule(arguments)
        except Exception as exc:  # fail closed: a rule that cannot decide does not allow
            return "deny", f"the tool policy for {tool!r} could not decide ({type(exc).__name__})"
        if decided not in _DECISIONS:
            return "deny", f"the tool policy for {tool!r} returned {decided!r}, not a decision"
        return decided, f"the tool policy for {tool!r} decided {decided!r} for these arguments"


@dataclass(frozen=True)
class ToolCallReview:
    """What a reviewer is shown for a call waiting on approval (the notification body)."""

    agent: str
    tool: str
    arguments: dict[str, Any]
    reason: str
    run_id: str
