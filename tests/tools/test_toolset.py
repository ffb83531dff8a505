from __future__ import annotations

import pytest

from cadenza.errors import ConfigurationError, ToolNotAllowed, UnknownTool
from cadenza.models import ToolCall
from cadenza.tools import Toolset, tool


@tool
def search(query: str) -> list[str]:
    """Search the web."""
    return [f"result for {query}"]


@tool
def send_email(to: str, body: str) -> str:
    """Send an email."""
    return f"sent to {to}"


def read_file(path: str) -> str:
    """Read a file."""
    return f"contents of {path}"


@pytest.fixture
def registry() -> Toolset:
    return Toolset([search, send_email, read_file])


async def test_functions_are_made_tools_and_called(registry: Toolset) -> None:
    assert registry.allowed == ["read_file", "search", "send_email"]
    assert await registry.call("read_file", {"path": "a.txt"}) == "contents of a.txt"
    assert await registry.execute(ToolCall("c1", "search", {"query": "x"})) == ["result for x"]


async def test_allow_list_limits_what_an_agent_sees_and_calls(registry: Toolset) -> None:
    researcher = registry.restrict(["search", "read_file"])
    assert [s.name for s in researcher.specs] == ["read_file", "search"]
    assert "send_email" not in researcher and "search" in researcher
    assert len(researcher) == 2

    with pytest.raises(ToolNotAllowed) as caught:
        await researcher.call("send_email", {"to": "a@b.c", "body": "hi"})
    assert str(caught.value) == (
        "the tool 'send_email' is not allowed for this agent; the tools you can call are: "
        "read_file, search"
    )


async def test_unknown_tool_message_lists_the_callable_ones(registry: Toolset) -> None:
    researcher = registry.restrict(["search"])
    with pytest.raises(UnknownTool) as caught:
        await researcher.call("delete_everything", {})
    assert str(caught.value) == (
        "there is no tool named 'delete_everything'; the tools you can call are: search"
    )


def test_views_only_narrow(registry: Toolset) -> None:
    narrow = registry.restrict(["search"]).restrict(["search", "send_email"])
    assert narrow.allowed == ["search"]


def test_allow_list_with_unknown_names_is_a_configuration_error(registry: Toolset) -> None:
    with pytest.raises(ConfigurationError, match="do not exist: serch"):
        registry.restrict(["serch"])


def test_duplicate_names_are_refused(registry: Toolset) -> None:
    @tool(name="search")
    def other(q: str) -> str:
        """Another search."""
        return q

    with pytest.raises(ConfigurationError, match="two tools are named 'search'"):
        registry.add(other)


def test_constructor_allow_list() -> None:
    tools = Toolset([search, send_email], allow=["search"])
    assert [t.name for t in tools] == ["search"]


def test_mcp_without_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import cadenza.tools
    from cadenza.errors import MissingDependency

    monkeypatch.setitem(sys.modules, "mcp", None)
    monkeypatch.delitem(sys.modules, "cadenza.tools._mcp", raising=False)
    with pytest.raises(MissingDependency) as caught:
        _ = cadenza.tools.McpToolSource
    assert caught.value.extra == "mcp"
