"""The scenarios' data files, read from the installed package, and their working folder."""

from __future__ import annotations

import os
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

_PACKAGE = files(__package__ or "cadenza.examples")
KNOWLEDGE: Traversable = _PACKAGE / "knowledge"


def home() -> Path:
    """Where the scenarios keep their ledgers, vector stores and reports: ``$CADENZA_HOME``."""
    return Path(os.environ.get("CADENZA_HOME") or ".cadenza")


def read_reports() -> dict[str, str]:
    """The bike share's ten field reports, by name (``01-ridership-q1``, …), in order."""
    found = sorted(
        (entry for entry in KNOWLEDGE.iterdir() if entry.name.endswith(".md")),
        key=lambda entry: entry.name,
    )
    return {entry.name.removesuffix(".md"): entry.read_text(encoding="utf-8") for entry in found}


def read_policy() -> str:
    """The bike share's rental and insurance policy."""
    return (_PACKAGE / "data" / "rental_policy.md").read_text(encoding="utf-8")
