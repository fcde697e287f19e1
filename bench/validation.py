"""Validation cost per PlaceOrder (issue 13): protovalidate rules vs the hand-written check.

Request: ``shop.orders.v1.PlaceOrderRequest`` (customer id, ``N`` valid line
items), ``N`` = 3 (the typical order) and 2,000 (a large repeated field).
Each row is µs per call, the median of rounds.

Rows:
  FromString                  upb parse of the request bytes (the baseline every call pays)
  FromString + from_proto     what the gateway's decoder does: bytes -> the handler's dataclass
  hand-written _validate      the shop's check before issue 13 (on the dataclass)
  protovalidate on the proto  ``Validation().check(proto)``: rules of orders.proto
  to_proto                    the dataclass converted back (what the stage does first)
  Validation stage            ``check(dataclass)``: to_proto + protovalidate, as in the pipeline

Run: ``PYTHONPATH=src:gen/python:. .venv/bin/python bench/validation.py [--quick] [--json out.json]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_sync, machine_info, print_table, write_json
from shop.orders.v1 import orders_pb2

from examples.shop.orders.messages import PlaceOrder
from wirebus import FieldViolation, InvalidArgument, Validation

CUSTOMER_ID_MAX = 255
INT64_MAX = 2**63 - 1


def hand_validate(cmd: PlaceOrder) -> int:
    """The shop's ``_validate`` as it was before issue 13 (examples/shop/orders/handlers.py)."""
    violations = []
    if not cmd.customer_id:
        violations.append(FieldViolation("customer_id", "must not be empty"))
    elif len(cmd.customer_id) > CUSTOMER_ID_MAX:
        violations.append(
            FieldViolation("customer_id", f"must be at most {CUSTOMER_ID_MAX} characters")
        )
    elif "\x00" in cmd.customer_id:
        violations.append(FieldViolation("customer_id", "must not contain a NUL character"))
    if not cmd.items:
        violations.append(FieldViolation("items", "an order needs at least one item"))
    for i, item in enumerate(cmd.items):
        if item.quantity < 1:
            violations.append(FieldViolation(f"items[{i}].quantity", "must be at least 1"))
        if item.price_cents < 0:
            violations.append(FieldViolation(f"items[{i}].price_cents", "must not be negative"))
    total = sum(i.quantity * i.price_cents for i in cmd.items)
    if not violations and total > INT64_MAX:
        violations.append(FieldViolation("items", f"the order total must be at most {INT64_MAX}"))
    if violations:
        raise InvalidArgument("the order is not valid", violations=violations)
    return total


def request(items: int) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(
        customer_id="customer-42",
        items=[
            orders_pb2.LineItem(sku=f"SKU-{i:05d}", quantity=1 + i % 5, price_cents=100 + i)
            for i in range(items)
        ],
    )


def rows_for(items: int, repeats: int, budget: float) -> list[dict[str, Any]]:
    proto = request(items)
    data = proto.SerializeToString()
    command = PlaceOrder.from_proto(proto)
    validation = Validation()
    validation.prepare([PlaceOrder, orders_pb2.PlaceOrderRequest])  # as App.mediator() does
    cases = [
        ("FromString", lambda: orders_pb2.PlaceOrderRequest.FromString(data)),
        (
            "FromString + from_proto",
            lambda: PlaceOrder.from_proto(orders_pb2.PlaceOrderRequest.FromString(data)),
        ),
        ("hand-written _validate", lambda: hand_validate(command)),
        ("protovalidate on the proto", lambda: validation.check(proto)),
        ("to_proto", command.proto),
        ("Validation stage", lambda: validation.check(command)),
    ]
    out = []
    for label, fn in cases:
        row = bench_sync(fn, repeats=repeats, budget_s=budget)
        out.append({"items": items, "label": label, **row})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 9)
    budget = 0.05 if args.quick else 0.2
    results = [r for n in (3, 2_000) for r in rows_for(n, repeats, budget)]
    print(machine_info())
    table = [[r["items"], r["label"], f"{r['us']:.2f}", f"{r['us_min']:.2f}"] for r in results]
    print_table("validation per PlaceOrder", ["items", "row", "µs median", "µs min"], table)
    write_json(args.json, {"machine": machine_info(), "rows": results})


if __name__ == "__main__":
    main()
