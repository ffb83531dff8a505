"""Structured logs: every line a JSON object carrying the run, operation and trace it was
written for.

The engine sets the run and trace when an activation starts and the operation when a
step's attempt runs, in a context variable, so asyncio tasks and worker threads started
from there inherit them; :class:`ContextFilter` copies them onto each log record, whoever
logged it (the workflow's logger, a step's, a library's). ``cadenza --log-format json``
installs :class:`JsonFormatter` on the root logger.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

__all__ = ["ContextFilter", "JsonFormatter", "configure_logging", "log_context"]

_CONTEXT: ContextVar[dict[str, str]] = ContextVar("cadenza_log_context", default={})  # noqa: B039 - never mutated
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Log records written inside carry ``fields`` (run_id, op_id, trace_id, workflow)."""
    merged = {**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set(merged)
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current run, operation and trace onto each record (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the run context, extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: int, *, fmt: str = "text") -> None:
    """Root logging for the CLI: plain text lines, or JSON lines (``fmt="json"``)."""
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
