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

Matching follows EventBridge, which sees an event as a sorted list of leaf fields named by
their dotted paths, arrays flattened, each leaf remembering which element of each
enclosing array it came from. Compiling expands ``$or`` into alternative field lists
(each sorted the same way); an alternative matches when its fields can be met one after
another by leaves that never come from different elements of the same array. A field that
must be absent (``{"exists": false}``) is absent when no leaf of that name sits in the
array elements chosen by the fields before it in that order; fields after it do not
narrow it down. ``exists`` looks only at leaves: a field holding an object, or an empty
array, counts as absent.

Numbers compare numerically only within the range EventBridge documents: -5e9 to 5e9
with at most six digits after the decimal point (every such number is an exact double).
Outside it a number matches only the same number written as a value.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import re
import socket
from collections.abc import Callable, Mapping
from operator import eq, ge, gt, le, lt
from typing import Any, Final

from cadenza.errors import InvalidEventPattern
from cadenza.events._matching import Alternative, Field, Rule, match_rule
from cadenza.events.envelope import Event

__all__ = ["EventPattern", "compile_pattern", "matches"]

_Predicate = Callable[[Any], bool]
_Where = tuple[str, ...]  # where in the pattern, for error messages

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
_NUMERIC_LIMIT: Final = 5_000_000_000
_NUMERIC_DECIMALS: Final = 6
# Nested $or multiplies into alternatives; past this a pattern is refused rather than
# letting one rule cost seconds to compile and to match.
_MAX_ALTERNATIVES: Final = 1024


class EventPattern:
    """A compiled event pattern. Build one with :func:`compile_pattern`."""

    __slots__ = ("_key", "_pattern", "_rules")

    def __init__(self, pattern: dict[str, Any], rules: tuple[Rule, ...]) -> None:
        self._pattern = pattern
        self._rules = rules
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
        return any(match_rule(rule, event) for rule in self._rules)

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
    alternatives = _compile_object(owned, (), (), inside_or=False)
    return EventPattern(owned, tuple(Rule.of(a) for a in alternatives))


def matches(
    pattern: Mapping[str, Any] | str | EventPattern, event: Mapping[str, Any] | Event
) -> bool:
    """Whether ``event`` matches ``pattern``; compile the pattern once to match it often."""
    return compile_pattern(pattern).matches(event)


# --- errors ----------------------------------------------------------------------------


def _fail(where: _Where, message: str) -> InvalidEventPattern:
    place = ".".join(where) if where else "the top level"
    return InvalidEventPattern(f"pattern at {place}: {message}")


def _show(value: Any) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- objects ---------------------------------------------------------------------------


def _compile_object(
    obj: Any, path: tuple[str, ...], where: _Where, *, inside_or: bool
) -> list[Alternative]:
    """Compile a pattern object at ``path`` into the alternatives it allows, each a list
    of fields that must all hold."""
    if not isinstance(obj, Mapping):
        raise _fail(where, f"expected a JSON object, got {_show(obj)}")
    if not obj:
        raise _fail(where, "an empty object matches nothing; name at least one field")
    alternatives: list[Alternative] = [()]
    for key, value in obj.items():
        if not isinstance(key, str):
            raise _fail(where, f"field names must be strings, got {key!r}")
        if key == "$or":
            options = _compile_or(value, path, where)
        else:
            options = _compile_member(key, value, path, where, inside_or=inside_or)
        if len(alternatives) * len(options) > _MAX_ALTERNATIVES:
            raise _too_many_alternatives(where)
        alternatives = [a + b for a in alternatives for b in options]
    return alternatives


def _too_many_alternatives(where: _Where) -> InvalidEventPattern:
    return _fail(
        where,
        f"the $or lists in this pattern combine into more than {_MAX_ALTERNATIVES} "
        f"alternatives; split it into several rules or patterns",
    )


def _compile_member(
    key: str, value: Any, path: tuple[str, ...], where: _Where, *, inside_or: bool
) -> list[Alternative]:
    child_where = (*where, key)
    if inside_or and key in _OPERATORS:
        raise _fail(
            child_where,
            f"{key!r} is a match operator, not a field name; inside $or each object "
            f'names fields, like {{"$or": [{{"source": [{{"{key}": ...}}]}}, ...]}}',
        )
    if isinstance(value, list):
        return [(_compile_leaf(value, (*path, key), child_where),)]
    if isinstance(value, Mapping):
        return _compile_object(value, (*path, key), child_where, inside_or=inside_or)
    if key in _OPERATORS:
        raise _fail(
            child_where,
            f"{key!r} is a match operator; put it in the list of values of the field "
            f'it tests, like "state": [{{"{key}": {_show(value)}}}]',
        )
    raise _fail(
        child_where,
        f"expected a list of values to match, like [{_show(value)}], or a nested "
        f"object, got {_show(value)}",
    )


def _compile_or(value: Any, path: tuple[str, ...], where: _Where) -> list[Alternative]:
    if not isinstance(value, list) or len(value) < 2:
        raise _fail(
            (*where, "$or"),
            f'$or needs a list of at least two objects, like [{{"a": [1]}}, {{"b": [2]}}], '
            f"got {_show(value)}",
        )
    options: list[Alternative] = []
    for index, branch in enumerate(value):
        branch_where = (*where, f"$or[{index}]")
        if not isinstance(branch, Mapping):
            raise _fail(branch_where, f"each $or entry must be an object, got {_show(branch)}")
        options.extend(_compile_object(branch, path, branch_where, inside_or=True))
        if len(options) > _MAX_ALTERNATIVES:
            raise _too_many_alternatives(where)
    return options


# --- leaves ----------------------------------------------------------------------------


def _compile_leaf(alternatives: list[Any], path: tuple[str, ...], where: _Where) -> Field:
    if not alternatives:
        raise _fail(where, 'an empty list matches nothing; give at least one value, like ["a"]')
    exact: set[Any] = set()
    checks: list[_Predicate] = []
    exists_true = exists_false = False
    for alt in alternatives:
        if alt is None or isinstance(alt, str | bool):
            exact.add(_value_key(alt))
        elif isinstance(alt, int | float):
            exact.add(_value_key(_number(alt, where, "a value to match")))
        elif isinstance(alt, Mapping):
            operator, argument = _single_operator(alt, where)
            if operator == "exists":
                if not isinstance(argument, bool):
                    raise _fail(where, f"exists takes true or false, got {_show(argument)}")
                exists_true = exists_true or argument
                exists_false = exists_false or not argument
            else:
                checks.append(_compile_operator(operator, argument, where))
        else:
            raise _fail(
                where,
                f"each alternative must be a string, number, boolean, null or a match "
                f'expression like {{"prefix": "a"}}, got {_show(alt)}',
            )
    accepts = _always if exists_true else _accepts(frozenset(exact), tuple(checks))
    return Field.at(path, accepts, absent_ok=exists_false)


def _always(value: Any) -> bool:
    return True


# True == 1 and hash(True) == hash(1) in Python, but a pattern's true never matches 1.
_TRUE: Final = object()
_FALSE: Final = object()


def _value_key(value: Any) -> Any:
    """What an exact value is compared by. Numbers EventBridge can compare compare by
    value (5 matches 5.0); any other number only matches the same number of the same JSON
    kind (an integer, or one with a fraction or exponent), as its text would."""
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, int | float):
        if _comparable(value):
            return float(value)
        return (int if isinstance(value, int) else float, value)
    return value


def _accepts(exact: frozenset[Any], checks: tuple[_Predicate, ...]) -> _Predicate:
    """One predicate for all alternatives of a leaf: exact values by one set lookup, then
    the match expressions in order."""
    if not checks:
        return lambda v: (v if v.__class__ is str else _value_key(v)) in exact

    def accepts(value: Any) -> bool:
        if (value if value.__class__ is str else _value_key(value)) in exact:
            return True
        for check in checks:
            if check(value):
                return True
        return False

    return accepts


def _single_operator(expression: Mapping[str, Any], where: _Where) -> tuple[str, Any]:
    if len(expression) != 1:
        raise _fail(
            where,
            f'a match expression has exactly one operator, like {{"prefix": "a"}}, got '
            f"{_show(expression)}",
        )
    ((operator, argument),) = expression.items()
    if operator not in _OPERATORS:
        raise _fail(
            where,
            f"unknown match operator {operator!r}; use one of {', '.join(sorted(_OPERATORS))}",
        )
    return operator, argument


# --- numbers ---------------------------------------------------------------------------


def _number(value: Any, where: _Where, role: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"{role} must be a number, got {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(where, f"{role} must be a finite number, got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _comparable(value: int | float) -> bool:
    """Whether EventBridge compares this number numerically: within -5e9..5e9 and with at
    most six digits after the decimal point, judged on the shortest text that reads back
    as the same double (what the number's JSON text is, written by any JSON encoder)."""
    if not -_NUMERIC_LIMIT <= value <= _NUMERIC_LIMIT:  # also refuses nan
        return False
    if isinstance(value, int):
        return True
    return _decimals(value) <= _NUMERIC_DECIMALS


def _decimals(value: float) -> int:
    text = repr(value)
    mantissa, _, exponent = text.partition("e")
    point = mantissa.find(".")
    digits = 0 if point < 0 else len(mantissa) - point - 1
    if mantissa.endswith(".0"):
        digits = 0
    return max(0, digits - int(exponent or 0))


def _require_comparable(value: int | float, where: _Where, subject: str, instead: str) -> None:
    if _comparable(value):
        return
    if not -_NUMERIC_LIMIT <= value <= _NUMERIC_LIMIT:
        problem = "is outside -5000000000..5000000000, the range numeric matching covers"
    else:
        rounded = round(value, _NUMERIC_DECIMALS)
        like = f", like {rounded!r}" if rounded else ""
        problem = (
            f"has more than {_NUMERIC_DECIMALS} digits after the decimal point, the "
            f"precision numeric matching keeps (round it{like})"
        )
    raise _fail(where, f"{subject} {value!r} {problem}; {instead}")


# --- match expressions -----------------------------------------------------------------


def _compile_operator(operator: str, argument: Any, where: _Where) -> _Predicate:
    if operator in ("prefix", "suffix"):
        return _compile_affix(operator, argument, where)
    if operator == "equals-ignore-case":
        return _ignore_case(_string(argument, where, operator), "equals")
    if operator == "wildcard":
        return _compile_wildcard(_string(argument, where, operator), where)
    if operator == "numeric":
        return _compile_numeric(argument, where)
    if operator == "cidr":
        return _compile_cidr(argument, where)
    return _compile_anything_but(argument, where)


def _string(argument: Any, where: _Where, operator: str) -> str:
    if not isinstance(argument, str):
        raise _fail(
            where, f'{operator} takes a string, like {{"{operator}": "a"}}, got {_show(argument)}'
        )
    return argument


def _case_insensitive(text: str) -> str:
    """A regular expression for ``text`` ignoring case as EventBridge does: each character
    of the pattern stands for its lower-case or its upper-case form (full, locale-free
    mappings of that one character), nothing else. So "straße" matches "STRASSE" but
    "STRASSE" does not match "straße", and the two lower-case sigmas never match."""
    parts = []
    for char in text:
        lower, upper = char.lower(), char.upper()
        if lower == upper:
            parts.append(re.escape(lower))
        else:
            parts.append(f"(?:{re.escape(lower)}|{re.escape(upper)})")
    return "".join(parts)


def _ignore_case(text: str | list[str], how: str) -> _Predicate:
    texts = [text] if isinstance(text, str) else text
    source = "|".join(f"(?:{_case_insensitive(t)})" for t in texts)
    if how == "equals":
        full = re.compile(source).fullmatch
        return lambda v: isinstance(v, str) and full(v) is not None
    if how == "prefix":
        start = re.compile(source).match
        return lambda v: isinstance(v, str) and start(v) is not None
    end = re.compile(f"(?:{source})\\Z").search
    return lambda v: isinstance(v, str) and end(v) is not None


def _compile_affix(operator: str, argument: Any, where: _Where) -> _Predicate:
    ignore_case = isinstance(argument, Mapping)
    if ignore_case:
        if list(argument) != ["equals-ignore-case"]:
            raise _fail(
                where,
                f'{operator} takes a string or {{"equals-ignore-case": "..."}}, got '
                f"{_show(argument)}",
            )
        argument = argument["equals-ignore-case"]
    text = _string(argument, where, operator)
    if ignore_case:
        return _ignore_case(text, operator)
    test = str.startswith if operator == "prefix" else str.endswith
    return lambda v: isinstance(v, str) and test(v, text)


def _compile_wildcard(text: str, where: _Where) -> _Predicate:
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
                    where,
                    f"wildcard {text!r} has consecutive '*' at position {i}; one '*' already "
                    f"matches any run of characters",
                )
            parts.append("".join(literal))
            literal.clear()
        elif char == "\\":
            if i + 1 == len(text) or text[i + 1] not in "*\\":
                raise _fail(
                    where,
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


def _compile_numeric(argument: Any, where: _Where) -> _Predicate:
    def bad(detail: str = "") -> InvalidEventPattern:
        got = f"; got {_show(argument)}" if not detail else f"; {detail}"
        return _fail(where, f"numeric needs operator/number pairs like {_NUMERIC_SHAPES}{got}")

    if not isinstance(argument, list) or len(argument) not in (2, 4):
        raise bad()
    pairs = [(argument[i], argument[i + 1]) for i in range(0, len(argument), 2)]
    for operator, value in pairs:
        if operator not in _COMPARE:
            raise bad(f"unknown operator {_show(operator)}")
        if not _is_number(value):
            raise bad(f"{_show(value)} after {operator!r} is not a number")
        _number(value, where, f"the number after {operator!r}")
        _require_comparable(
            value,
            where,
            f"numeric {operator!r} bound",
            f"to match exactly this number, list it as a value: [{value!r}]",
        )
    (first_op, first), *rest = pairs
    if first_op == "=":
        if rest:
            raise bad('"=" stands alone')
        return lambda v: _is_number(v) and _comparable(v) and v == first
    if rest:
        (second_op, second) = rest[0]
        if first_op not in (">", ">=") or second_op not in ("<", "<="):
            raise bad('a range gives the lower bound first, like [">", 0, "<=", 5]')
        low, high = (first_op, first), (second_op, second)
    elif first_op in (">", ">="):
        low, high = (first_op, first), ("<=", _NUMERIC_LIMIT)
    else:
        low, high = (">=", -_NUMERIC_LIMIT), (first_op, first)
    _check_range(low, high, argument, where)
    above, bottom = _COMPARE[low[0]], low[1]
    below, top = _COMPARE[high[0]], high[1]
    return lambda v: _is_number(v) and _comparable(v) and above(v, bottom) and below(v, top)


def _check_range(
    low: tuple[str, int | float], high: tuple[str, int | float], argument: Any, where: _Where
) -> None:
    """EventBridge refuses a range whose lower bound is not below its upper bound; a
    one-sided range is bounded on its open side by the end of the numeric range."""
    (low_op, bottom), (high_op, top) = low, high
    if bottom < top:
        return
    written = _show(argument)
    if bottom == top and (low_op, high_op) == (">=", "<="):
        exact = _show(bottom)
        raise _fail(
            where,
            f"numeric {written} matches only {exact}, and a range needs its lower bound "
            f'below its upper one; use an exact value [{exact}] or {{"numeric": ["=", '
            f"{exact}]}} instead",
        )
    if len(argument) == 2:
        side = "above" if argument[0] in (">", ">=") else "below"
        raise _fail(
            where,
            f"numeric {written} leaves nothing {side} {_show(argument[1])} to match: numeric "
            f"matching covers -5000000000 to 5000000000",
        )
    raise _fail(
        where,
        f"numeric {written} is an empty range; give the lower bound first and below the "
        f'upper one, like [">", 0, "<=", 5]',
    )


def _compile_cidr(argument: Any, where: _Where) -> _Predicate:
    example = 'like "10.0.0.0/24" or "2001:db8::/32"'
    if not isinstance(argument, str) or "/" not in argument:
        raise _fail(where, f"cidr takes an address block {example}, got {_show(argument)}")
    try:
        network = ipaddress.ip_network(argument, strict=False)
    except ValueError as exc:
        raise _fail(where, f"cidr {argument!r} is not an address block {example}: {exc}") from exc
    if network.prefixlen == network.max_prefixlen:
        address = str(ipaddress.ip_address(argument.split("/", 1)[0]))
        raise _fail(
            where,
            f"cidr {argument!r} is a single address, and EventBridge takes blocks of at most "
            f"/{network.max_prefixlen - 1}; match the address as a value: [{_show(address)}]",
        )
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


def _compile_anything_but(argument: Any, where: _Where) -> _Predicate:
    """anything-but matches any present leaf value that its argument does not match."""
    if isinstance(argument, Mapping):
        if len(argument) != 1 or next(iter(argument)) not in _ANYTHING_BUT_OPERATORS:
            raise _fail(
                where,
                f"anything-but takes a value, a list of values, or one of "
                f"{', '.join(_ANYTHING_BUT_OPERATORS)}, like "
                f'{{"anything-but": {{"prefix": "init"}}}}, got {_show(argument)}',
            )
        ((operator, values),) = argument.items()
        texts = _anything_but_strings(operator, values, where)
        if operator == "equals-ignore-case":
            excluded = _ignore_case(texts, "equals")
        else:
            subs = tuple(_compile_operator(operator, t, where) for t in texts)

            def excluded(v: Any) -> bool:
                return any(sub(v) for sub in subs)

        return lambda v: not excluded(v)
    values = argument if isinstance(argument, list) else [argument]
    if not values:
        raise _fail(where, "anything-but needs at least one value to exclude")
    kinds = set()
    for value in values:
        if isinstance(value, str):
            kinds.add("string")
        elif _is_number(value):
            _number(value, where, "an anything-but value")
            _require_comparable(
                value,
                where,
                "anything-but number",
                "EventBridge refuses it here; if the field carries it as text, exclude "
                f'the text ["{value!r}"] instead',
            )
            kinds.add("number")
        else:
            raise _fail(
                where,
                f"anything-but excludes strings or numbers, got {_show(value)}; to match a "
                f'missing field use {{"exists": false}}',
            )
    if len(kinds) > 1:
        raise _fail(where, f"anything-but lists only strings or only numbers, got {_show(values)}")
    accepts = _accepts(frozenset(_value_key(v) for v in values), ())
    return lambda v: not accepts(v)


def _anything_but_strings(operator: str, values: Any, where: _Where) -> list[str]:
    items = values if isinstance(values, list) else [values]
    if not items:
        raise _fail(where, f"anything-but {operator} needs at least one string")
    for item in items:
        if not isinstance(item, str):
            raise _fail(where, f"anything-but {operator} takes strings, got {_show(item)}")
        if not item and operator in ("prefix", "suffix"):
            raise _fail(where, f'anything-but {operator} "" would exclude every string')
    return items
