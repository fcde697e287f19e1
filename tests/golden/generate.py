"""Write the golden files: the bytes of each shop message as Python (upb) encodes them.

Every language's tests decode these, compare field values with
``manifest.json`` and re-encode to the same bytes. Run from the repository
root after changing the protos: ``python tests/golden/generate.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from shop.orders.v1 import orders_pb2 as o
from shop.payments.v1 import payments_pb2 as p

HERE = Path(__file__).resolve().parent
PLACED_AT = Timestamp(seconds=1795435200, nanos=123456000)  # 2026-11-23T12:00:00.123456Z
ITEMS = [
    o.LineItem(sku="book", quantity=2, price_cents=1250),
    o.LineItem(sku="pen", quantity=3, price_cents=199),
    o.LineItem(sku="mug", quantity=1, price_cents=800),
]
ORDER = o.Order(
    order_id="ord-0001",
    customer_id="alice",
    items=ITEMS,
    total_cents=3897,
    status=o.ORDER_STATUS_PAID,
    placed_at=PLACED_AT,
)


def messages() -> list[tuple[str, Message]]:
    """(file stem, message) of every golden message; stems are stable."""
    return [
        ("line_item", ITEMS[0]),
        ("place_order_request", o.PlaceOrderRequest(customer_id="alice", items=ITEMS)),
        ("place_order_response", o.PlaceOrderResponse(order_id="ord-0001")),
        ("get_order_request", o.GetOrderRequest(order_id="ord-0001")),
        ("order", ORDER),
        ("cancel_order_request", o.CancelOrderRequest(order_id="ord-0001", reason="changed mind")),
        ("cancel_order_response", o.CancelOrderResponse()),
        ("list_orders_request", o.ListOrdersRequest(customer_id="alice")),
        (
            "import_orders_response",
            o.ImportOrdersResponse(imported=2, order_ids=["ord-0001", "ord-0002"]),
        ),
        ("watch_orders_request", o.WatchOrdersRequest(order_id="ord-0001", unwatch=True)),
        (
            "order_status_update",
            o.OrderStatusUpdate(order_id="ord-0001", status=o.ORDER_STATUS_CANCELLED),
        ),
        (
            "order_placed",
            o.OrderPlaced(
                order_id="ord-0001",
                customer_id="alice",
                items=ITEMS,
                total_cents=3897,
                placed_at=PLACED_AT,
            ),
        ),
        (
            "order_cancelled",
            o.OrderCancelled(order_id="ord-0001", reason="changed mind", cancelled_at=PLACED_AT),
        ),
        (
            "payment_captured",
            p.PaymentCaptured(
                payment_id="pay-0001", order_id="ord-0001", amount_cents=3897, captured_at=PLACED_AT
            ),
        ),
        (
            "order_status_changed",
            o.OrderStatusChanged(
                order_id="ord-0001", status=o.ORDER_STATUS_PAID, changed_at=PLACED_AT
            ),
        ),
        ("order_snapshot", o.OrderSnapshot(order=ORDER, changed_at=PLACED_AT)),
        (
            "capture_payment",
            p.CapturePayment(order_id="ord-0001", customer_id="alice", amount_cents=3897),
        ),
        (
            "payment_declined",
            p.PaymentDeclined(
                order_id="ord-0001", amount_cents=120000, reason="over the limit of 100000 cents"
            ),
        ),
    ]


def manifest() -> list[dict[str, object]]:
    """One entry per file: its protobuf full name and its fields as canonical JSON."""
    return [
        {
            "file": f"{stem}.binpb",
            "type": message.DESCRIPTOR.full_name,
            "json": json_format.MessageToDict(message),
        }
        for stem, message in messages()
    ]


def main() -> None:
    for stem, message in messages():
        (HERE / f"{stem}.binpb").write_bytes(message.SerializeToString(deterministic=True))
    (HERE / "manifest.json").write_text(json.dumps(manifest(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(messages())} golden messages to {HERE}", file=sys.stderr)


if __name__ == "__main__":
    main()
