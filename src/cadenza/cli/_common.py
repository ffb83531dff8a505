"""What every command shares: opening the engine, JSON or human output, error exits."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console

from cadenza.config import open_engine
from cadenza.engine.engine import Engine
from cadenza.errors import CadenzaError, InvalidInput

T = TypeVar("T")

# Piped output keeps long lines whole (scripts grep it) instead of folding at 80 columns.
_width = None if sys.stdout.isatty() else 200
console = Console(highlight=False, soft_wrap=True, width=_width)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_RUN_FAILED = 1


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_default, ensure_ascii=False))


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise InvalidInput(f"cannot read {what} from {text[1:]}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno});"
            f' quote it for the shell, e.g. --input \'{{"city": "Lisbon"}}\', or pass @file.json'
        ) from None


def run_async(fn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """Run an async command body with an engine; turn cadenza errors into clear exits."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        async def body() -> T:
            engine = await open_engine()
            try:
                return await fn(engine, *args, **kwargs)
            finally:
                await engine.close()

        try:
            return asyncio.run(body())
        except CadenzaError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            sys.exit(type(exc).exit_code)
        except KeyboardInterrupt:
            err_console.print("interrupted; the run keeps its journal and resumes later")
            sys.exit(130)

    return wrapper


def ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "-"
    seconds = (now - value).total_seconds()
    if seconds < 0:
        return f"in {_span(-seconds)}"
    return f"{_span(seconds)} ago"


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


__all__ = [
    "EXIT_RUN_FAILED",
    "Engine",
    "ago",
    "console",
    "emit_json",
    "err_console",
    "json_option",
    "parse_json",
    "run_async",
]
