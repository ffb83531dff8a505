"""Malformed patterns are refused with a message naming where and what is allowed; properties."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cadenza.errors import InvalidEventPattern, InvalidInput
from cadenza.events import compile_pattern, matches

# --- invalid patterns ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "where", "says"),
    [
        ([], "top level", "must be a JSON object"),
        ("[1, 2]", "top level", "must be a JSON object"),
        ({}, "top level", "empty object"),
        ({"detail": {}}, "at detail:", "empty object"),
        ({"source": "aws.ec2"}, "at source:", 'like ["aws.ec2"]'),
        ({"source": 5}, "at source:", "list of values"),
        ({"source": None}, "at source:", "list of values"),
        ({"source": []}, "at source:", "empty list"),
        ({"source": [["a"]]}, "at source:", "each alternative"),
        ({"detail": {"f": [{}]}}, "at detail.f:", "exactly one operator"),
        ({"f": [{"prefix": "a", "suffix": "b"}]}, "at f:", "exactly one operator"),
        ({"f": [{"contains": "a"}]}, "at f:", "unknown match operator 'contains'"),
        ({"f": [{"Prefix": "a"}]}, "at f:", "unknown match operator"),
        ({"f": [{"prefix": 5}]}, "at f:", "prefix takes a string"),
        ({"f": [{"prefix": None}]}, "at f:", "prefix takes a string"),
        ({"f": [{"prefix": ["a"]}]}, "at f:", "prefix takes a string"),
        ({"f": [{"prefix": {"wildcard": "a"}}]}, "at f:", "equals-ignore-case"),
        ({"f": [{"prefix": {"equals-ignore-case": 1}}]}, "at f:", "takes a string"),
        ({"f": [{"suffix": 1}]}, "at f:", "suffix takes a string"),
        ({"f": [{"suffix": {"equals-ignore-case": "a", "x": 1}}]}, "at f:", "suffix takes"),
        ({"f": [{"equals-ignore-case": ["a"]}]}, "at f:", "equals-ignore-case takes a string"),
        ({"f": [{"wildcard": 1}]}, "at f:", "wildcard takes a string"),
        ({"f": [{"wildcard": "a**b"}]}, "at f:", "consecutive '*'"),
        ({"f": [{"wildcard": "**"}]}, "at f:", "consecutive '*'"),
        ({"f": [{"wildcard": "a\\b"}]}, "at f:", "bad escape"),
        ({"f": [{"wildcard": "trailing\\"}]}, "at f:", "bad escape"),
        ({"f": [{"exists": "true"}]}, "at f:", "exists takes true or false"),
        ({"f": [{"exists": 1}]}, "at f:", "exists takes true or false"),
        ({"f": [{"exists": None}]}, "at f:", "exists takes true or false"),
        ({"detail": {"price": [{"numeric": [">", "0"]}]}}, "at detail.price:", "numeric needs"),
        ({"f": [{"numeric": 5}]}, "at f:", '[">", 0, "<=", 5]'),
        ({"f": [{"numeric": []}]}, "at f:", "numeric needs"),
        ({"f": [{"numeric": [">"]}]}, "at f:", "numeric needs"),
        ({"f": [{"numeric": [">", 0, "<"]}]}, "at f:", "numeric needs"),
        ({"f": [{"numeric": [">", 0, "<", 5, ">", 1]}]}, "at f:", "numeric needs"),
        ({"f": [{"numeric": ["!=", 0]}]}, "at f:", "unknown operator"),
        ({"f": [{"numeric": ["=>", 0]}]}, "at f:", "unknown operator"),
        ({"f": [{"numeric": [">", True]}]}, "at f:", "not a number"),
        ({"f": [{"numeric": [">", None]}]}, "at f:", "not a number"),
        ({"f": [{"numeric": ["=", 1, "<", 5]}]}, "at f:", '"=" stands alone'),
        ({"f": [{"numeric": ["<", 5, ">", 0]}]}, "at f:", "lower bound first"),
        ({"f": [{"numeric": [">", 0, ">", 5]}]}, "at f:", "lower bound first"),
        ({"f": [{"numeric": [">", 5, "<", 1]}]}, "at f:", "is an empty range"),
        ({"f": [{"numeric": [">", 5, "<=", 5]}]}, "at f:", "is an empty range"),
        ({"f": [{"numeric": [">", math.inf]}]}, "at f:", "finite"),
        # EventBridge refuses a range whose bounds meet, and says what to write instead.
        ({"f": [{"numeric": [">=", 5, "<=", 5]}]}, "at f:", "use an exact value [5]"),
        ({"f": [{"numeric": [">=", 1.5, "<=", 1.5]}]}, "at f:", '["=", 1.5]'),
        ({"f": [{"numeric": [">=", 5e9]}]}, "at f:", "use an exact value [5000000000.0]"),
        ({"f": [{"numeric": ["<=", -5000000000]}]}, "at f:", "matches only -5000000000"),
        ({"f": [{"numeric": [">", 5e9]}]}, "at f:", "leaves nothing above 5000000000.0"),
        ({"f": [{"numeric": ["<", -5e9]}]}, "at f:", "leaves nothing below"),
        # Numbers numeric matching cannot compare exactly.
        ({"f": [{"numeric": [">", 9007199254740993]}]}, "at f:", "outside -5000000000"),
        ({"f": [{"numeric": [">", 9007199254740993]}]}, "at f:", "as a value: [9007199254740993]"),
        ({"f": [{"numeric": [">", 0, "<", 5000000000.5]}]}, "at f:", "outside -5000000000"),
        ({"f": [{"numeric": ["=", 5e-324]}]}, "at f:", "more than 6 digits after the decimal"),
        ({"f": [{"numeric": ["=", 0.1234567]}]}, "at f:", "round it, like 0.123457"),
        ({"f": [{"numeric": ["<", 0.1 + 0.2]}]}, "at f:", "more than 6 digits"),
        ({"f": [{"anything-but": [123456789012]}]}, "at f:", 'exclude the text ["123456789012"]'),
        ({"f": [{"anything-but": 1e-7}]}, "at f:", "more than 6 digits"),
        ({"f": [math.nan]}, "at f:", "finite"),
        ({"f": [{"cidr": "10.0.0.0"}]}, "at f:", "address block"),
        ({"f": [{"cidr": "10.0.0.0/33"}]}, "at f:", "not an address block"),
        ({"f": [{"cidr": "300.0.0.0/8"}]}, "at f:", "not an address block"),
        ({"f": [{"cidr": "nonsense/8"}]}, "at f:", "not an address block"),
        ({"f": [{"cidr": 10}]}, "at f:", "cidr takes"),
        ({"f": [{"cidr": "10.0.0.1/32"}]}, "at f:", 'as a value: ["10.0.0.1"]'),
        ({"f": [{"cidr": "2001:db8::1/128"}]}, "at f:", "blocks of at most /127"),
        ({"f": [{"cidr": "2001:DB8:0::1/128"}]}, "at f:", '["2001:db8::1"]'),
        ({"f": [{"anything-but": []}]}, "at f:", "at least one value"),
        ({"f": [{"anything-but": None}]}, "at f:", "strings or numbers"),
        ({"f": [{"anything-but": True}]}, "at f:", "strings or numbers"),
        ({"f": [{"anything-but": [None]}]}, "at f:", "exists"),
        ({"f": [{"anything-but": ["a", 1]}]}, "at f:", "only strings or only numbers"),
        ({"f": [{"anything-but": [["a"]]}]}, "at f:", "strings or numbers"),
        ({"f": [{"anything-but": {"numeric": [">", 1]}}]}, "at f:", "anything-but takes"),
        ({"f": [{"anything-but": {"exists": True}}]}, "at f:", "anything-but takes"),
        ({"f": [{"anything-but": {}}]}, "at f:", "anything-but takes"),
        ({"f": [{"anything-but": {"prefix": "a", "suffix": "b"}}]}, "at f:", "anything-but"),
        ({"f": [{"anything-but": {"prefix": 1}}]}, "at f:", "takes strings"),
        ({"f": [{"anything-but": {"prefix": ""}}]}, "at f:", "exclude every string"),
        ({"f": [{"anything-but": {"suffix": [""]}}]}, "at f:", "exclude every string"),
        ({"f": [{"anything-but": {"wildcard": []}}]}, "at f:", "at least one string"),
        ({"f": [{"anything-but": {"wildcard": "a**"}}]}, "at f:", "consecutive '*'"),
        ({"f": [{"anything-but": {"equals-ignore-case": [1]}}]}, "at f:", "takes strings"),
        ({"$or": {"a": [1]}}, "at $or:", "at least two objects"),
        ({"$or": [{"a": [1]}]}, "at $or:", "at least two objects"),
        ({"$or": []}, "at $or:", "at least two objects"),
        ({"$or": [{"a": [1]}, ["b"]]}, "at $or[1]:", "must be an object"),
        ({"$or": [{"a": [1]}, {}]}, "at $or[1]:", "empty object"),
        ({"detail": {"$or": [{"a": [1]}, {"b": "x"}]}}, "at detail.$or[1].b:", "list of values"),
        ({"$or": [{"prefix": ["a"]}, {"b": [1]}]}, "at $or[0].prefix:", "not a field name"),
        ({"$or": [{"x": {"numeric": [1]}}, {"b": [1]}]}, "x.numeric", "not a field name"),
        ({"source": {"prefix": "aws."}}, "at source.prefix:", "is a match operator"),
        ({1: ["a"]}, "top level", "field names must be strings"),
        ({"f": [object()]}, "at f:", "each alternative"),
    ],
)
def test_invalid_patterns_name_the_path_and_what_is_allowed(
    pattern: Any, where: str, says: str
) -> None:
    with pytest.raises(InvalidEventPattern) as caught:
        compile_pattern(pattern)
    message = str(caught.value)
    assert where in message
    assert says in message


@pytest.mark.parametrize(
    "pattern",
    [
        {"f": [{"numeric": [">=", -5e9, "<=", 5e9]}]},
        {"f": [{"numeric": ["=", 5e9]}]},
        {"f": [{"numeric": ["<", 5e9]}]},
        {"f": [{"numeric": [">", -5_000_000_000]}]},
        {"f": [{"numeric": [">", 0, "<", 0.000001]}]},
        {"f": [{"numeric": [">=", 4999999999.999999]}]},
        {"f": [9007199254740993, 5e-324, 1e300, 0.1 + 0.2]},  # exact values of any size
        {"f": [{"anything-but": [5_000_000_000, -0.000001]}]},
        {"f": [{"cidr": "10.0.0.0/31"}, {"cidr": "2001:db8::/127"}, {"cidr": "0.0.0.0/0"}]},
    ],
)
def test_what_eventbridge_accepts_at_the_edges_compiles(pattern: dict[str, Any]) -> None:
    assert compile_pattern(pattern).pattern == pattern


def test_too_many_or_combinations_are_refused_with_a_way_out() -> None:
    pair = [{"a": [1]}, {"b": [2]}]
    nested: dict[str, Any] = {"$or": pair}
    for level in range(10):
        nested = {f"l{level}": nested, "$or": pair}
    with pytest.raises(InvalidEventPattern, match="more than 1024 alternatives; split it"):
        compile_pattern(nested)
    assert compile_pattern({"x": {"$or": pair}, "$or": pair}).matches({"a": 1, "x": {"b": 2}})


def test_invalid_json_text() -> None:
    with pytest.raises(InvalidEventPattern, match="not valid JSON"):
        compile_pattern('{"source": [')


def test_invalid_event_pattern_is_an_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        compile_pattern({"f": "x"})


def test_the_documented_numeric_error_message() -> None:
    with pytest.raises(InvalidEventPattern) as caught:
        compile_pattern({"detail": {"price": [{"numeric": "> 0"}]}})
    assert str(caught.value).startswith(
        'pattern at detail.price: numeric needs operator/number pairs like [">", 0, "<=", 5]'
    )


# --- properties ------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "b", "$or", "prefix", "numeric"]), children, max_size=4
        )
    ),
    max_leaves=12,
)
safe_text = st.text(st.characters(blacklist_characters="*\\"), max_size=8)


@given(pattern=json_values, event=json_values)
@settings(max_examples=300)
def test_compiling_anything_either_works_or_raises_invalid_event_pattern(
    pattern: Any, event: Any
) -> None:
    try:
        compiled = compile_pattern(pattern)
    except InvalidEventPattern:
        return
    if isinstance(event, dict):
        assert compiled.matches(event) in (True, False)


finite_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
) | st.text()


@given(value=finite_scalars, others=st.lists(json_scalars, max_size=3))
def test_a_scalar_matches_itself_alone_and_in_an_array(value: Any, others: list[Any]) -> None:
    pattern = compile_pattern({"k": [value]})
    assert pattern.matches({"k": value})
    assert pattern.matches({"k": [*others, value]})


@given(excluded=st.text(), value=st.text())
def test_anything_but_is_the_complement_of_exact_match(excluded: str, value: str) -> None:
    exact = matches({"k": [excluded]}, {"k": value})
    assert matches({"k": [{"anything-but": excluded}]}, {"k": value}) is not exact


@given(prefix=st.text(), rest=st.text())
def test_prefix_and_suffix_match_their_own_concatenation(prefix: str, rest: str) -> None:
    assert matches({"k": [{"prefix": prefix}]}, {"k": prefix + rest})
    assert matches({"k": [{"suffix": prefix}]}, {"k": rest + prefix})


# A title-case letter such as "ǅ" stands for its lower and upper case only, not itself.
cased_text = st.text(st.characters(blacklist_categories=("Lt", "Cs")))


@given(text=cased_text, rest=st.text())
def test_ignore_case_matches_the_text_itself_and_its_lower_and_upper_case(
    text: str, rest: str
) -> None:
    # Lower-cased character by character: str.lower() would turn a closing sigma into
    # the final form, which EventBridge's per-character mapping never produces.
    for variant in (text, "".join(map(str.lower, text)), text.upper()):
        assert matches({"k": [{"equals-ignore-case": text}]}, {"k": variant})
        assert matches({"k": [{"prefix": {"equals-ignore-case": text}}]}, {"k": variant + rest})
        assert matches({"k": [{"suffix": {"equals-ignore-case": text}}]}, {"k": rest + variant})


@given(head=safe_text, middle=st.text(max_size=8), tail=safe_text, other=st.text(max_size=20))
def test_wildcard_agrees_with_its_definition(head: str, middle: str, tail: str, other: str) -> None:
    pattern = {"k": [{"wildcard": f"{head}*{tail}"}]}
    assert matches(pattern, {"k": head + middle + tail})
    expected = (
        len(other) >= len(head) + len(tail) and other.startswith(head) and other.endswith(tail)
    )
    assert matches(pattern, {"k": other}) is expected


def _within_documented_precision(value: float) -> bool:
    """EventBridge compares numbers between -5e9 and 5e9 with at most six decimals."""
    exponent = Decimal(repr(value)).normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return abs(value) <= 5e9 and exponent >= -6


@given(
    value=st.integers(-1000, 1000)
    | st.floats(-1000, 1000)
    | st.decimals(-1000, 1000, places=6).map(float)
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False),
    low=st.integers(-1000, -1),
    high=st.integers(0, 1000),
)
def test_numeric_range_agrees_with_python_comparison_within_the_documented_precision(
    value: float, low: int, high: int
) -> None:
    pattern = {"k": [{"numeric": [">", low, "<=", high]}]}
    expected = low < value <= high and _within_documented_precision(value)
    assert matches(pattern, {"k": value}) is expected
    assert not matches(pattern, {"k": str(value)})


@given(
    a=st.sampled_from(["x", "y", "z"]),
    b=st.sampled_from(["x", "y", "z"]),
    event=st.fixed_dictionaries(
        {}, optional={"p": st.sampled_from(["x", "y"]), "q": st.sampled_from(["x", "z"])}
    ),
)
def test_or_is_the_disjunction_of_its_branches(a: str, b: str, event: dict[str, Any]) -> None:
    first, second = {"p": [a]}, {"q": [b, {"exists": False}]}
    either = matches({"$or": [first, second]}, event)
    assert either is (matches(first, event) or matches(second, event))


@given(
    head=st.text("ab.", max_size=3),
    middle=st.lists(st.text("ab.", min_size=1, max_size=3), max_size=3),
    tail=st.text("ab.", max_size=3),
    value=st.text("ab.", max_size=10),
)
def test_wildcard_with_many_stars_agrees_with_a_regular_expression(
    head: str, middle: list[str], tail: str, value: str
) -> None:
    import re

    parts = [head, *middle, tail]
    wildcard = "*".join(parts)
    oracle = re.fullmatch(".*".join(re.escape(p) for p in parts), value, re.DOTALL)
    assert matches({"k": [{"wildcard": wildcard}]}, {"k": value}) is (oracle is not None)
