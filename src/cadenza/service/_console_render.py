"""Rendering for the console and the link pages: Jinja2 templates shipped in the package.

Everything a run holds is untrusted text (a model's reply, a tool's error, an event from
outside): templates autoescape it, and Markdown is rendered with raw HTML turned off, so a
draft that contains ``<script>`` shows the characters instead of running them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

__all__ = ["STATIC", "duration", "markdown", "pretty_json", "render"]

HERE = Path(__file__).parent
STATIC = HERE / "static"


@cache
def _markdown() -> MarkdownIt:
    # CommonMark with tables; "html": False escapes raw HTML, and markdown-it refuses
    # javascript:, vbscript: and data: links (other than images) on its own.
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def markdown(text: Any) -> Markup:
    """``text`` as safe HTML: Markdown for a string, pretty JSON for anything else."""
    if text is None:
        return Markup("")
    if not isinstance(text, str):
        return Markup("<pre>{}</pre>").format(pretty_json(text))
    return Markup(_markdown().render(text))


def pretty_json(value: Any, limit: int = 20_000) -> str:
    """Indented JSON (a JSON text is parsed first), cut at ``limit`` characters."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return str(value)[:limit]
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return (
        text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more characters)"
    )


def compact(value: Any) -> str:
    """One-line JSON, for details in a table cell."""
    return json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))


def duration(value: timedelta | float | None) -> str:
    """A short human duration: 840 ms, 12.3 s, 4 min 05 s, 2 h 10 min, 3 d 4 h."""
    if value is None:
        return ""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
    return f"{int(seconds // 86400)} d {int(seconds % 86400 // 3600)} h"


def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def money(value: float | None) -> str:
    if not value:
        return "$0"
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        markdown=markdown,
        pretty_json=pretty_json,
        compact=compact,
        duration=duration,
        when=when,
        money=money,
    )
    return env


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A page (or an htmx fragment) rendered from ``template``."""
    page = environment().get_template(template).render(request=request, **context)
    response = HTMLResponse(page, status_code=status_code, headers=headers)
    # The pages show runs' data: never cached, never framed by another site.
    response.headers.setdefault("cache-control", "no-store")
    response.headers.setdefault("x-frame-options", "DENY")
    response.headers.setdefault(
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self';"
        " style-src-attr 'unsafe-inline'; script-src 'self';"
        " frame-ancestors 'none'; form-action 'self'",
    )
    response.headers.setdefault("referrer-policy", "no-referrer")
    return response
