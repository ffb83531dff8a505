"""EventBridge event patterns, compiled once into matchers and matched many times.

A pattern is a JSON object shaped like the events it selects. Each key names a field; its
value is either a nested object (descend into the event) or a list of alternatives that
match the field's value, any one of which is enough::

    {"source": ["shop.orders"],
     "detail": {"total": [{"numeric": [">", 100]}], "country": ["NL", "BE"]}}

Fields are combined with AND; ``"$or": [{...}, {...}]`` at any object level combines whole
sub-patterns with OR. An alternative is an exact JSON value (string, number, boolean,
null) or a one-key match expression: ``prefix``, ``suffix``, ``equals-ignore-case``,
``wildcard``, ``anything-but``, ``numeric``, ``exists`` or ``cidr``.

Arrays in the event follow EventBridge: a leaf matches when any element of the array
matches, and a nested pattern matched against an array of objects must be satisfied by one
element as a whole, never by fields picked from different elements. ``exists`` looks only
at leaves: a field holding an object, or an empty array, counts as absent.

Compiling turns the pattern into a tree of small closures, so matching walks the pattern
once and touches only the fields it names.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import socket
from collections.abc import Callable, Mapping
from operator import eq, ge, gt, le, lt
from typing import Any, Final

from cadenza.errors import InvalidEventPattern
from cadenza.events.envelope import Event

__all__ = ["EventPattern", "compile_pattern", "matches"]

# Matching a part of a pattern against a part of an event has three outcomes. ABSENT means
# the part holds only because fields it wants missing are missing; EventBridge checks such
# absence against the whole array a field sits in unless another field of the same
# sub-pattern has already pinned down one element, and keeping ABSENT apart from POSITIVE
# is what lets the matcher do the same.
_NO: Final = 0
_ABSENT: Final = 1
_POSITIVE: Final = 2

_MISSING: Final = object()

_Predicate = Callable[[Any], bool]
_Node = Callable[[Any], int]
_Path = tuple[str, ...]

_ANYTHING_BUT_OPERATORS: Final = ("prefix", "suffix", "wildcard", "equals-ignore-case")
_OPERATORS: Final = frozenset(
    {*_ANYTHING_BUT_OPERATORS, "anything-but", "numeric", "exists", "cidr"}
)
_COMPARE: Final[dict[Any, Callable[[Any, Any], bool]]] = {
    "=": eq,
    "<": lt,
    "<=": le,
    ">": gt,
    ">=": ge,
}
_NUMERIC_SHAPES: Final = '[">", 0, "<=", 5], [">=", 1], ["<", 10] or ["=", 3.5]'


class EventPattern:
    """A compiled event pattern. Build one with :func:`compile_pattern`."""

    __slots__ = ("_key", "_node", "_pattern")

    def __init__(self, pattern: dict[str, Any], node: _Node) -> None:
        self._pattern = pattern
        self._node = node
        # Compared as canonical JSON: as dicts, [true] would equal [1].
        self._key = json.dumps(pattern, sort_keys=True)

    @property
    def pattern(self) -> dict[str, Any]:
        """The pattern as given, a JSON object (a private copy; do not mutate it)."""
        return self._pattern

    def matches(self, event: Mapping[str, Any] | Event) -> bool:
        """Whether ``event`` matches: the dict from ``Event.to_dict()``, an :class:`Event`
        itself, or any JSON object."""
        if isinstance(event, Event):
            event = event.to_dict()
        elif not isinstance(event, dict):
            event = dict(event)
        return self._node(event) != _NO

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventPattern):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"EventPattern({json.dumps(self._pattern)})"


def compile_pattern(pattern: Mapping[str, Any] | str | EventPattern) -> EventPattern:
    """Compile an event pattern, given as a dict or as JSON text.

    Raises :class:`~cadenza.errors.InvalidEventPattern` naming the path of the first
    malformed part::

        >>> p = compile_pattern({"detail": {"size": [{"numeric": [">", 0, "<=", 5]}]}})
        >>> p.matches({"detail": {"size": 3}})
        True
    """
    if isinstance(pattern, EventPattern):
        return pattern
    if isinstance(pattern, str):
        try:
            pattern = json.loads(pattern)
        except json.JSONDecodeError as exc:
            raise InvalidEventPattern(f"event pattern is not valid JSON: {exc}") from exc
    if not isinstance(pattern, Mapping):
        raise _fail(
            (),
            f'an event pattern must be a JSON object like {{"source": ["my.app"]}}, got '
            f"{_show(pattern)}",
        )
    owned = copy.deepcopy(dict(pattern))
    node, _ = _compile_object(owned, (), inside_or=False)
    return EventPattern(owned, node)


def matches(
    pattern: Mapping[str, Any] | str | EventPattern, event: Mapping[str, Any] | Event
) -> bool:
    """Whether ``event`` matches ``pattern``; compile the pattern once to match it often."""
    return compile_pattern(pattern).matches(event)


# --- errors ----------------------------------------------------------------------------


def _fail(path: _Path, message: str) -> InvalidEventPattern:
    where = ".".join(path) if path else "the top level"
    return InvalidEventPattern(f"pattern at {where}: {message}")


def _show(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- objects ---------------------------------------------------------------------------


def _compile_object(obj: Any, path: _Path, *, inside_or: bool) -> tuple[_Node, int]:
    """Compile a pattern object; returns its matcher and its outcome on a missing value."""
    if not isinstance(obj, Mapping):
        raise _fail(path, f"expected a JSON object, got {_show(obj)}")
    if not obj:
        raise _fail(path, "an empty object matches nothing; name at least one field")
    fields: list[tuple[str, _Node]] = []
    or_groups: list[tuple[_Node, ...]] = []
    when_missing = _ABSENT
    for key, value in obj.items():
        if not isinstance(key, str):
            raise _fail(path, f"field names must be strings, got {key!r}")
        if key == "$or":
            branches, branch_missing = _compile_or(value, path)
            or_groups.append(branches)
            when_missing = min(when_missing, branch_missing)
            continue
        child_path = (*path, key)
        if inside_or and key in _OPERATORS:
            raise _fail(
                child_path,
                f"{key!r} is a match operator, not a field name; inside $or each object "
                f'names fields, like {{"$or": [{{"source": [{{"{key}": ...}}]}}, ...]}}',
            )
        if isinstance(value, list):
            child, child_missing = _compile_leaf(value, child_path)
        elif isinstance(value, Mapping):
            child, child_missing = _compile_object(value, child_path, inside_or=inside_or)
        elif key in _OPERATORS:
            raise _fail(
                child_path,
                f"{key!r} is a match operator; put it in the list of values of the field "
                f'it tests, like "state": [{{"{key}": {_show(value)}}}]',
            )
        else:
            raise _fail(
                child_path,
                f"expected a list of values to match, like [{_show(value)}], or a nested "
                f"object, got {_show(value)}",
            )
        fields.append((key, child))
        when_missing = min(when_missing, child_missing)
    return _object_node(tuple(fields), tuple(or_groups), when_missing), when_missing


def _compile_or(value: Any, path: _Path) -> tuple[tuple[_Node, ...], int]:
    or_path = (*path, "$or")
    if not isinstance(value, list) or len(value) < 2:
        raise _fail(
            or_path,
            f'$or needs a list of at least two objects, like [{{"a": [1]}}, {{"b": [2]}}], '
            f"got {_show(value)}",
        )
    branches: list[_Node] = []
    when_missing = _NO
    for index, branch in enumerate(value):
        branch_path = (*path, f"$or[{index}]")
        if not isinstance(branch, Mapping):
            raise _fail(branch_path, f"each $or entry must be an object, got {_show(branch)}")
        node, branch_missing = _compile_object(branch, branch_path, inside_or=True)
        branches.append(node)
        when_missing = max(when_missing, branch_missing)
    return tuple(branches), when_missing


def _object_node(
    fields: tuple[tuple[str, _Node], ...],
    or_groups: tuple[tuple[_Node, ...], ...],
    when_missing: int,
) -> _Node:
    missing = _MISSING

    def match_object(obj: dict[str, Any]) -> int:
        outcome = _ABSENT
        for key, child in fields:
            result = child(obj.get(key, missing))
            if not result:
                return _NO
            if result == _POSITIVE:
                outcome = _POSITIVE
        for branches in or_groups:
            best = _NO
            for branch in branches:
                result = branch(obj)
                if result > best:
                    best = result
                    if best == _POSITIVE:
                        break
            if best == _NO:
                return _NO
            if best == _POSITIVE:
                outcome = _POSITIVE
        return outcome

    def node(value: Any) -> int:
        if isinstance(value, dict):
            return match_object(value)
        if isinstance(value, list):
            # One element must satisfy the whole sub-pattern. An element that satisfies it
            # only through absence does not pin the array down, so then every element must.
            any_failed = False
            for item in _flatten(value):
                result = match_object(item) if isinstance(item, dict) else when_missing
                if result == _POSITIVE:
                    return _POSITIVE
                if result == _NO:
                    any_failed = True
            return _NO if any_failed else when_missing
        return when_missing

    return node


def _flatten(values: list[Any]) -> list[Any]:
    for v in values:
        if isinstance(v, list):
            break
    else:
        return values
    flat: list[Any] = []
    for v in values:
        if isinstance(v, list):
            flat.extend(_flatten(v))
        else:
            flat.append(v)
    return flat


# --- leaves ----------------------------------------------------------------------------


def _compile_leaf(alternatives: list[Any], path: _Path) -> tuple[_Node, int]:
    if not alternatives:
        raise _fail(path, 'an empty list matches nothing; give at least one value, like ["a"]')
    exact: set[Any] = set()
    checks: list[_Predicate] = []
    exists_true = exists_false = False
    for alt in alternatives:
        if alt is None or isinstance(alt, str | bool):
            exact.add(_exact_key(alt))
        elif isinstance(alt, int | float):
            exact.add(_number(alt, path, "a value to match"))
        elif isinstance(alt, Mapping):
            operator, argument = _single_operator(alt, path)
            if operator == "exists":
                if not isinstance(argument, bool):
                    raise _fail(path, f"exists takes true or false, got {_show(argument)}")
                exists_true = exists_true or argument
                exists_false = exists_false or not argument
            else:
                checks.append(_compile_operator(operator, argument, path))
        else:
            raise _fail(
                path,
                f"each alternative must be a string, number, boolean, null or a match "
                f'expression like {{"prefix": "a"}}, got {_show(alt)}',
            )
    when_missing = _ABSENT if exists_false else _NO
    node = _leaf_node(frozenset(exact), tuple(checks), exists_true, when_missing)
    return node, when_missing


# True == 1 and hash(True) == hash(1) in Python, but a pattern's true never matches 1.
_TRUE: Final = object()
_FALSE: Final = object()


def _exact_key(value: Any) -> Any:
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    return value


def _accepts(exact: frozenset[Any], checks: tuple[_Predicate, ...]) -> _Predicate:
    """One predicate for all alternatives of a leaf: exact values by one set lookup (so 5
    matches 5.0, as numbers), then the match expressions in order."""

    def accepts(value: Any) -> bool:
        if (value if value.__class__ is not bool else _exact_key(value)) in exact:
            return True
        for check in checks:
            if check(value):
                return True
        return False

    return accepts


_SCALARS: Final = frozenset({str, int, float, type(None)})
_NUMBERS: Final = (int, float)


def _leaf_node(
    exact: frozenset[Any], checks: tuple[_Predicate, ...], exists_true: bool, when_missing: int
) -> _Node:
    accepts = _accepts(exact, checks)
    scalars, missing = _SCALARS, _MISSING

    def node(value: Any) -> int:
        # The common case inline: a plain string, number or null (bool has its own key).
        if value.__class__ in scalars:
            if exists_true or value in exact:
                return _POSITIVE
            for check in checks:
                if check(value):
                    return _POSITIVE
            return _NO
        if value is missing or isinstance(value, dict):
            return when_missing
        if isinstance(value, list):
            # Objects in the array are not leaves; an array without leaves counts as absent.
            has_leaves = False
            for item in _flatten(value):
                if isinstance(item, dict):
                    continue
                if exists_true or accepts(item):
                    return _POSITIVE
                has_leaves = True
            return _NO if has_leaves else when_missing
        return _POSITIVE if exists_true or accepts(value) else _NO

    return node


def _single_operator(expression: Mapping[str, Any], path: _Path) -> tuple[str, Any]:
    if len(expression) != 1:
        raise _fail(
            path,
            f'a match expression has exactly one operator, like {{"prefix": "a"}}, got '
            f"{_show(expression)}",
        )
    ((operator, argument),) = expression.items()
    if operator not in _OPERATORS:
        raise _fail(
            path,
            f"unknown match operator {operator!r}; use one of {', '.join(sorted(_OPERATORS))}",
        )
    return operator, argument


def _number(value: Any, path: _Path, role: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(path, f"{role} must be a number, got {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(path, f"{role} must be a finite number, got {value!r}")
    return value


# --- match expressions -----------------------------------------------------------------


def _compile_operator(operator: str, argument: Any, path: _Path) -> _Predicate:
    if operator in ("prefix", "suffix"):
        return _compile_affix(operator, argument, path)
    if operator == "equals-ignore-case":
        folded = _string(argument, path, operator).casefold()
        return lambda v: isinstance(v, str) and v.casefold() == folded
    if operator == "wildcard":
        return _compile_wildcard(_string(argument, path, operator), path)
    if operator == "numeric":
        return _compile_numeric(argument, path)
    if operator == "cidr":
        return _compile_cidr(argument, path)
    return _compile_anything_but(argument, path)


def _string(argument: Any, path: _Path, operator: str) -> str:
    if not isinstance(argument, str):
        raise _fail(
            path, f'{operator} takes a string, like {{"{operator}": "a"}}, got {_show(argument)}'
        )
    return argument


def _compile_affix(operator: str, argument: Any, path: _Path) -> _Predicate:
    ignore_case = isinstance(argument, Mapping)
    if ignore_case:
        if list(argument) != ["equals-ignore-case"]:
            raise _fail(
                path,
                f'{operator} takes a string or {{"equals-ignore-case": "..."}}, got '
                f"{_show(argument)}",
            )
        argument = argument["equals-ignore-case"]
    text = _string(argument, path, operator)
    test = str.startswith if operator == "prefix" else str.endswith
    if ignore_case:
        folded = text.casefold()
        return lambda v: isinstance(v, str) and test(v.casefold(), folded)
    return lambda v: isinstance(v, str) and test(v, text)


def _compile_wildcard(text: str, path: _Path) -> _Predicate:
    """``*`` matches any run of characters; ``\\*`` is a literal star and ``\\\\`` a
    literal backslash. Consecutive stars and any other escape are errors, as in EventBridge."""
    parts: list[str] = []  # the literal text between stars
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "*":
            if text.startswith("*", i + 1):
                raise _fail(
                    path,
                    f"wildcard {text!r} has consecutive '*' at position {i}; one '*' already "
                    f"matches any run of characters",
                )
            parts.append("".join(literal))
            literal.clear()
        elif char == "\\":
            if i + 1 == len(text) or text[i + 1] not in "*\\":
                raise _fail(
                    path,
                    f"wildcard {text!r} has a bad escape at position {i}; only '\\*' "
                    f"(a literal star) and '\\\\' (a literal backslash) are allowed",
                )
            literal.append(text[i + 1])
            i += 1
        else:
            literal.append(char)
        i += 1
    parts.append("".join(literal))
    if len(parts) == 1:
        exact = parts[0]
        return lambda v: isinstance(v, str) and v == exact
    head, *middle, tail = parts

    # With only '*' to expand, taking the leftmost occurrence of each middle part is
    # enough: a later occurrence can only leave less room for the rest.
    def glob(v: Any) -> bool:
        if not isinstance(v, str) or not v.startswith(head) or not v.endswith(tail):
            return False
        start, end = len(head), len(v) - len(tail)
        for part in middle:
            found = v.find(part, start, end)
            if found < 0:
                return False
            start = found + len(part)
        return start <= end

    return glob


def _compile_numeric(argument: Any, path: _Path) -> _Predicate:
    def bad(detail: str = "") -> InvalidEventPattern:
        got = f"; got {_show(argument)}" if not detail else f"; {detail}"
        return _fail(path, f"numeric needs operator/number pairs like {_NUMERIC_SHAPES}{got}")

    if not isinstance(argument, list) or len(argument) not in (2, 4):
        raise bad()
    pairs = [(argument[i], argument[i + 1]) for i in range(0, len(argument), 2)]
    for operator, value in pairs:
        if operator not in _COMPARE:
            raise bad(f"unknown operator {_show(operator)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad(f"{_show(value)} after {operator!r} is not a number")
        _number(value, path, f"the number after {operator!r}")
    (first_op, first), *rest = pairs
    low = _COMPARE[first_op]
    if not rest:
        return lambda v: _is_number(v) and low(v, first)
    if first_op == "=":
        raise bad('"=" stands alone')
    (second_op, second) = rest[0]
    if first_op not in (">", ">=") or second_op not in ("<", "<="):
        raise bad('a range gives the lower bound first, like [">", 0, "<=", 5]')
    if first > second or (first == second and (first_op == ">" or second_op == "<")):
        raise bad(f"the range {first_op} {first} and {second_op} {second} is empty")
    high = _COMPARE[second_op]
    return lambda v: _is_number(v) and low(v, first) and high(v, second)


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBERS) and value.__class__ is not bool


def _compile_cidr(argument: Any, path: _Path) -> _Predicate:
    example = 'like "10.0.0.0/24" or "2001:db8::/32"'
    if not isinstance(argument, str) or "/" not in argument:
        raise _fail(path, f"cidr takes an address block {example}, got {_show(argument)}")
    try:
        network = ipaddress.ip_network(argument, strict=False)
    except ValueError as exc:
        raise _fail(path, f"cidr {argument!r} is not an address block {example}: {exc}") from exc
    # inet_pton parses an address several times faster than ipaddress does.
    family = socket.AF_INET if network.version == 4 else socket.AF_INET6
    base, mask = int(network.network_address), int(network.netmask)

    def in_block(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        try:
            packed = socket.inet_pton(family, v)
        except (OSError, ValueError):
            return False
        return int.from_bytes(packed) & mask == base

    return in_block


def _compile_anything_but(argument: Any, path: _Path) -> _Predicate:
    """anything-but matches any present leaf value that its argument does not match."""
    if isinstance(argument, Mapping):
        if len(argument) != 1 or next(iter(argument)) not in _ANYTHING_BUT_OPERATORS:
            raise _fail(
                path,
                f"anything-but takes a value, a list of values, or one of "
                f"{', '.join(_ANYTHING_BUT_OPERATORS)}, like "
                f'{{"anything-but": {{"prefix": "init"}}}}, got {_show(argument)}',
            )
        ((operator, values),) = argument.items()
        texts = _anything_but_strings(operator, values, path)
        if operator == "equals-ignore-case":
            folded = frozenset(t.casefold() for t in texts)

            def excluded(v: Any) -> bool:
                return isinstance(v, str) and v.casefold() in folded

        else:
            subs = tuple(_compile_operator(operator, t, path) for t in texts)

            def excluded(v: Any) -> bool:
                return any(sub(v) for sub in subs)

        return lambda v: not excluded(v)
    values = argument if isinstance(argument, list) else [argument]
    if not values:
        raise _fail(path, "anything-but needs at least one value to exclude")
    kinds = set()
    for value in values:
        if isinstance(value, str):
            kinds.add("string")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            _number(value, path, "an anything-but value")
            kinds.add("number")
        else:
            raise _fail(
                path,
                f"anything-but excludes strings or numbers, got {_show(value)}; to match a "
                f'missing field use {{"exists": false}}',
            )
    if len(kinds) > 1:
        raise _fail(path, f"anything-but lists only strings or only numbers, got {_show(values)}")
    accepts = _accepts(frozenset(values), ())
    return lambda v: not accepts(v)


def _anything_but_strings(operator: str, values: Any, path: _Path) -> list[str]:
    items = values if isinstance(values, list) else [values]
    if not items:
        raise _fail(path, f"anything-but {operator} needs at least one string")
    for item in items:
        if not isinstance(item, str):
            raise _fail(path, f"anything-but {operator} takes strings, got {_show(item)}")
        if not item and operator in ("prefix", "suffix"):
            raise _fail(path, f'anything-but {operator} "" would exclude every string')
    return items
