"""The EventBridge pattern language: every operator, arrays, $or, and compile-time errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cadenza.events import Event, EventPattern, compile_pattern, matches
from tests.events._support import (
    EC2_EVENT,
    check,
    field,
    leaf,
)

# --- exact values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alternatives", "value", "expected"),
    [
        (["a"], "a", True),
        (["a"], "A", False),
        (["a", "b"], "b", True),
        ([""], "", True),
        ([""], None, False),
        ([None], None, True),
        ([None], "", False),
        ([None], "null", False),
        ([5], 5, True),
        ([5], 5.0, True),
        ([5.0], 5, True),
        ([3.018e2], 301.8, True),
        ([5], "5", False),
        (["5"], 5, False),
        ([123456789012], 123456789012, True),
        ([True], True, True),
        ([True], 1, False),
        ([1], True, False),
        ([0], False, False),
        ([False], 0, False),
        (["true"], True, False),
        ([False], False, True),
        ([1, "a", None, True], None, True),
    ],
)
def test_exact_values_match_by_json_type_and_value(
    alternatives: list[Any], value: Any, expected: bool
) -> None:
    check(leaf(*alternatives), field(value), expected)


def test_documented_basic_pattern_selects_on_source_type_and_nested_state() -> None:
    pattern = {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["terminated"]},
    }
    check(pattern, EC2_EVENT, True)
    running = {**EC2_EVENT, "detail": {**EC2_EVENT["detail"], "state": "running"}}
    check(pattern, running, False)


def test_any_listed_source_is_enough() -> None:
    check({"source": ["aws.ec2", "aws.fargate"]}, EC2_EVENT, True)
    check({"source": ["aws.s3", "aws.fargate"]}, EC2_EVENT, False)


def test_every_field_named_must_be_present_with_the_same_nesting() -> None:
    check({"detail": {"missing": ["x"]}}, EC2_EVENT, False)
    check({"state": ["terminated"]}, EC2_EVENT, False)  # state lives under detail
    check({"detail": {"state": {"deeper": ["x"]}}}, EC2_EVENT, False)


def test_fields_not_named_in_the_pattern_are_ignored() -> None:
    check({"region": ["us-west-1"]}, EC2_EVENT, True)


def test_null_and_empty_string_are_different_values() -> None:
    event = {"detail": {"eventVersion": "", "responseElements": None}}
    check({"detail": {"eventVersion": [""]}}, event, True)
    check({"detail": {"responseElements": [None]}}, event, True)
    check({"detail": {"eventVersion": [None]}}, event, False)
    check({"detail": {"responseElements": [""]}}, event, False)


def test_a_leaf_pattern_does_not_match_an_object_value() -> None:
    check(leaf("x"), field({"x": 1}), False)
    check(leaf({"anything-but": "x"}), field({"x": 1}), False)


# --- prefix, suffix, equals-ignore-case ------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value", "expected"),
    [
        ({"prefix": "2017-10-02"}, "2017-10-02T18:43:48Z", True),
        ({"prefix": "2017-10-02"}, "2017-10-03T18:43:48Z", False),
        ({"prefix": "abc"}, "ab", False),
        ({"prefix": ""}, "anything", True),
        ({"prefix": "1"}, 123, False),
        ({"prefix": "n"}, None, False),
        ({"prefix": {"equals-ignore-case": "EventB"}}, "eventbridge", True),
        ({"prefix": {"equals-ignore-case": "EventB"}}, "EVENTBRIDGE", True),
        ({"prefix": {"equals-ignore-case": "EventB"}}, "event-bridge", False),
        ({"suffix": ".png"}, "photo.png", True),
        ({"suffix": ".png"}, "photo.PNG", False),
        ({"suffix": ".png"}, "photo.png.txt", False),
        ({"suffix": {"equals-ignore-case": ".png"}}, "photo.PNG", True),
        ({"suffix": {"equals-ignore-case": ".png"}}, "photo.jpg", False),
        ({"suffix": "5"}, 5, False),
        ({"equals-ignore-case": "alice"}, "Alice", True),
        ({"equals-ignore-case": "alice"}, "ALICE", True),
        ({"equals-ignore-case": "alice"}, "alicia", False),
        ({"equals-ignore-case": "straße"}, "STRASSE", True),
        ({"equals-ignore-case": "true"}, True, False),
    ],
)
def test_string_operators(expression: dict[str, Any], value: Any, expected: bool) -> None:
    check(leaf(expression), field(value), expected)


# --- wildcard --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wildcard", "value", "expected"),
    [
        ("Simple*Service", "SimpleQueueService", True),
        ("Simple*Service", "SimpleService", True),
        ("Simple*Service", "SimpleQueueServices", False),
        ("dir/*.png", "dir/a/b.png", True),
        ("dir/*.png", "dir/.png", True),
        ("dir/*.png", "other/a.png", False),
        ("*", "", True),
        ("*", "anything at all", True),
        ("*Title*", "The Title Page", True),
        ("*Title*", "The title page", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "a-b-c-", False),
        ("a*", "a\nb", True),
        ("exact", "exact", True),
        ("exact", "exactly", False),
        ("a.c", "abc", False),  # only * is special
        ("[ab]", "[ab]", True),
        (r"price\*", "price*", True),
        (r"price\*", "prices", False),
        (r"\**", "*star", True),
        (r"\**", "star", False),
        (r"back\\slash", "back\\slash", True),
        (r"back\\*", "back\\anything", True),
        ("*", 5, False),
        ("*", None, False),
    ],
)
def test_wildcard(wildcard: str, value: Any, expected: bool) -> None:
    check(leaf({"wildcard": wildcard}), field(value), expected)


# --- anything-but ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "value", "expected"),
    [
        ("initializing", "running", True),
        ("initializing", "initializing", False),
        ("initializing", "INITIALIZING", True),
        ("initializing", 5, True),
        ("initializing", None, True),
        (123, 124, True),
        (123, 123, False),
        (123, 123.0, False),
        (123, "123", True),
        (["stopped", "overloaded"], "running", True),
        (["stopped", "overloaded"], "stopped", False),
        ([100, 200, 300], 150, True),
        ([100, 200, 300], 200, False),
        ([1], True, True),
        ({"prefix": "init"}, "running", True),
        ({"prefix": "init"}, "initializing", False),
        ({"prefix": "init"}, 5, True),
        ({"prefix": ["us-", "eu-"]}, "eu-west-1", False),
        ({"prefix": ["us-", "eu-"]}, "ap-south-1", True),
        ({"suffix": ".png"}, "a.jpg", True),
        ({"suffix": ".png"}, "a.png", False),
        ({"equals-ignore-case": "initializing"}, "INITIALIZING", False),
        ({"equals-ignore-case": "initializing"}, "running", True),
        ({"equals-ignore-case": ["a", "B"]}, "b", False),
        ({"equals-ignore-case": ["a", "B"]}, "c", True),
        ({"wildcard": "*/lib/*"}, "/usr/lib/x.so", False),
        ({"wildcard": "*/lib/*"}, "/usr/bin/x", True),
        ({"wildcard": ["*/lib/*", "*/bin/*"]}, "/usr/bin/x", False),
        ({"wildcard": ["*/lib/*", "*/bin/*"]}, "/usr/share/x", True),
    ],
)
def test_anything_but(argument: Any, value: Any, expected: bool) -> None:
    check(leaf({"anything-but": argument}), field(value), expected)


def test_anything_but_does_not_match_a_missing_field() -> None:
    check(leaf({"anything-but": "x"}), {"detail": {}}, False)
    check(leaf({"anything-but": "x"}), {}, False)


def test_anything_but_or_missing_needs_exists_false_alongside() -> None:
    pattern = leaf({"anything-but": {"prefix": "cdk-"}}, {"exists": False})
    check(pattern, {"detail": {}}, True)
    check(pattern, field("alice"), True)
    check(pattern, field("cdk-deploy"), False)


def test_documented_anything_but_cloudtrail_and_aws_sources() -> None:
    check({"detail-type": [{"anything-but": "AWS API Call via CloudTrail"}]}, EC2_EVENT, True)
    check({"source": [{"anything-but": ["aws.ec2", "aws.s3"]}]}, EC2_EVENT, False)
    check({"source": [{"anything-but": {"prefix": "aws."}}]}, EC2_EVENT, False)
    check({"source": [{"anything-but": {"prefix": "aws."}}]}, {"source": "my.app"}, True)


# --- numeric ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value", "expected"),
    [
        ([">", 0, "<=", 5], 5, True),
        ([">", 0, "<=", 5], 0, False),
        ([">", 0, "<=", 5], 0.000001, True),
        ([">", 0, "<=", 5], 5.0000001, False),
        ([">=", 0, "<", 5], 0, True),
        ([">=", 0, "<", 5], 5, False),
        (["<", 10], 9.99, True),
        (["<", 10], 10, False),
        (["<=", 10], 10.0, True),
        ([">", -5], -4, True),
        ([">", -5], -5, False),
        ([">=", -5.5], -5.5, True),
        (["=", 3.018e2], 301.8, True),
        (["=", 300], 300.0, True),
        (["=", 300], 300.5, False),
        ([">", 4e9], 5e9, True),
        ([">=", -5e9, "<=", 5e9], -5e9, True),
        ([">", 0], 6e9, False),  # outside the range numeric matching covers
        ([">", 0], 10**20, False),
        ([">", 0], 1e-6, True),
        ([">", 0], 1e-7, False),  # finer than six decimals
        ([">", 0], "5", False),
        ([">", 0], "1e3", False),
        ([">", 0], True, False),
        (["<", 1], False, False),
        ([">", 0], None, False),
        ([">", 0], [1, "x"], True),
        ([">", 0], [-1, "5"], False),
    ],
)
def test_numeric(expression: list[Any], value: Any, expected: bool) -> None:
    check(leaf({"numeric": expression}), field(value), expected)


def test_documented_numeric_example_needs_every_field_to_hold() -> None:
    pattern = {
        "detail": {
            "c-count": [{"numeric": [">", 0, "<=", 5]}],
            "d-count": [{"numeric": ["<", 10]}],
            "x-limit": [{"numeric": ["=", 3.018e2]}],
        }
    }
    check(pattern, EC2_EVENT, True)
    too_many = {**EC2_EVENT, "detail": {**EC2_EVENT["detail"], "d-count": 10}}
    check(pattern, too_many, False)


# --- cidr ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "value", "expected"),
    [
        ("10.0.0.0/24", "10.0.0.33", True),
        ("10.0.0.0/24", "10.0.0.255", True),
        ("10.0.0.0/24", "10.0.1.1", False),
        ("10.0.0.0/8", "10.200.3.4", True),
        ("10.0.0.7/24", "10.0.0.200", True),  # host bits are masked
        ("192.0.2.0/31", "192.0.2.1", True),
        ("192.0.2.0/31", "192.0.2.2", False),
        ("2001:db8::/32", "2001:db8:1234::1", True),
        ("2001:db8::/32", "2001:db9::1", False),
        ("10.0.0.0/24", "::ffff:10.0.0.1", False),
        ("::/0", "10.0.0.1", False),
        ("10.0.0.0/24", "not an ip", False),
        ("10.0.0.0/24", "10.0.0.1.5", False),
        ("10.0.0.0/24", 167772161, False),
    ],
)
def test_cidr(block: str, value: Any, expected: bool) -> None:
    check(leaf({"cidr": block}), field(value), expected)


# --- exists ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "exists_true", "exists_false"),
    [
        ("x", True, False),
        ("", True, False),
        (0, True, False),
        (False, True, False),
        (None, True, False),  # null is a value: the field is there
        ([1, 2], True, False),
        ([None], True, False),
        ([], False, True),  # an empty array has no leaf values
        ({"c1": 100}, False, True),  # exists looks at leaves only
        ([{"c1": 100}], False, True),
    ],
)
def test_exists_on_present_values(value: Any, exists_true: bool, exists_false: bool) -> None:
    check(leaf({"exists": True}), field(value), exists_true)
    check(leaf({"exists": False}), field(value), exists_false)


def test_exists_false_matches_when_the_field_or_any_parent_is_missing() -> None:
    pattern = {"detail": {"a": {"b": {"c": [{"exists": False}]}}}}
    check(pattern, {}, True)
    check(pattern, {"detail": {}}, True)
    check(pattern, {"detail": {"a": {}}}, True)
    check(pattern, {"detail": {"a": "scalar"}}, True)
    check(pattern, {"detail": {"a": {"b": None}}}, True)
    check(pattern, {"detail": {"a": {"b": {"c": 1}}}}, False)
    check(pattern, {"detail": {"a": {"b": {"c": None}}}}, False)


def test_exists_true_on_a_missing_nested_path_does_not_match() -> None:
    pattern = {"detail": {"a": {"b": [{"exists": True}]}}}
    check(pattern, {"detail": {}}, False)
    check(pattern, {"detail": {"a": {"b": "x"}}}, True)


def test_documented_exists_examples() -> None:
    absent = {"detail": {"c-count": [{"exists": False}]}}
    check(absent, {"detail": {"state": "running"}}, True)
    check(absent, {"detail": {"state": "running", "c-count": {"c1": 100}}}, True)
    check(absent, EC2_EVENT, False)
    present = {"detail": {"state": [{"exists": True}]}}
    check(present, EC2_EVENT, True)
    check(present, {"detail": {"c-count": {"c1": 100}}}, False)


def test_exists_true_combined_with_values_in_the_same_list_is_an_or() -> None:
    check(leaf("x", {"exists": False}), {"detail": {}}, True)
    check(leaf("x", {"exists": False}), field("y"), False)
    check(leaf({"exists": True}, {"exists": False}), {"detail": {}}, True)
    check(leaf({"exists": True}, {"exists": False}), field(1), True)


# --- arrays ----------------------------------------------------------------------------


def test_documented_array_intersection_on_resources() -> None:
    pattern = {
        "resources": [
            "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
            "arn:aws:ec2:us-east-1:111122223333:instance/i-b188560f",
        ]
    }
    event = {
        "resources": [
            "arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:asg",
            "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f",
        ]
    }
    check(pattern, event, True)
    check(pattern, {"resources": ["arn:aws:s3:::bucket"]}, False)
    check(pattern, {"resources": []}, False)


@pytest.mark.parametrize(
    ("expression", "values", "expected"),
    [
        ({"prefix": "b"}, ["apple", "banana"], True),
        ({"prefix": "c"}, ["apple", "banana"], False),
        ({"anything-but": "a"}, ["a", "b"], True),
        ({"anything-but": "a"}, ["a", "a"], False),
        ({"numeric": [">", 10]}, [1, 20], True),
        ({"cidr": "10.0.0.0/8"}, ["192.168.0.1", "10.1.1.1"], True),
        ({"wildcard": "*.png"}, [["a.jpg"], ["b.png"]], True),  # nested arrays flatten
        ({"equals-ignore-case": "x"}, [{"x": 1}, "X"], True),
    ],
)
def test_a_leaf_matches_an_array_when_any_element_matches(
    expression: dict[str, Any], values: list[Any], expected: bool
) -> None:
    check(leaf(expression), field(values), expected)


EMPLOYEES = {
    "employees": [
        {"firstName": "John", "lastName": "Doe"},
        {"firstName": "Anna", "lastName": "Smith"},
        {"firstName": "Peter", "lastName": "Jones"},
    ]
}


def test_nested_pattern_matches_an_array_of_objects_element_by_element() -> None:
    check({"employees": {"firstName": ["Anna"]}}, EMPLOYEES, True)
    check({"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}, EMPLOYEES, True)
    check({"employees": {"firstName": ["Mary"]}}, EMPLOYEES, False)


def test_fields_from_different_array_elements_never_combine() -> None:
    check({"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}, EMPLOYEES, False)


def test_multi_level_arrays_of_objects_flatten() -> None:
    event = {
        "employees": [
            [{"firstName": "John", "lastName": "Doe"}, {"firstName": "Anna", "lastName": "Smith"}],
            [{"firstName": "Peter", "lastName": "Jones"}],
        ]
    }
    check({"employees": {"firstName": ["Peter"], "lastName": ["Jones"]}}, event, True)
    check({"employees": {"firstName": ["Peter"], "lastName": ["Smith"]}}, event, False)


def test_arrays_of_objects_along_a_deeper_path() -> None:
    event = {
        "detail": {
            "orders": [
                {"id": 1, "items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 5}]},
                {"id": 2, "items": [{"sku": "C", "qty": 9}]},
            ]
        }
    }
    sku_b_bulk = {"detail": {"orders": {"items": {"sku": ["B"], "qty": [{"numeric": [">", 3]}]}}}}
    check(sku_b_bulk, event, True)
    sku_a_bulk = {"detail": {"orders": {"items": {"sku": ["A"], "qty": [{"numeric": [">", 3]}]}}}}
    check(sku_a_bulk, event, False)
    order_2_with_c = {"detail": {"orders": {"id": [2], "items": {"sku": ["C"]}}}}
    check(order_2_with_c, event, True)
    order_1_with_c = {"detail": {"orders": {"id": [1], "items": {"sku": ["C"]}}}}
    check(order_1_with_c, event, False)


def test_exists_false_inside_an_array_of_objects() -> None:
    no_discount = {"items": {"discount": [{"exists": False}]}}
    # With nothing else pinning an element, the field must be absent from every element.
    check(no_discount, {"items": [{"sku": "A"}, {"sku": "B"}]}, True)
    check(no_discount, {"items": [{"sku": "A"}, {"sku": "B", "discount": 5}]}, False)
    check(no_discount, {"items": []}, True)
    check(no_discount, {"items": ["scalar"]}, True)
    # EventBridge checks absence before it looks at "sku" ("items.discount" sorts first),
    # so any element with a discount is enough to fail: no element is pinned yet.
    b_without_discount = {"items": {"sku": ["B"], "discount": [{"exists": False}]}}
    check(b_without_discount, {"items": [{"sku": "A", "discount": 5}, {"sku": "B"}]}, False)
    check(b_without_discount, {"items": [{"sku": "A"}, {"sku": "B", "discount": 5}]}, False)
    check(b_without_discount, {"items": [{"sku": "A"}, {"sku": "B"}]}, True)


def test_value_or_missing_inside_an_array_of_objects() -> None:
    pattern = {"items": {"tag": ["x", {"exists": False}]}}
    check(pattern, {"items": [{"tag": "x"}, {"tag": "y"}]}, True)
    check(pattern, {"items": [{"tag": "y"}]}, False)
    check(pattern, {"items": [{"other": 1}]}, True)


# --- $or -------------------------------------------------------------------------------


def test_or_between_fields() -> None:
    pattern = {
        "source": ["aws.cloudwatch"],
        "$or": [
            {"metricName": ["CPUUtilization", "ReadLatency"]},
            {"namespace": ["AWS/EC2", "AWS/ES"]},
        ],
    }
    check(pattern, {"source": "aws.cloudwatch", "metricName": "ReadLatency"}, True)
    check(pattern, {"source": "aws.cloudwatch", "namespace": "AWS/ES"}, True)
    check(pattern, {"source": "aws.cloudwatch", "namespace": "AWS/S3"}, False)
    check(pattern, {"source": "aws.ec2", "metricName": "ReadLatency"}, False)


def test_parallel_or_at_two_levels() -> None:
    pattern = {
        "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}],
        "detail": {"$or": [{"source": ["aws.cloudwatch"]}, {"detail-type": ["CloudWatch Alarm"]}]},
    }
    check(pattern, {"namespace": "AWS/EC2", "detail": {"detail-type": "CloudWatch Alarm"}}, True)
    check(pattern, {"metricName": "CPUUtilization", "detail": {"source": "aws.cloudwatch"}}, True)
    check(pattern, {"namespace": "AWS/EC2", "detail": {"source": "aws.ec2"}}, False)
    check(pattern, {"detail": {"source": "aws.cloudwatch"}}, False)


def test_nested_or_and_and() -> None:
    pattern = {
        "source": ["aws.cloudwatch"],
        "$or": [
            {"metricName": ["CPUUtilization", "ReadLatency"]},
            {
                "metricType": ["MetricType"],
                "namespace": ["AWS/EC2", "AWS/ES"],
                "$or": [{"metricId": [1234]}, {"spaceId": [1000]}],
            },
            {"scope": ["Service"]},
        ],
    }
    base = {"source": "aws.cloudwatch", "metricType": "MetricType", "namespace": "AWS/EC2"}
    check(pattern, {**base, "spaceId": 1000}, True)
    check(pattern, {**base, "metricId": 1234}, True)
    check(pattern, base, False)
    check(pattern, {"source": "aws.cloudwatch", "scope": "Service"}, True)
    check(pattern, {"source": "aws.cloudwatch", "metricId": 1234}, False)


def test_or_with_nested_objects_and_absence() -> None:
    pattern = {
        "detail": {
            "$or": [
                {"user": {"role": ["admin"]}},
                {"user": {"role": [{"exists": False}]}},
            ]
        }
    }
    check(pattern, {"detail": {"user": {"role": "admin"}}}, True)
    check(pattern, {"detail": {"user": {}}}, True)
    check(pattern, {"detail": {}}, True)
    check(pattern, {"detail": {"user": {"role": "guest"}}}, False)


def test_or_inside_an_array_of_objects_is_checked_per_element() -> None:
    pattern = {"items": {"sku": ["A"], "$or": [{"qty": [1]}, {"gift": [True]}]}}
    check(pattern, {"items": [{"sku": "A", "qty": 2}, {"sku": "B", "gift": True}]}, False)
    check(pattern, {"items": [{"sku": "B", "qty": 1}, {"sku": "A", "gift": True}]}, True)


# --- combined examples -----------------------------------------------------------------


def test_documented_complex_example() -> None:
    pattern = {
        "time": [{"prefix": "2017-12-22"}],
        "detail": {
            "state": [{"anything-but": "initializing"}],
            "c-count": [{"numeric": [">", 0, "<=", 5]}],
            "d-count": [{"numeric": ["<", 10]}],
            "x-limit": [{"anything-but": [100, 200, 300]}],
            "source-ip": [{"cidr": "10.0.0.0/8"}],
        },
    }
    check(pattern, EC2_EVENT, True)
    initializing = {**EC2_EVENT, "detail": {**EC2_EVENT["detail"], "state": "initializing"}}
    check(pattern, initializing, False)
    limited = {**EC2_EVENT, "detail": {**EC2_EVENT["detail"], "x-limit": 200}}
    check(pattern, limited, False)


def test_matches_an_event_object_and_its_dict_alike() -> None:
    event = Event.new(
        "OrderPlaced",
        {"total": 120.5, "lines": [{"sku": "A"}, {"sku": "B"}]},
        source="shop.orders",
        run_id="r-1",
    )
    pattern = compile_pattern(
        {
            "source": [{"prefix": "shop."}],
            "detail-type": ["OrderPlaced"],
            "run_id": ["r-1"],
            "time": [{"wildcard": "*Z"}],
            "detail": {"total": [{"numeric": [">", 100]}], "lines": {"sku": ["B"]}},
        }
    )
    assert pattern.matches(event)
    assert pattern.matches(event.to_dict())
    assert not pattern.matches(Event.new("OrderPlaced", {"total": 5}, source="shop.orders"))


# --- API -------------------------------------------------------------------------------


def test_compile_pattern_accepts_a_json_string_and_keeps_the_pattern() -> None:
    text = '{"source": ["a"], "detail": {"n": [{"numeric": [">", 1]}]}}'
    compiled = compile_pattern(text)
    assert compiled.pattern == json.loads(text)
    assert compiled == compile_pattern(json.loads(text))
    assert hash(compiled) == hash(compile_pattern(json.loads(text)))
    assert compile_pattern(compiled) is compiled
    assert "numeric" in repr(compiled)


def test_changing_the_callers_dict_after_compiling_changes_nothing() -> None:
    raw: dict[str, Any] = {"source": ["a"]}
    compiled = compile_pattern(raw)
    raw["source"].append("b")
    assert compiled.pattern == {"source": ["a"]}
    assert not compiled.matches({"source": "b"})


def test_duplicate_keys_in_json_text_keep_the_last() -> None:
    text = (
        '{"detail": {"location": [{"prefix": "us-"}], "location": [{"anything-but": "us-east"}]}}'
    )
    compiled = compile_pattern(text)
    assert compiled.matches({"detail": {"location": "eu-west"}})
    assert not compiled.matches({"detail": {"location": "us-east"}})


def test_matches_convenience_and_non_dict_mappings() -> None:
    from types import MappingProxyType

    assert matches({"a": [1]}, {"a": 1})
    assert matches('{"a": [1]}', MappingProxyType({"a": 1}))
    assert not matches({"a": [1]}, {"a": 2})


def test_event_pattern_is_not_equal_to_other_types() -> None:
    assert compile_pattern({"a": [1]}) != {"a": [1]}
    assert compile_pattern({"a": [1]}) != compile_pattern({"a": [True]})
    assert compile_pattern({"a": [1], "b": [2]}) == compile_pattern({"b": [2], "a": [1]})
    assert isinstance(compile_pattern({"a": [1]}), EventPattern)


def test_dotted_keys_are_field_names_not_paths() -> None:
    check({"detail": {"state.status": ["running"]}}, {"detail": {"state.status": "running"}}, True)
    check(
        {"detail": {"state.status": ["running"]}},
        {"detail": {"state": {"status": "running"}}},
        False,
    )


def test_or_is_a_field_name_inside_events_too() -> None:
    check({"a": [1]}, {"$or": 1, "a": 1}, True)
