"""A set of tools, and least-privilege views of it for each agent.

A :class:`Toolset` holds tools by name. :meth:`Toolset.restrict` gives an agent a view that
only lets it see and call the tools on its allow-list: calling a tool that exists but is not
allowed raises :class:`~cadenza.errors.ToolNotAllowed`, calling one that does not exist
raises :class:`~cadenza.errors.UnknownTool`. Both messages are written so they can be
handed back to the model, which can then pick a tool it may use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..errors import ConfigurationError, ToolNotAllowed, UnknownTool
from ..models._types import ToolCall, ToolSpec
from ._tool import Tool

__all__ = ["Toolset"]


class Toolset:
    """Tools by name, optionally limited to an allow-list.

    ``tools = Toolset([search, fetch_page, send_email])``;
    ``researcher = tools.restrict(["search", "fetch_page"])``.
    """

    def __init__(
        self,
        tools: Iterable[Tool | Callable[..., Any]] = (),
        *,
        allow: Iterable[str] | None = None,
    ) -> None:
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.add(item)
        self._allow: frozenset[str] | None = None
        if allow is not None:
            self._allow = self._checked_allow(allow)

    def _checked_allow(self, allow: Iterable[str]) -> frozenset[str]:
        names = frozenset(allow)
        missing = sorted(names - self._tools.keys())
        if missing:
            raise ConfigurationError(
                f"the allow-list names tools that do not exist: {', '.join(missing)}; "
                f"known tools: {', '.join(sorted(self._tools)) or 'none'}"
            )
        return names

    def add(self, item: Tool | Callable[..., Any]) -> Tool:
        """Add a tool (or a function, made into one); names must be unique."""
        added = item if isinstance(item, Tool) else Tool.from_function(item)
        if added.name in self._tools and self._tools[added.name] is not added:
            raise ConfigurationError(f"two tools are named {added.name!r}; rename one")
        self._tools[added.name] = added
        return added

    def restrict(self, allow: Iterable[str]) -> Toolset:
        """A view of this set that allows only the tools named in ``allow``.

        The view shares the tools; restricting a view can only narrow it further.
        """
        view = Toolset()
        view._tools = self._tools
        names = self._checked_allow(allow)
        if self._allow is not None:
            names &= self._allow
        view._allow = names
        return view

    @property
    def allowed(self) -> list[str]:
        """The names of the tools that may be called, sorted."""
        return sorted(self._tools if self._allow is None else self._allow)

    def get(self, name: str) -> Tool:
        """The tool ``name``, if it exists and is allowed."""
        found = self._tools.get(name)
        if found is None:
            raise UnknownTool(name, self.allowed)
        if self._allow is not None and name not in self._allow:
            raise ToolNotAllowed(name, self.allowed)
        return found

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        """What the model is told: the allowed tools only."""
        return tuple(self._tools[n].spec for n in self.allowed)

    async def call(
        self,
        name: str,
        arguments: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Check ``name`` is allowed, validate ``arguments``, and run the tool."""
        return await self.get(name).call(
            arguments, idempotency_key=idempotency_key, metadata=metadata
        )

    async def execute(self, call: ToolCall, *, idempotency_key: str | None = None) -> Any:
        """Run a tool call a model asked for."""
        return await self.call(call.name, call.arguments, idempotency_key=idempotency_key)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.allowed

    def __iter__(self) -> Iterator[Tool]:
        return iter([self._tools[n] for n in self.allowed])

    def __len__(self) -> int:
        return len(self.allowed)

    def __repr__(self) -> str:
        return f"Toolset({self.allowed!r})"
