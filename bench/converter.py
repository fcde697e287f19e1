"""Dataclass <-> protobuf conversion: wirebus compiled converters vs hand-written code.

Message: ``examples.shop.orders.messages.OrderPlaced`` with 3 line items and a
UTC timestamp.

Rows:
  auto proto()            ``event.proto()`` (compiled by wirebus)
  hand to_proto           obvious hand-written function (Timestamp.FromDatetime,
                          list comprehension of LineItem)
  auto from_proto()       ``OrderPlaced.from_proto(msg)``
  hand from_proto         obvious hand-written function (ToDatetime(tzinfo=UTC))
  upb SerializeToString   of a prebuilt ``orders_pb2.OrderPlaced`` (no conversion)
  upb FromString          parse of the same bytes (no conversion)
  auto proto()+Serialize  dataclass -> bytes with wirebus
  betterproto bytes()     dataclass -> bytes with betterproto 2.0.0b7 (an equivalent
                          hand-defined betterproto.Message; its datetime field
                          maps to google.protobuf.Timestamp)
  auto FromString+from_proto / betterproto parse   bytes -> dataclass

Run: ``PYTHONPATH=gen/python:. .venv/bin/python bench/converter.py [--quick] [--json out.json]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_sync, machine_info, print_table, write_json
from google.protobuf.timestamp_pb2 import Timestamp
from shop.orders.v1 import orders_pb2

from examples.shop.orders.messages import LineItem, OrderPlaced

UTC = dt.UTC

EVENT = OrderPlaced(
    order_id="0b6f3a1e-4d7c-4e58-9a53-0f0a6b1c2d3e",
    customer_id="customer-42",
    items=(
        LineItem(sku="SKU-APPLE", quantity=3, price_cents=120),
        LineItem(sku="SKU-PEAR", quantity=1, price_cents=250),
        LineItem(sku="SKU-PLUM", quantity=12, price_cents=45),
    ),
    total_cents=3 * 120 + 250 + 12 * 45,
    placed_at=dt.datetime(2025, 3, 14, 15, 9, 26, 535897, tzinfo=UTC),
)


# ---------------------------------------------------------------- hand-written


def hand_to_proto(e: OrderPlaced) -> orders_pb2.OrderPlaced:
    ts = Timestamp()
    ts.FromDatetime(e.placed_at)
    return orders_pb2.OrderPlaced(
        order_id=e.order_id,
        customer_id=e.customer_id,
        items=[
            orders_pb2.LineItem(sku=i.sku, quantity=i.quantity, price_cents=i.price_cents)
            for i in e.items
        ],
        total_cents=e.total_cents,
        placed_at=ts,
    )


def hand_from_proto(m: orders_pb2.OrderPlaced) -> OrderPlaced:
    return OrderPlaced(
        order_id=m.order_id,
        customer_id=m.customer_id,
        items=tuple(
            [LineItem(sku=i.sku, quantity=i.quantity, price_cents=i.price_cents) for i in m.items]
        ),
        total_cents=m.total_cents,
        placed_at=m.placed_at.ToDatetime(tzinfo=UTC),
    )


# ---------------------------------------------------------------- betterproto


# Module level: betterproto resolves the (string) annotations in this module's globals.
try:
    import betterproto

    @dataclass(eq=False, repr=False)
    class BpLineItem(betterproto.Message):
        sku: str = betterproto.string_field(1)
        quantity: int = betterproto.int32_field(2)
        price_cents: int = betterproto.int64_field(3)

    @dataclass(eq=False, repr=False)
    class BpOrderPlaced(betterproto.Message):
        order_id: str = betterproto.string_field(1)
        customer_id: str = betterproto.string_field(2)
        items: list[BpLineItem] = betterproto.message_field(3)
        total_cents: int = betterproto.int64_field(4)
        placed_at: dt.datetime = betterproto.message_field(5)  # google.protobuf.Timestamp

    _BP_ERROR = None
except ImportError as exc:  # pragma: no cover - optional (pip install 'wirebus[bench]')
    _BP_ERROR = f"betterproto not importable, its rows are skipped: {exc}"


def betterproto_classes() -> tuple[Any, Any] | str:
    """The betterproto equivalents, or a string saying why they are unavailable."""
    if _BP_ERROR is not None:
        return _BP_ERROR
    return BpLineItem, BpOrderPlaced


# ---------------------------------------------------------------- run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 9)
    budget = 0.05 if args.quick else 0.2
    print(machine_info(), file=sys.stderr)

    # correctness first: every path must agree, or the timing means nothing
    auto_msg = EVENT.proto()
    hand_msg = hand_to_proto(EVENT)
    assert auto_msg == hand_msg, (auto_msg, hand_msg)
    wire = auto_msg.SerializeToString()
    assert OrderPlaced.from_proto(auto_msg) == EVENT
    assert hand_from_proto(auto_msg) == EVENT
    prebuilt = orders_pb2.OrderPlaced.FromString(wire)

    rows: list[dict[str, Any]] = []

    def row(key: str, label: str, fn: Any, group: str) -> None:
        r = bench_sync(fn, repeats=repeats, budget_s=budget)
        r.update(key=key, label=label, group=group)
        rows.append(r)
        print(f"  {label:46} {r['us']:8.3f} µs", file=sys.stderr, flush=True)

    from_proto = OrderPlaced.from_proto
    row("auto_to", "auto proto()", EVENT.proto, "to_proto")
    row("hand_to", "hand-written to_proto", lambda: hand_to_proto(EVENT), "to_proto")
    row("auto_from", "auto OrderPlaced.from_proto()", lambda: from_proto(prebuilt), "from_proto")
    row("hand_from", "hand-written from_proto", lambda: hand_from_proto(prebuilt), "from_proto")
    row("upb_ser", "upb SerializeToString (prebuilt proto)", prebuilt.SerializeToString, "wire")
    parse = orders_pb2.OrderPlaced.FromString
    row("upb_parse", "upb FromString (bytes -> proto)", lambda: parse(wire), "wire")
    row(
        "auto_enc",
        "auto proto().SerializeToString()",
        lambda: EVENT.proto().SerializeToString(),
        "encode",
    )
    row(
        "hand_enc",
        "hand to_proto().SerializeToString()",
        lambda: hand_to_proto(EVENT).SerializeToString(),
        "encode",
    )

    notes: list[str] = []
    bp = betterproto_classes()
    if isinstance(bp, str):
        notes.append(bp)
    else:
        BpLineItem, BpOrderPlaced = bp
        bp_event = BpOrderPlaced(
            order_id=EVENT.order_id,
            customer_id=EVENT.customer_id,
            items=[
                BpLineItem(sku=i.sku, quantity=i.quantity, price_cents=i.price_cents)
                for i in EVENT.items
            ],
            total_cents=EVENT.total_cents,
            placed_at=EVENT.placed_at,
        )
        bp_wire = bytes(bp_event)
        if bp_wire != wire:
            notes.append(
                "betterproto bytes differ from upb's (field order/encoding); parsed values compared instead"
            )
        back = BpOrderPlaced().parse(wire)
        assert back.order_id == EVENT.order_id and len(back.items) == 3
        assert back.placed_at == EVENT.placed_at, (back.placed_at, EVENT.placed_at)
        assert orders_pb2.OrderPlaced.FromString(bp_wire) == auto_msg
        row("bp_enc", "betterproto bytes(msg)", lambda: bytes(bp_event), "encode")
        row("auto_dec", "auto FromString + from_proto", lambda: from_proto(parse(wire)), "decode")
        row(
            "bp_dec",
            "betterproto Msg().parse(bytes)",
            lambda: BpOrderPlaced().parse(wire),
            "decode",
        )

    by = {r["key"]: r for r in rows}
    ratios = {
        "auto_to_over_hand": by["auto_to"]["us"] / by["hand_to"]["us"],
        "auto_from_over_hand": by["auto_from"]["us"] / by["hand_from"]["us"],
        "auto_to_over_upb_ser": by["auto_to"]["us"] / by["upb_ser"]["us"],
    }
    if "bp_enc" in by:
        ratios["bp_enc_over_auto_enc"] = by["bp_enc"]["us"] / by["auto_enc"]["us"]
        ratios["bp_dec_over_auto_dec"] = by["bp_dec"]["us"] / by["auto_dec"]["us"]
    ref = {
        "to_proto": "hand_to",
        "from_proto": "hand_from",
        "wire": "upb_ser",
        "encode": "auto_enc",
        "decode": "auto_dec",
    }
    for r in rows:
        base = by.get(ref[r["group"]])
        r["ratio"] = r["us"] / base["us"] if base else None
        r["ratio_to"] = ref[r["group"]]
    print_table(
        f"converter: OrderPlaced with 3 items (median of {repeats} repeats)",
        ["row", "µs/call", "min", "max", "ratio", "relative to"],
        [
            [r["label"], r["us"], r["us_min"], r["us_max"], r["ratio"], by[r["ratio_to"]]["label"]]
            for r in rows
        ],
    )
    print_table(
        "converter: targets",
        ["measure", "value", "target"],
        [
            ["auto proto() / hand-written", ratios["auto_to_over_hand"], "<= 1.0"],
            ["auto from_proto() / hand-written", ratios["auto_from_over_hand"], "<= 1.0"],
            *(
                [
                    [
                        "betterproto encode / auto proto()+Serialize",
                        ratios["bp_enc_over_auto_enc"],
                        "-",
                    ],
                    [
                        "betterproto parse / auto FromString+from_proto",
                        ratios["bp_dec_over_auto_dec"],
                        "-",
                    ],
                ]
                if "bp_enc" in by
                else []
            ),
        ],
    )
    for n in notes:
        print(f"note: {n}")
    result = {"bench": "converter", "rows": rows, "ratios": ratios, "notes": notes}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
