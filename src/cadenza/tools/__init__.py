"""Tools: typed Python functions (and MCP servers' tools) that a model can ask to call.

::

    @tool
    def get_weather(city: str) -> str:
        \"\"\"Current weather in a city.\"\"\"
        ...

    tools = Toolset([get_weather, search])
    agent_tools = tools.restrict(["get_weather"])   # least privilege per agent
    await agent_tools.call("get_weather", {"city": "Lisbon"}, idempotency_key="r-1/op-3")

:class:`McpToolSource` (the ``mcp`` extra) is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._tool import Tool, ToolContext, tool, tool_result_text
from ._toolset import Toolset

if TYPE_CHECKING:
    from ._mcp import McpToolSource

__all__ = ["McpToolSource", "Tool", "ToolContext", "Toolset", "tool", "tool_result_text"]


def __getattr__(name: str) -> Any:
    # McpToolSource imports the optional mcp package; load it only when asked for.
    if name == "McpToolSource":
        from ._mcp import McpToolSource

        return McpToolSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
