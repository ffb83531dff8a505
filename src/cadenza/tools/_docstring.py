"""Read a tool's description and parameter descriptions from its docstring.

Understands the three common styles: Google (``Args:`` with ``name: text`` lines), NumPy
(``Parameters`` underlined, ``name : type`` then indented text) and Sphinx (``:param name:``).
"""

from __future__ import annotations

import inspect
import re

__all__ = ["parse_docstring"]

_GOOGLE_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params)\s*:\s*$")
_OTHER_SECTION = re.compile(
    r"^(Returns?|Yields?|Raises?|Examples?|Notes?|See Also|References|Attributes|Warnings?)"
    r"\s*:?\s*$"
)
_GOOGLE_ARG = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ARG = re.compile(r"^\*{0,2}(\w+)\s*(?::\s*.*)?$")
_SPHINX_ARG = re.compile(r"^:param\s+(?:[\w\[\], |.]+\s+)?(\w+)\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description (text before the first section) and a description per parameter."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    description: list[str] = []
    params: dict[str, str] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        underlined = index + 1 < len(lines) and set(lines[index + 1].strip()) == {"-"}
        if _GOOGLE_SECTION.match(stripped):
            index = _google(lines, index + 1, params)
        elif underlined and stripped in ("Parameters", "Args", "Arguments", "Other Parameters"):
            index = _numpy(lines, index + 2, params)
        elif _SPHINX_ARG.match(stripped):
            index = _sphinx(lines, index, params)
        elif _OTHER_SECTION.match(stripped) or underlined or stripped.startswith(":"):
            index = _skip_section(lines, index + (2 if underlined else 1))
        else:
            if not params:
                description.append(line)
            index += 1
    paragraphs = re.split(r"\n\s*\n", "\n".join(description).strip())
    text = "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())
    return text, params


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _google(lines: list[str], index: int, params: dict[str, str]) -> int:
    base: int | None = None
    current: str | None = None
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
            continue
        if base is None:
            base = _indent(line)
        if _indent(line) < base:
            break
        match = _GOOGLE_ARG.match(line.strip())
        if _indent(line) == base and match:
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif current is not None:
            params[current] = (params[current] + " " + line.strip()).strip()
        index += 1
    return index


def _numpy(lines: list[str], index: int, params: dict[str, str]) -> int:
    current: str | None = None
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        if index + 1 < len(lines) and set(lines[index + 1].strip()) == {"-"} and stripped:
            break  # the next section
        if not stripped:
            index += 1
            continue
        if _indent(line) == 0:
            match = _NUMPY_ARG.match(stripped)
            current = match.group(1) if match else None
            if current:
                params[current] = ""
        elif current is not None:
            params[current] = (params[current] + " " + stripped).strip()
        index += 1
    return index


def _sphinx(lines: list[str], index: int, params: dict[str, str]) -> int:
    while index < len(lines):
        match = _SPHINX_ARG.match(lines[index].strip())
        if not match:
            if lines[index].strip().startswith(":") or not lines[index].strip():
                index += 1
                continue
            break
        name, text = match.group(1), match.group(2).strip()
        index += 1
        while index < len(lines) and lines[index].startswith((" ", "\t")):
            text += " " + lines[index].strip()
            index += 1
        params[name] = text
    return index


def _skip_section(lines: list[str], index: int) -> int:
    while index < len(lines):
        line = lines[index]
        if line.strip() and _indent(line) == 0:
            break
        index += 1
    return index
