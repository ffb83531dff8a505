"""How values compare: numbers within EventBridge's numeric range, case per character."""

from __future__ import annotations

from typing import Any

import pytest

from tests.events._support import check, field, leaf

SIGMA, FINAL_SIGMA, CAPITAL_SIGMA = "\u03c3", "\u03c2", "\u03a3"

# --- numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "event_value", "expected"),
    [
        (5, 5.0, True),  # comparable numbers compare by value
        (3.018e2, 301.8, True),
        (0.000001, 1e-6, True),
        (5_000_000_000, 5e9, True),
        (5, 5.0000001, False),
        # Outside the numeric range a number matches only the same number written alike.
        (9007199254740993, 9007199254740993, True),
        (9007199254740993, 9007199254740992, False),
        (9007199254740992, 9007199254740992.0, False),
        (123456789012, 123456789012, True),
        (123456789012, 123456789012.0, False),
        (1e10, 1e10, True),
        (5e-324, 5e-324, True),
        (5e-324, 0, False),
        (0.30000000000000004, 0.30000000000000004, True),
        (0.30000000000000004, 0.3, False),
        (0.1, 0.1 + 0.2 - 0.2, False),  # 0.10000000000000003
    ],
)
def test_exact_numbers(value: Any, event_value: Any, expected: bool) -> None:
    check(leaf(value), field(event_value), expected)


@pytest.mark.parametrize(
    ("expression", "value", "expected"),
    [
        ([">=", 0], 5e9, True),
        ([">=", 0], 5_000_000_000, True),
        ([">=", 0], 5_000_000_001, False),
        ([">=", 0], 5000000000.5, False),
        (["<", 0], -5e9, True),
        (["<", 0], -5e9 - 1, False),
        ([">", 0], 9007199254740993, False),  # not an exact double, and out of range
        ([">", 0], 5e-324, False),  # the smallest double: beyond six decimals
        (["<", 1], 5e-324, False),
        ([">", 0], 0.000001, True),
        ([">", 0], 0.0000015, False),
        (["=", 0.3], 0.1 + 0.2, False),  # 0.30000000000000004
        (["=", 0.3], 0.3, True),
        ([">", 0, "<", 0.000002], 0.000001, True),
        ([">=", -5e9, "<=", 5e9], 4999999999.999999, True),
    ],
)
def test_numeric_compares_only_within_the_documented_range_and_precision(
    expression: list[Any], value: Any, expected: bool
) -> None:
    check(leaf({"numeric": expression}), field(value), expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(100, False), (100.0, False), (101, True), (1e10, True), (10**20, True), ("100", True)],
)
def test_anything_but_numbers(value: Any, expected: bool) -> None:
    check(leaf({"anything-but": [100, 200]}), field(value), expected)


# --- equals-ignore-case ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        ("alice", "ALICE", True),
        ("alice", "aLiCe", True),
        # Each pattern character stands for its own lower and upper case, whole: "ß"
        # upper-cases to "SS", but "S" never lower-cases to "ß".
        ("straße", "STRASSE", True),
        ("straße", "STRAßE", True),
        ("straße", "strasse", False),
        ("STRASSE", "straße", False),
        ("Strasse", "STRAßE", False),
        ("ﬁle", "FILE", True),
        ("FILE", "ﬁle", False),
        # No case folding: the final and the medial sigma are different letters.
        (SIGMA, FINAL_SIGMA, False),
        (FINAL_SIGMA, SIGMA, False),
        (SIGMA, CAPITAL_SIGMA, True),
        (FINAL_SIGMA, CAPITAL_SIGMA, True),
        (CAPITAL_SIGMA, SIGMA, True),
        (CAPITAL_SIGMA, FINAL_SIGMA, False),
        ("İ", "i\u0307", True),  # "i" and a combining dot: the lower case of "İ"
        ("İ", "i", False),
        ("i", "İ", False),
        # A title-case letter stands for its lower and upper case only, not itself.
        ("ǅ", "ǆ", True),
        ("ǅ", "Ǆ", True),
        ("ǅ", "ǅ", False),
    ],
)
def test_equals_ignore_case_maps_each_character_separately(
    text: str, value: str, expected: bool
) -> None:
    check(leaf({"equals-ignore-case": text}), field(value), expected)


@pytest.mark.parametrize(
    ("expression", "value", "expected"),
    [
        ({"prefix": {"equals-ignore-case": "straß"}}, "STRASSE-1", True),
        ({"prefix": {"equals-ignore-case": "straß"}}, "strasse-1", False),
        ({"prefix": {"equals-ignore-case": SIGMA}}, FINAL_SIGMA + "-x", False),
        ({"suffix": {"equals-ignore-case": "ß"}}, "GROSS", True),
        ({"suffix": {"equals-ignore-case": "ß"}}, "gross", False),
        ({"suffix": {"equals-ignore-case": "SS"}}, "groß", False),
        ({"anything-but": {"equals-ignore-case": "straße"}}, "STRASSE", False),
        ({"anything-but": {"equals-ignore-case": "straße"}}, "strasse", True),
        ({"anything-but": {"equals-ignore-case": [SIGMA, "x"]}}, FINAL_SIGMA, True),
        ({"anything-but": {"equals-ignore-case": [SIGMA, "x"]}}, "X", False),
    ],
)
def test_ignore_case_in_prefix_suffix_and_anything_but(
    expression: dict[str, Any], value: str, expected: bool
) -> None:
    check(leaf(expression), field(value), expected)


def test_ignore_case_treats_regular_expression_characters_literally() -> None:
    check(leaf({"equals-ignore-case": "a.b*"}), field("A.B*"), True)
    check(leaf({"equals-ignore-case": "a.b*"}), field("AxBBB"), False)
    check(leaf({"prefix": {"equals-ignore-case": "(x|"}}), field("(X|y"), True)
    check(leaf({"equals-ignore-case": "line"}), field("LINE\n"), False)
    check(leaf({"suffix": {"equals-ignore-case": "end"}}), field("the END\n"), False)


# --- cidr ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "value", "expected"),
    [
        ("192.0.2.0/31", "192.0.2.0", True),
        ("192.0.2.0/31", "192.0.2.1", True),
        ("192.0.2.0/31", "192.0.2.2", False),
        ("2001:db8::/127", "2001:db8::1", True),
        ("2001:db8::/127", "2001:db8::2", False),
    ],
)
def test_the_smallest_cidr_blocks_eventbridge_accepts(
    block: str, value: str, expected: bool
) -> None:
    check(leaf({"cidr": block}), field(value), expected)
