"""The scenarios' data files, read from the installed package, and their working folder."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from cadenza.config import resolve_home

_PACKAGE = files(__package__ or "cadenza.examples")
KNOWLEDGE: Traversable = _PACKAGE / "knowledge"


def home() -> Path:
    """Where the scenarios keep their ledgers, vector stores and reports: the engine's home
    (``$CADENZA_HOME``, else the per-user data folder; never the current directory)."""
    return resolve_home(None)


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
