"""What every command shares: opening the engine, JSON or human output, error exits, and
showing untrusted text literally.

Model replies, tool output, run errors, step names and event details come from outside the
command's control. Human output shows them as written: rich markup in them is not
interpreted (``[/bold]`` is printed, not parsed), and control characters (escape
sequences, carriage returns, bidirectional overrides) are shown as escapes instead of
being obeyed by the terminal. ``--json`` output is JSON, safe as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any, NoReturn, TextIO, TypeVar

import click
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.markup import escape
from rich.text import Text

from cadenza.config import open_engine
from cadenza.engine.engine import Engine
from cadenza.errors import CadenzaError, InvalidInput

T = TypeVar("T")

# Piped output keeps long lines whole (scripts grep it) instead of folding at 80 columns.
# Emoji codes stay text: ``:warning:`` in a run's error is not an emoji.
_width = None if sys.stdout.isatty() else 200
console = Console(highlight=False, soft_wrap=True, width=_width, emoji=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

EXIT_RUN_FAILED = 1
#: The exit status of a command given the name of something that does not exist.
EXIT_NOT_FOUND = 3

#: Deepest nesting accepted in JSON given on the command line.
MAX_JSON_DEPTH = 200

# What a terminal would act on rather than display: C0 controls (tab and, in multi-line
# text, newline excepted), DEL, C1 controls (0x9b is a one-byte CSI), and the invisible
# marks that reorder or break lines (bidi embeddings, overrides and isolates).
_CONTROLS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_ONE_LINE = re.compile(f"[\n{_CONTROLS}]")
_MULTI_LINE = re.compile(f"[{_CONTROLS}]")
_NAMED = {"\n": "\\n", "\r": "\\r"}
# json.dumps escapes C0 itself; the rest must become \uXXXX, which keeps the JSON valid.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(value: object, *, multiline: bool = False) -> str:
    """``value`` as text a terminal displays instead of obeying: control characters and
    invisible reordering marks become escapes (ESC shows as ``\\x1b``, U+202E as
    ``\\u202e``). Newlines stay when ``multiline``; elsewhere they show as ``\\n``."""
    text = str(value)
    if multiline:
        text = text.replace("\r\n", "\n")
        return _MULTI_LINE.sub(_escaped, text)
    return _ONE_LINE.sub(_escaped, text)


def literal(value: object, *, multiline: bool = False) -> str:
    """``value`` ready to put in a rich markup string: shown exactly as written, with its
    brackets never read as markup and its control characters made visible."""
    return escape(visible(value, multiline=multiline))


def literal_text(value: object, *, style: str = "", multiline: bool = False) -> Text:
    """``value`` as a rich :class:`Text` (no markup at all), control characters visible."""
    return Text(visible(value, multiline=multiline), style=style)


def json_text(value: Any) -> Text:
    """Pretty JSON for a terminal: highlighted, with every string shown literally.

    ``value`` is JSON text or data. Characters a terminal could act on are written as
    ``\\uXXXX`` escapes, so what is shown is still valid JSON with the same meaning.
    """
    data = json.loads(value) if isinstance(value, str) else value
    pretty = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    pretty = _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", pretty)
    return JSONHighlighter()(Text(pretty))


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(fn)


_json_stdout: list[TextIO] = []


def emit_json(data: Any) -> None:
    out = _json_stdout[-1] if _json_stdout else None
    click.echo(json.dumps(data, indent=2, default=_default, ensure_ascii=False), file=out)


@contextlib.contextmanager
def stdout_reserved_for_json(as_json: bool) -> Iterator[None]:
    """With ``--json``, what workflow code prints (``print()`` in a step, a module that
    talks on import) goes to stderr, so stdout carries the JSON document alone."""
    if not as_json:
        yield
        return
    _json_stdout.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _json_stdout.pop()


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def parse_json(text: str | None, what: str, *, example: str = '{"city": "Lisbon"}') -> Any:
    """The JSON value of an option (``@file.json`` reads a file); InvalidInput, naming the
    option and showing ``example`` quoted for the shell, when it is not JSON."""
    if text is None:
        return None
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read {what} from {text[1:]}: {exc}") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno});"
            f" quote it for the shell, e.g. {what} '{example}', or pass @file.json"
        ) from None
    except RecursionError:  # nested far deeper than the limit: the parser gave up
        raise _too_deep(what) from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise _too_deep(what)
    return value


def _too_deep(what: str) -> InvalidInput:
    return InvalidInput(
        f"{what} nests arrays and objects more than {MAX_JSON_DEPTH} levels deep;"
        " flatten it, or keep the deep part in a string or an artifact"
    )


def _depth_exceeds(value: Any, limit: int) -> bool:
    # Iterative, so that measuring a deep value cannot itself overflow the stack.
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > limit:
                return True
            pending.extend((child, depth + 1) for child in item)
    return False


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
            fail(exc)
        except KeyboardInterrupt:
            err_console.print("interrupted; the run keeps its journal and resumes later")
            sys.exit(130)

    return wrapper


def fail(exc: CadenzaError) -> NoReturn:
    """Print ``exc`` on stderr and exit with its code."""
    err_console.print(f"[red]error:[/red] {literal(exc, multiline=True)}")
    sys.exit(type(exc).exit_code)


def report_deleted(
    kind: str, name: str, deleted: bool, *, hint: str = "", as_json: bool = False
) -> int:
    """Say whether the ``kind`` called ``name`` was deleted (``hint``: what to do when there
    was none); the exit status, 0 or :data:`EXIT_NOT_FOUND`."""
    if as_json:
        emit_json({"name": name, "deleted": deleted})
    elif deleted:
        console.print(f"deleted {kind} {literal(name)}")
    else:
        err_console.print(f"[red]error:[/red] no {kind} named {literal(name)}{hint}")
    return 0 if deleted else EXIT_NOT_FOUND


def money(usd: float) -> str:
    """USD for people: cents from a dollar up; below, the digits that say how much (model
    calls cost fractions of a cent)."""
    return f"${usd:,.2f}" if usd >= 1 else f"${usd:.6f}".rstrip("0").rstrip(".")


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
    "EXIT_NOT_FOUND",
    "EXIT_RUN_FAILED",
    "MAX_JSON_DEPTH",
    "Engine",
    "ago",
    "console",
    "emit_json",
    "err_console",
    "fail",
    "json_option",
    "json_text",
    "literal",
    "literal_text",
    "parse_json",
    "report_deleted",
    "run_async",
    "stdout_reserved_for_json",
    "visible",
]
