"""The agent state document: what a run believes, plans and has done, readable at any time.

Its fields are those the AWS reference architecture keeps per agent in DynamoDB. The
workflow mutates ``ctx.state`` freely between operations; every checkpoint stores the
document when it changed. Replay rebuilds it by running the same code over the same
journal, and a finished child context, which replay does not run again, gives back the
changes its record keeps; so the stored document and the replayed one agree.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class AgentStatus(StrEnum):
    INITIATED = "INITIATED"
    PLANNING = "PLANNING"
    PLANNING_COMPLETE = "PLANNING_COMPLETE"
    TOOL_EXECUTION_PENDING = "TOOL_EXECUTION_PENDING"
    TOOL_EXECUTION_SUCCESS = "TOOL_EXECUTION_SUCCESS"
    TOOL_EXECUTION_FAILED = "TOOL_EXECUTION_FAILED"
    WAITING_FOR_INPUT = "WAITING_FOR_INPUT"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


def new_state_document(agent_id: str, created_at: str) -> dict[str, Any]:
    return {
        "agentId": agent_id,
        "status": str(AgentStatus.INITIATED),
        "goal": None,
        "context": {"conversation": [], "slots": {}, "results": {}},
        "plan": [],
        "tools": [],
        "metadata": {
            "createdAt": created_at,
            "lastUpdated": created_at,
            "invocationCount": 0,
            "errorCount": 0,
        },
    }


class AgentState:
    """Attribute access to the well-known fields, item access to anything else.

    >>> state.status = AgentStatus.PLANNING
    >>> state.plan.append({"action": "search", "toolName": "search", "status": "PENDING"})
    >>> state["customer"] = "c-42"
    """

    __slots__ = ("_doc",)
    _doc: dict[str, Any]

    def __init__(self, document: dict[str, Any]) -> None:
        object.__setattr__(self, "_doc", document)

    def to_dict(self) -> dict[str, Any]:
        return self._doc

    def __getattr__(self, name: str) -> Any:
        try:
            return self._doc[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._doc[name] = str(value) if isinstance(value, StrEnum) else value

    def __getitem__(self, key: str) -> Any:
        return self._doc[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._doc[key] = str(value) if isinstance(value, StrEnum) else value

    def __contains__(self, key: object) -> bool:
        return key in self._doc

    def get(self, key: str, default: Any = None) -> Any:
        return self._doc.get(key, default)

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            self[key] = value

    def __repr__(self) -> str:
        return f"AgentState({self._doc!r})"
