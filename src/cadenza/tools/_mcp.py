"""MCP servers as tool sources, over stdio, with the official ``mcp`` package.

``McpToolSource`` starts the server process, lists its tools as cadenza :class:`Tool`\\ s
(their input schemas validate the arguments before anything is sent) and calls them over
the session. The server lives as long as the ``async with`` block::

    async with McpToolSource("python", ["-m", "my_server"]) as source:
        tools = Toolset(await source.list_tools())
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from ..errors import ConfigurationError, MissingDependency, ToolError

try:
    import mcp.types as mcp_types
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
except ImportError as exc:  # pragma: no cover - exercised by hiding mcp in the tests
    raise MissingDependency("MCP tool sources", "mcp") from exc

from ._tool import Tool, ToolContext

_MCP_MAJOR = int(importlib.metadata.version("mcp").split(".")[0])

__all__ = ["McpToolSource"]


def _field(obj: Any, *names: str, default: Any = None) -> Any:
    # mcp 1.x spells fields in camelCase (inputSchema, isError), 2.x in snake_case.
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


class McpToolSource:
    """An MCP server started with ``command args`` whose tools cadenza can call.

    ``prefix`` is put before every tool name (``"fs_"`` gives ``fs_read_file``) to keep
    names from two servers apart; ``timeout`` bounds each call, in seconds; ``errlog`` is
    where the server's stderr goes (ours by default).
    """

    def __init__(
        self,
        command: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        cwd: str | os.PathLike[str] | None = None,
        prefix: str = "",
        timeout: float | None = 60.0,
        errlog: TextIO | None = None,
    ) -> None:
        self.command = command
        self.args = list(args)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.prefix = prefix
        self.timeout = timeout
        self.errlog = errlog  # where the server's stderr goes; ours by default
        self._session: ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def __aenter__(self) -> McpToolSource:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the server and open the session (``async with`` does this for you).

        The session lives in a task of its own: the stdio transport's cancel scopes must be
        entered and left by one task, while tools may be called, and the source closed,
        from any task.
        """
        if self._session is not None:
            return
        ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._runner = asyncio.create_task(self._run(ready), name=f"mcp:{self.command}")
        try:
            self._session = await ready
        except OSError as exc:
            raise ConfigurationError(
                f"cannot start the MCP server {self.command!r}: {exc}"
            ) from exc

    async def _run(self, ready: asyncio.Future[ClientSession]) -> None:
        params = StdioServerParameters(
            command=self.command,
            args=self.args,
            env=self.env,
            cwd=None if self.cwd is None else Path(self.cwd),
        )
        try:
            async with AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(
                    stdio_client(params, errlog=self.errlog or sys.stderr)
                )
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                ready.set_result(session)
                await self._stop.wait()
        except BaseException as exc:
            if ready.done():
                raise
            if isinstance(exc, asyncio.CancelledError):
                ready.cancel()
                raise
            ready.set_exception(exc)

    async def close(self) -> None:
        """End the session and stop the server."""
        runner, self._runner, self._session = self._runner, None, None
        if runner is not None:
            self._stop.set()
            await runner

    def _require_session(self) -> ClientSession:
        if self._session is None:
            raise ConfigurationError(
                f"the MCP server {self.command!r} is not running; use 'async with' on the "
                "source (or call start()) before listing or calling its tools"
            )
        return self._session

    async def list_tools(self) -> list[Tool]:
        """The server's tools, as cadenza tools."""
        session = self._require_session()
        tools: list[Tool] = []
        cursor: str | None = None
        while True:
            if cursor:
                page = mcp_types.PaginatedRequestParams(cursor=cursor)
                result = await session.list_tools(params=page)
            else:
                result = await session.list_tools()
            for remote in result.tools:
                tools.append(self._tool(remote))
            cursor = _field(result, "next_cursor", "nextCursor")
            if not cursor:
                return tools

    def _tool(self, remote: Any) -> Tool:
        remote_name: str = remote.name
        schema = dict(_field(remote, "input_schema", "inputSchema", default=None) or {})
        schema.setdefault("type", "object")

        async def handler(arguments: dict[str, Any], context: ToolContext) -> Any:
            return await self.call(remote_name, arguments)

        return Tool(self.prefix + remote_name, remote.description or "", schema, handler)

    async def call(self, name: str, arguments: Mapping[str, Any]) -> Any:
        """Call the server's tool ``name`` (without prefix); returns its structured result
        when it gives one, else its text."""
        session = self._require_session()
        # mcp 1.x takes the read timeout as a timedelta, 2.x as seconds.
        timeout: Any = self.timeout
        if timeout is not None and _MCP_MAJOR < 2:
            timeout = timedelta(seconds=timeout)
        result = await session.call_tool(name, dict(arguments), timeout)
        texts = [
            str(_field(block, "text"))
            for block in result.content
            if _field(block, "type") == "text"
        ]
        if _field(result, "is_error", "isError", default=False):
            raise ToolError(f"the tool {self.prefix + name!r} failed: {' '.join(texts)}")
        structured = _field(result, "structured_content", "structuredContent")
        if structured is not None:
            # Servers wrap non-object results as {"result": value}.
            if isinstance(structured, dict) and list(structured) == ["result"]:
                return structured["result"]
            return structured
        if len(texts) == 1:
            return texts[0]
        return "\n".join(texts) if texts else json.dumps([])
