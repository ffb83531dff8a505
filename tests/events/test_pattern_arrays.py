"""Arrays of objects: EventBridge's array-consistent matching and where absence is checked.

EventBridge flattens an event into leaf fields named by dotted paths, sorted by name, each
leaf remembering which element of each enclosing array it sits in. A pattern's fields are
met in the same order by leaves that never come from different elements of one array, and
a field that must be absent is checked against the elements the fields before it chose.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cadenza.events import compile_pattern
from tests.events._support import check

ABSENT: dict[str, Any] = {"exists": False}


# --- absence inside arrays of objects --------------------------------------------------


def test_absence_sorted_before_the_pinning_field_is_checked_across_every_element() -> None:
    # "items.discount" sorts before "items.sku": when EventBridge checks the absence, no
    # element is chosen yet, so a discount on any element fails the pattern.
    pattern = {"items": {"sku": ["B"], "discount": [ABSENT]}}
    check(pattern, {"items": [{"sku": "A", "discount": 5}, {"sku": "B"}]}, False)
    check(pattern, {"items": [{"sku": "B"}, {"sku": "A", "discount": 5}]}, False)
    check(pattern, {"items": [{"sku": "A"}, {"sku": "B"}]}, True)
    check(pattern, {"items": [{"sku": "B", "discount": 0}]}, False)
    check(pattern, {"items": [{"sku": "B", "discount": None}]}, False)  # null is present


def test_absence_sorted_after_the_pinning_field_is_checked_in_the_chosen_element() -> None:
    # "items.sku" sorts before "items.tax": the element with sku B is chosen first, and
    # only that element must lack a tax.
    pattern = {"items": {"sku": ["B"], "tax": [ABSENT]}}
    check(pattern, {"items": [{"sku": "A", "tax": 5}, {"sku": "B"}]}, True)
    check(pattern, {"items": [{"sku": "A"}, {"sku": "B", "tax": 5}]}, False)
    # Another element with sku B and no tax is enough.
    check(pattern, {"items": [{"sku": "B", "tax": 5}, {"sku": "B"}]}, True)


def test_the_order_is_the_dotted_name_compared_in_utf16_code_units() -> None:
    # As a tuple ("b", "c") would sort before "b-d"; as dotted names "items.b-d" comes
    # first because "-" sorts before ".". EventBridge uses the dotted name.
    pattern = {"items": {"b": {"c": [ABSENT]}, "b-d": ["B"]}}
    check(pattern, {"items": [{"b": {"c": 1}, "b-d": "A"}, {"b-d": "B"}]}, True)
    check(pattern, {"items": [{"b-d": "A"}, {"b": {"c": 1}, "b-d": "B"}]}, False)
    # U+1F600 is stored as the surrogates D83D DE00 and so sorts before U+FF5E, although
    # its code point is larger.
    pattern = {"items": {"\uff5e": [ABSENT], "\U0001f600": ["B"]}}
    check(pattern, {"items": [{"\U0001f600": "A", "\uff5e": 1}, {"\U0001f600": "B"}]}, True)


def test_absence_under_a_nested_object_of_an_element() -> None:
    pattern = {"items": {"meta": {"flag": [ABSENT]}, "sku": ["B"]}}  # items.meta.flag first
    check(pattern, {"items": [{"sku": "A", "meta": {"flag": 1}}, {"sku": "B"}]}, False)
    check(pattern, {"items": [{"sku": "A", "meta": {}}, {"sku": "B"}]}, True)
    check(pattern, {"items": [{"sku": "A", "meta": {"flag": {"deeper": 1}}}, {"sku": "B"}]}, True)


def test_absence_in_an_inner_array_is_checked_in_the_outer_element_chosen() -> None:
    pattern = {"orders": {"id": [2], "lines": {"gift": [ABSENT]}}}  # orders.id first
    gift_in_1 = {"orders": [{"id": 1, "lines": [{"gift": True}]}, {"id": 2, "lines": [{}]}]}
    gift_in_2 = {"orders": [{"id": 1, "lines": [{}]}, {"id": 2, "lines": [{}, {"gift": 1}]}]}
    check(pattern, gift_in_1, True)
    check(pattern, gift_in_2, False)
    check(pattern, {"orders": [{"id": 2}]}, True)
    check(pattern, {"orders": [{"id": 2, "lines": []}]}, True)


def test_value_or_absent_with_an_element_chosen_first() -> None:
    pattern = {"items": {"sku": ["B"], "tag": ["x", ABSENT]}}  # items.sku first
    check(pattern, {"items": [{"sku": "B", "tag": "x"}]}, True)
    check(pattern, {"items": [{"sku": "B", "tag": "y"}, {"sku": "A", "tag": "x"}]}, False)
    check(pattern, {"items": [{"sku": "B"}, {"sku": "A", "tag": "y"}]}, True)


def test_absence_outside_the_array_ignores_the_elements_chosen() -> None:
    pattern = {"items": {"sku": ["B"]}, "note": [ABSENT]}  # "items.sku" < "note"
    check(pattern, {"items": [{"sku": "B"}]}, True)
    check(pattern, {"items": [{"sku": "B"}], "note": "x"}, False)


def test_each_or_branch_orders_its_own_fields() -> None:
    pattern = {
        "items": {
            "$or": [
                {"sku": ["B"], "discount": [ABSENT]},  # discount checked first
                {"sku": ["C"], "tax": [ABSENT]},  # sku chosen first
            ]
        }
    }
    event_b = {"items": [{"sku": "A", "discount": 1}, {"sku": "B"}]}
    event_c = {"items": [{"sku": "A", "tax": 1}, {"sku": "C"}]}
    check(pattern, event_b, False)
    check(pattern, event_c, True)


# --- fields met by one element ---------------------------------------------------------


def test_values_in_an_array_inside_an_element_do_not_pin_it() -> None:
    pattern = {"items": {"tags": ["x"], "sku": ["B"]}}
    check(pattern, {"items": [{"sku": "B", "tags": ["y", "x"]}]}, True)
    check(pattern, {"items": [{"sku": "B", "tags": ["y"]}, {"sku": "A", "tags": ["x"]}]}, False)


def test_a_later_element_is_tried_when_the_first_candidate_fails() -> None:
    pattern = {"items": {"a": ["1"], "b": ["2"], "c": ["3"]}}
    event = {
        "items": [
            {"a": "1", "b": "2", "c": "0"},
            {"a": "1", "b": "0", "c": "3"},
            {"a": "1", "b": "2", "c": "3"},
        ]
    }
    check(pattern, event, True)
    check(pattern, {"items": event["items"][:2]}, False)


def test_arrays_nested_in_arrays_pin_every_level() -> None:
    pattern = {"grid": {"x": [1], "y": [2]}}
    check(pattern, {"grid": [[{"x": 1, "y": 0}, {"x": 0, "y": 2}], [{"x": 1, "y": 2}]]}, True)
    check(pattern, {"grid": [[{"x": 1, "y": 0}], [{"x": 0, "y": 2}]]}, False)
    check(pattern, {"grid": [[{"x": 1}, {"y": 2}]]}, False)


def test_independent_arrays_do_not_constrain_each_other() -> None:
    pattern = {"a": {"k": [1]}, "b": {"k": [2]}}
    check(pattern, {"a": [{"k": 0}, {"k": 1}], "b": [{"k": 2}, {"k": 0}]}, True)


def test_many_independent_arrays_match_in_time_linear_in_their_size() -> None:
    # Without forgetting choices no later field depends on, this would try 400**3 paths.
    pattern = compile_pattern({"x": {"a": [1]}, "y": {"b": [1]}, "z": {"c": [1]}})
    event: dict[str, Any] = {"x": [{"a": 1}] * 400, "y": [{"b": 1}] * 400, "z": [{"c": 2}] * 400}
    assert not pattern.matches(event)
    event["z"] = [*event["z"], {"c": 1}]
    assert pattern.matches(event)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([{"sku": "B", "qty": 5}], True),
        ([{"sku": "B", "qty": 1}, {"sku": "A", "qty": 5}], False),
        ([{"sku": "B", "qty": [1, 5]}], True),  # a plain array inside the element
        ([{"sku": ["A", "B"], "qty": 5}], True),
    ],
)
def test_value_and_range_met_by_the_same_element(
    items: list[dict[str, Any]], expected: bool
) -> None:
    check({"items": {"sku": ["B"], "qty": [{"numeric": [">", 3]}]}}, {"items": items}, expected)


# --- against a flattening reference ----------------------------------------------------


def _flatten(event: dict[str, Any]) -> list[tuple[str, Any, dict[int, int]]]:
    """The event as EventBridge sees it: leaves named by dotted path, sorted by name, each
    with the element it sits in of every enclosing array (arrays numbered as met)."""
    fields: list[tuple[str, Any, dict[int, int]]] = []
    arrays = iter(range(10**6))

    def visit(node: Any, name: str, membership: dict[int, int]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                visit(value, f"{name}.{key}" if name else key, membership)
        elif isinstance(node, list):
            array = next(arrays)
            for index, item in enumerate(node):
                inner = (
                    {**membership, array: index} if isinstance(item, dict | list) else membership
                )
                visit(item, name, inner)
        else:
            fields.append((name, node, membership))

    visit(event, "", {})
    return sorted(fields, key=lambda f: f[0])


def _reference(leaves: dict[str, list[Any]], event: dict[str, Any]) -> bool:
    fields = _flatten(event)
    names = sorted(leaves)

    def consistent(a: dict[int, int], b: dict[int, int]) -> bool:
        return all(a.get(k, v) == v for k, v in b.items())

    def step(i: int, chosen: dict[int, int]) -> bool:
        if i == len(names):
            return True
        alternatives = leaves[names[i]]
        candidates = [f for f in fields if f[0] == names[i] and consistent(chosen, f[2])]
        for _, value, membership in candidates:
            accepted = {"exists": True} in alternatives or any(
                value == alt and type(value) is type(alt) for alt in alternatives
            )
            if accepted and step(i + 1, {**chosen, **membership}):
                return True
        return not candidates and {"exists": False} in alternatives and step(i + 1, chosen)

    return step(0, {})


def _nest(name: str, leaf: list[Any]) -> dict[str, Any]:
    *parents, last = name.split(".")
    pattern: dict[str, Any] = {last: leaf}
    for parent in reversed(parents):
        pattern = {parent: pattern}
    return pattern


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        into[key] = _merge(into[key], value) if isinstance(into.get(key), dict) else value
    return into


keys = st.sampled_from(["a", "b", "c"])
scalars = st.sampled_from(["x", "y", 1])
any_events = st.dictionaries(
    keys,
    st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=10,
    ),
    max_size=3,
)
# Arrays of objects whose elements share field names, where consistency decides.
elements = st.fixed_dictionaries(
    {},
    optional={
        "b": scalars,
        "c": scalars | st.lists(scalars, max_size=2),
        "d": st.dictionaries(keys, scalars | st.lists(scalars, max_size=2), max_size=2),
    },
)
array_events = st.fixed_dictionaries(
    {"a": st.lists(elements | st.lists(elements, max_size=2), max_size=4)},
    optional={"b": scalars},
)
leaf_patterns = st.sampled_from([["x"], [{"exists": False}]]) | st.lists(
    st.sampled_from(["x", "y", 1, {"exists": False}, {"exists": True}]),
    min_size=1,
    max_size=2,
    unique_by=lambda v: json.dumps(v),
)
field_names = st.lists(keys, min_size=1, max_size=3).map(".".join) | st.sampled_from(
    ["a.b", "a.c", "a.d.a", "a.d.b", "b"]
)


@settings(max_examples=600, deadline=None)
@given(
    leaves=st.dictionaries(field_names, leaf_patterns, min_size=1, max_size=3),
    event=any_events | array_events,
)
def test_matching_agrees_with_a_flattening_reference(
    leaves: dict[str, list[Any]], event: dict[str, Any]
) -> None:
    # A name that is a prefix of another ("a" and "a.b") cannot be written as one pattern.
    assume(not any(o.startswith(n + ".") for n in leaves for o in leaves))
    pattern: dict[str, Any] = {}
    for name, leaf in leaves.items():
        _merge(pattern, _nest(name, leaf))
    assert compile_pattern(pattern).matches(event) is _reference(leaves, event)
