"""MCP tools from a real server process (tests/tools/mcp_server.py) over stdio."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the mcp extra is not installed")

from cadenza.errors import ConfigurationError, ToolArgumentsInvalid, ToolError
from cadenza.tools import McpToolSource, Toolset

SERVER = Path(__file__).with_name("mcp_server.py")


@pytest.fixture
async def source() -> AsyncIterator[McpToolSource]:
    quiet = open(os.devnull, "w")  # noqa: ASYNC230 - opening /dev/null does not block
    try:
        async with McpToolSource(
            sys.executable, [str(SERVER)], prefix="t_", errlog=quiet
        ) as started:
            yield started
    finally:
        quiet.close()


async def test_lists_and_calls_server_tools(source: McpToolSource) -> None:
    tools = Toolset(await source.list_tools())
    assert tools.allowed == ["t_add", "t_fail", "t_forecast", "t_shout"]
    add = tools.get("t_add")
    assert add.description == "Add two integers."
    assert add.parameters["required"] == ["a", "b"]

    assert await tools.call("t_add", {"a": 2, "b": 40}) == 42
    assert await tools.call("t_shout", {"text": "hey"}) == "HEY"
    assert await tools.call("t_forecast", {"city": "Faro"}) == {
        "city": "Faro",
        "days": 1,
        "sky": "sunny",
    }


async def test_arguments_are_checked_before_the_call(source: McpToolSource) -> None:
    tools = Toolset(await source.list_tools())
    with pytest.raises(ToolArgumentsInvalid, match="'b' is a required property"):
        await tools.call("t_add", {"a": 1})


async def test_server_side_failure_is_a_tool_error(source: McpToolSource) -> None:
    tools = Toolset(await source.list_tools())
    with pytest.raises(ToolError, match="failed on purpose: disk full"):
        await tools.call("t_fail", {"reason": "disk full"})


async def test_allow_list_applies_to_mcp_tools(source: McpToolSource) -> None:
    from cadenza.errors import ToolNotAllowed

    tools = Toolset(await source.list_tools()).restrict(["t_add"])
    with pytest.raises(ToolNotAllowed):
        await tools.call("t_shout", {"text": "x"})


async def test_use_before_start_is_explained() -> None:
    with pytest.raises(ConfigurationError, match="async with"):
        await McpToolSource(sys.executable, [str(SERVER)]).list_tools()


async def test_missing_command() -> None:
    with pytest.raises(ConfigurationError, match="cannot start the MCP server"):
        async with McpToolSource("/nonexistent/mcp-server-binary"):
            pass
