"""Array-consistent matching: find leaves of an event that meet a compiled pattern.

EventBridge sees an event as leaf fields named by their dotted paths and sorted by name,
each leaf remembering which element of every enclosing array holds it. A rule (one
alternative of a pattern after ``$or`` is expanded) lists fields in that same order; it
matches when the fields can be met one after another by leaves that never sit in
different elements of the same array. A field that may be absent is absent when no leaf
of its name sits in the elements the fields before it chose.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, Final, NamedTuple

_MISSING: Final = object()

Predicate = Callable[[Any], bool]


class Field(NamedTuple):
    """One field of a compiled alternative."""

    order: bytes  # the dotted name in UTF-16 code units: the order EventBridge visits fields in
    path: tuple[str, ...]
    accepts: Predicate  # whether a leaf value present in the event satisfies the field
    absent_ok: bool  # {"exists": false} is one of the alternatives

    @classmethod
    def at(cls, path: tuple[str, ...], accepts: Predicate, *, absent_ok: bool) -> Field:
        # EventBridge sorts names as Java strings: by UTF-16 code unit, not code point.
        order = ".".join(path).encode("utf-16-be", "surrogatepass")
        return cls(order, path, accepts, absent_ok)


Alternative = tuple[Field, ...]


class Rule(NamedTuple):
    """One alternative of a pattern, its fields in the order EventBridge visits them."""

    fields: tuple[Field, ...]
    # For each field, the path prefixes of it and the fields after it: the only arrays
    # whose chosen element can still change the outcome from there on.
    ahead: tuple[frozenset[tuple[str, ...]], ...]

    @classmethod
    def of(cls, fields: Alternative) -> Rule:
        ordered = tuple(sorted(fields, key=attrgetter("order")))
        ahead: list[frozenset[tuple[str, ...]]] = []
        seen: set[tuple[str, ...]] = set()
        for field in reversed(ordered):
            seen.update(field.path[:i] for i in range(len(field.path) + 1))
            ahead.append(frozenset(seen))
        return cls(ordered, tuple(reversed(ahead)))


# A leaf's place in the event's arrays: for each enclosing array (named by the field path
# down to it and the element indexes taken on the way), the element the leaf sits in.
_Array = tuple[tuple[str, ...], tuple[int, ...]]
_Membership = tuple[tuple[_Array, int], ...]


def match_rule(rule: Rule, event: dict[str, Any]) -> bool:
    # Most events hold no array on the paths a pattern names; then each field has at most
    # one leaf, the order does not matter, and a plain lookup decides.
    for field in rule.fields:
        node: Any = event
        for key in field.path:
            if isinstance(node, dict):
                node = node.get(key, _MISSING)
            elif isinstance(node, list):
                return _search(rule, event)
            else:
                node = _MISSING
                break
        if isinstance(node, list):
            # An array of plain values pins nothing: any element may meet the field.
            if any(isinstance(item, dict | list) for item in node):
                return _search(rule, event)
            if not node:
                if not field.absent_ok:
                    return False
            elif not any(map(field.accepts, node)):
                return False
        elif node is _MISSING or isinstance(node, dict):
            if not field.absent_ok:
                return False
        elif not field.accepts(node):
            return False
    return True


def _search(rule: Rule, event: dict[str, Any]) -> bool:
    """Meet the fields in order, each by a leaf from the array elements the fields before
    it chose (backtracking over the choices), as EventBridge's array-consistent matching
    does."""
    fields, ahead = rule
    count = len(fields)
    leaves: list[list[tuple[Any, _Membership]] | None] = [None] * count
    dead_ends: set[tuple[int, frozenset[tuple[_Array, int]]]] = set()

    def meet(k: int, chosen: dict[_Array, int]) -> bool:
        if k == count:
            return True
        state = None
        if chosen:
            # Choices in arrays no later field reaches cannot matter any more, so states
            # that differ only there share one outcome.
            relevant = ahead[k]
            state = (k, frozenset(c for c in chosen.items() if c[0][0] in relevant))
            if state in dead_ends:
                return False
        field = fields[k]
        found = leaves[k]
        if found is None:
            found = leaves[k] = _leaves(event, field.path)
        accepts, present = field.accepts, False
        for value, membership in found:
            if membership:
                for array, index in membership:
                    if chosen.get(array, index) != index:
                        break
                else:
                    present = True
                    if accepts(value):
                        narrowed = dict(chosen)
                        narrowed.update(membership)
                        if meet(k + 1, narrowed):
                            return True
            else:
                present = True
                if accepts(value) and meet(k + 1, chosen):
                    return True
        if field.absent_ok and not present and meet(k + 1, chosen):
            return True
        if state is not None:
            dead_ends.add(state)
        return False

    return meet(0, {})


def _leaves(event: dict[str, Any], path: tuple[str, ...]) -> list[tuple[Any, _Membership]]:
    """The leaf values named ``path`` in the event, with the array elements each is in."""
    found: list[tuple[Any, _Membership]] = []
    _walk(event, path, 0, (), (), found)
    return found


def _walk(
    node: Any,
    path: tuple[str, ...],
    depth: int,
    indexes: tuple[int, ...],
    membership: _Membership,
    found: list[tuple[Any, _Membership]],
) -> None:
    size = len(path)
    while not isinstance(node, list):
        if depth == size:
            if not isinstance(node, dict):  # an object is not a leaf
                found.append((node, membership))
            return
        if not isinstance(node, dict):
            return
        node = node.get(path[depth], _MISSING)
        if node is _MISSING:
            return
        depth += 1
    array = (path[:depth], indexes)
    at_leaf = depth == size
    for index, item in enumerate(node):
        # Only objects and arrays inside an array tie what they hold to one element;
        # scalars in an array are plain alternatives of the field.
        if isinstance(item, dict | list):
            _walk(item, path, depth, (*indexes, index), (*membership, (array, index)), found)
        elif at_leaf:
            found.append((item, membership))
