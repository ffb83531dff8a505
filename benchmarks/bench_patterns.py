"""How long one match takes: the median over many runs, for a few typical patterns.

Run with ``python benchmarks/bench_patterns.py``.
"""

from __future__ import annotations

import statistics
import timeit
from datetime import UTC, datetime
from typing import Any

from cadenza.events import Event, compile_pattern

EVENT = Event.new(
    "OrderPlaced",
    {
        "order_id": "o-1842",
        "customer": {"id": "c-7", "tier": "gold", "country": "NL"},
        "total": 149.95,
        "currency": "EUR",
        "channel": "web",
        "coupon": None,
        "client_ip": "10.1.4.20",
        "lines": [
            {"sku": "A-1", "qty": 1, "price": 19.95},
            {"sku": "B-7", "qty": 2, "price": 65.0},
        ],
        "tags": ["new-customer", "promo"],
    },
    source="shop.orders",
    resources=["arn:local:shop:order/o-1842"],
    run_id="r-42",
    time=datetime(2026, 1, 31, 12, 0, tzinfo=UTC),
).to_dict()

PATTERNS: dict[str, dict[str, Any]] = {
    "3 exact fields": {
        "source": ["shop.orders"],
        "detail-type": ["OrderPlaced"],
        "detail": {"currency": ["EUR"]},
    },
    "10 mixed fields": {
        "source": [{"prefix": "shop."}],
        "detail-type": ["OrderPlaced", "OrderAmended"],
        "run_id": [{"exists": True}],
        "detail": {
            "total": [{"numeric": [">", 100, "<=", 1000]}],
            "currency": [{"equals-ignore-case": "eur"}],
            "channel": [{"anything-but": ["pos", "phone"]}],
            "coupon": [None],
            "customer": {"tier": ["gold", "platinum"], "country": [{"anything-but": "US"}]},
            "tags": [{"wildcard": "*promo*"}],
        },
    },
    "cidr + suffix": {
        "detail": {"client_ip": [{"cidr": "10.0.0.0/8"}], "order_id": [{"suffix": "42"}]},
    },
    "array of objects": {
        "detail": {"lines": {"sku": ["B-7"], "qty": [{"numeric": [">=", 2]}]}},
    },
    "$or, miss": {
        "$or": [
            {"detail": {"channel": ["pos"]}},
            {"detail": {"customer": {"tier": ["platinum"]}}},
            {"detail": {"total": [{"numeric": [">", 1000]}]}},
        ]
    },
}


def main() -> None:
    number = 20_000
    print(f"{'pattern':<20} {'matches':>7} {'median per match':>18}")
    for name, raw in PATTERNS.items():
        pattern = compile_pattern(raw)
        runs = timeit.repeat(lambda p=pattern: p.matches(EVENT), number=number, repeat=7)
        per_match = statistics.median(runs) / number
        print(f"{name:<20} {pattern.matches(EVENT)!s:>7} {per_match * 1e6:>15.2f} µs")


if __name__ == "__main__":
    main()
