"""The error tree drawn in ``cadenza.errors`` is the real class hierarchy, and every error in
it can be imported from where the drawing says: ``cadenza``, or the package it is marked
with (``[cadenza.testing]``)."""

from __future__ import annotations

import builtins
import importlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest

import cadenza
import cadenza.errors

# Every module of the package is imported in a fresh interpreter (so that nothing here is
# registered twice) and each CadenzaError subclass it defines is reported.
_LIST_ERRORS = """
import importlib, json, pkgutil, cadenza
from cadenza.errors import CadenzaError

for module in pkgutil.walk_packages(cadenza.__path__, "cadenza."):
    importlib.import_module(module.name)
found, pending = {}, [CadenzaError]
while pending:
    cls = pending.pop()
    found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    pending.extend(cls.__subclasses__())
print(json.dumps(sorted(name for name in found if name.startswith("cadenza."))))
"""


@dataclass(frozen=True)
class Drawn:
    name: str
    parent: str  # the class it hangs under, the one in parentheses, or Exception
    also: tuple[str, ...]  # further bases: "(also a ConfigurationError)"
    home: str  # the package it is imported from


_LINE = re.compile(r"^(?P<lead>[ │├└─]*)(?P<name>[A-Z]\w*)(?P<rest>.*)$")


def drawn_tree(docstring: str) -> list[Drawn]:
    lines = docstring.split("::\n", 1)[1].split("\n\n", 1)[0].splitlines()
    drawn: list[Drawn] = []
    ancestors: list[str] = []  # ancestors[depth] = the last class drawn at that depth
    for line in (line.removeprefix("    ") for line in lines if line.strip()):
        match = _LINE.match(line)
        assert match, f"cannot read the tree line {line!r}"
        depth, rest = len(match["lead"]) // 4, match["rest"]
        explicit = re.match(r"\s*\((\w+)\)", rest)
        if depth == 0:
            parent = explicit[1] if explicit else "Exception"
        else:
            parent = ancestors[depth - 1]
        del ancestors[depth:]
        ancestors.append(match["name"])
        marked = re.search(r"\[(cadenza[\w.]*)\]", rest)
        drawn.append(
            Drawn(
                name=match["name"],
                parent=parent,
                also=tuple(re.findall(r"\(also an? (\w+)\)", rest)),
                home=marked[1] if marked else "cadenza",
            )
        )
    return drawn


TREE = drawn_tree(cadenza.errors.__doc__ or "")


def drawn_class(name: str) -> type:
    for entry in TREE:
        if entry.name == name:
            cls = getattr(importlib.import_module(entry.home), name)
            assert isinstance(cls, type)
            return cls
    builtin = getattr(builtins, name)
    assert isinstance(builtin, type)
    return builtin


def test_the_drawing_is_read_whole() -> None:
    names = [entry.name for entry in TREE]
    assert names[0] == "CadenzaError"
    assert {"StoreFull", "ModelNotFound", "RunCancelled", "ToolArgumentsInvalid"} <= set(names)
    assert len(names) == len(set(names)), "a class is drawn twice"
    store_full = next(entry for entry in TREE if entry.name == "StoreFull")
    assert store_full.parent == "StoreUnavailable"


@pytest.mark.parametrize("entry", TREE, ids=lambda entry: entry.name)
def test_each_drawn_class_exists_under_its_drawn_parent(entry: Drawn) -> None:
    module = importlib.import_module(entry.home)
    assert entry.name in getattr(module, "__all__", ()), (
        f"{entry.name} is drawn in the error tree but not exported from {entry.home}"
    )
    cls = drawn_class(entry.name)
    expected = {drawn_class(name) for name in (entry.parent, *entry.also) if name}
    assert set(cls.__bases__) == expected, (
        f"{entry.name} derives from {[b.__name__ for b in cls.__bases__]}, drawn under"
        f" {[b.__name__ for b in expected]}"
    )
    assert issubclass(cls, BaseException)
    if entry.home == "cadenza":
        assert cls.__module__ == "cadenza.errors", f"{entry.name} belongs in cadenza.errors"
        assert getattr(cadenza.errors, entry.name) is cls


def test_every_error_cadenza_defines_is_drawn() -> None:
    listed = subprocess.run(
        [sys.executable, "-c", _LIST_ERRORS], capture_output=True, text=True, check=True
    )
    defined = set(json.loads(listed.stdout))
    drawn = {
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in (drawn_class(entry.name) for entry in TREE)
        if issubclass(cls, cadenza.errors.CadenzaError)
    }
    assert len(defined) > 40
    assert defined - drawn == set(), "define these in the tree of cadenza/errors.py"
    assert drawn - defined == set()


def test_every_error_of_the_errors_module_is_drawn_and_exported() -> None:
    classes = {
        name
        for name in cadenza.errors.__all__
        if isinstance(getattr(cadenza.errors, name), type)
        and issubclass(getattr(cadenza.errors, name), BaseException)
    }
    assert classes == {entry.name for entry in TREE if entry.home == "cadenza"}
    assert classes <= set(cadenza.__all__)
