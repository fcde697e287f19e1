"""The shop over the Connect port: JSON and binary Connect, streaming, gRPC-Web, errors.

A real ``ConnectServer`` (uvicorn) on 127.0.0.1 shares the mediator of a
shop running as ``wirebus run`` runs it (``AppHarness``), beside its gRPC
gateway, so each behaviour is also compared with what the gRPC port says.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.app import app
from tests.conftest import status_details
from tests.unit._connect import envelope, frames, request, trailers
from wirebus.connect import ConnectConfig, ConnectServer
from wirebus.testing import AppHarness

SERVICE = "/shop.orders.v1.OrderService"
ITEMS = [{"sku": "book", "quantity": 2, "priceCents": "1250"}]


@pytest.fixture
async def shop() -> AsyncIterator[tuple[str, orders_pb2_grpc.OrderServiceStub]]:
    """``(base URL of the Connect port, a gRPC stub of the same shop)``."""
    async with AppHarness(app) as harness:
        config = ConnectConfig(port=0, grace_seconds=1.0)
        async with ConnectServer(app, config, mediator=harness.mediator) as server:
            yield server.url, orders_pb2_grpc.OrderServiceStub(await harness.channel())


async def place_json(base: str, customer: str = "alice") -> str:
    body = json.dumps({"customerId": customer, "items": ITEMS}).encode()
    reply = await request(f"{base}{SERVICE}/PlaceOrder", body)
    assert reply.status == 200, reply.body
    order_id: str = reply.json()["orderId"]
    return order_id


def detail(error: dict[str, Any], name: str) -> Any:
    [found] = [d for d in error["details"] if d["type"] == name]
    value = base64.b64decode(found["value"] + "=" * (-len(found["value"]) % 4))
    cls = {"google.rpc.BadRequest": error_details_pb2.BadRequest}.get(
        name, error_details_pb2.ErrorInfo
    )
    return cls.FromString(value), found.get("debug")


async def test_an_order_placed_with_json_is_read_back_as_json_with_camel_case_names(shop):
    base, _ = shop
    order_id = await place_json(base)
    reply = await request(f"{base}{SERVICE}/GetOrder", json.dumps({"orderId": order_id}).encode())
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    order = reply.json()
    assert order["orderId"] == order_id
    assert order["customerId"] == "alice"
    assert order["totalCents"] == "2500"  # proto3 JSON: int64 as a string
    assert order["items"] == ITEMS


async def test_binary_connect_speaks_the_same_messages_as_the_grpc_port(shop):
    base, stub = shop
    placed = orders_pb2.PlaceOrderRequest(
        customer_id="bob", items=[orders_pb2.LineItem(sku="pen", quantity=1, price_cents=199)]
    )
    reply = await request(
        f"{base}{SERVICE}/PlaceOrder", placed.SerializeToString(), content_type="application/proto"
    )
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/proto"
    order_id = orders_pb2.PlaceOrderResponse.FromString(reply.body).order_id
    over_grpc = await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id))
    assert over_grpc.customer_id == "bob"
    assert over_grpc.total_cents == 199


async def test_a_gzip_request_body_is_inflated(shop):
    base, _ = shop
    body = gzip.compress(json.dumps({"customerId": "carol", "items": ITEMS}).encode())
    reply = await request(f"{base}{SERVICE}/PlaceOrder", body, headers={"Content-Encoding": "gzip"})
    assert reply.status == 200
    assert reply.json()["orderId"]


async def test_an_invalid_request_is_400_with_the_same_bad_request_details_as_over_grpc(shop):
    base, stub = shop
    reply = await request(f"{base}{SERVICE}/PlaceOrder", b'{"customerId": "", "items": []}')
    assert reply.status == 400
    error = reply.json()
    assert error["code"] == "invalid_argument"
    bad, debug = detail(error, "google.rpc.BadRequest")
    assert {v.field for v in bad.field_violations} == {"customer_id", "items"}
    assert {v["field"] for v in debug["fieldViolations"]} == {"customer_id", "items"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PlaceOrder(orders_pb2.PlaceOrderRequest(customer_id=""))
    over_grpc = status_details(caught.value)
    assert over_grpc is not None
    assert error["message"] == caught.value.details() == over_grpc.message
    assert [d["type"] for d in error["details"]] == [
        d.type_url.rpartition("/")[2] for d in over_grpc.details
    ]


async def test_a_domain_error_keeps_its_code_http_status_and_error_info(shop):
    base, _ = shop
    reply = await request(f"{base}{SERVICE}/GetOrder", b'{"orderId": "nope"}')
    assert reply.status == 404
    error = reply.json()
    assert error["code"] == "not_found"
    info, _ = detail(error, "google.rpc.ErrorInfo")
    assert info.reason == "ORDER_NOT_FOUND"
    assert info.domain == "shop"


async def test_json_that_does_not_fit_and_bytes_that_do_not_parse_are_malformed_requests(shop):
    base, _ = shop
    for body, ctype in (
        (b'{"customerId": ', "application/json"),
        (b"\xff\xff", "application/proto"),
    ):
        reply = await request(f"{base}{SERVICE}/PlaceOrder", body, content_type=ctype)
        assert reply.status == 400, ctype
        error = reply.json()
        assert error["code"] == "invalid_argument"
        info, _ = detail(error, "google.rpc.ErrorInfo")
        assert info.reason == "MALFORMED_REQUEST"
        assert "Traceback" not in error["message"]


async def test_list_orders_streams_over_connect_then_ends_the_stream_cleanly(shop):
    base, _ = shop
    first, second = await place_json(base, "dora"), await place_json(base, "dora")
    request_bytes = orders_pb2.ListOrdersRequest(customer_id="dora").SerializeToString()
    reply = await request(
        f"{base}{SERVICE}/ListOrders",
        envelope(request_bytes),
        content_type="application/connect+proto",
    )
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/connect+proto"
    *items, (end_flags, end) = frames(reply.body)
    assert [orders_pb2.Order.FromString(data).order_id for _, data in items] == [first, second]
    assert end_flags == 0x02
    assert json.loads(end) == {}


async def test_a_stream_that_fails_ends_with_the_error_in_the_end_of_stream_message(shop):
    base, _ = shop
    reply = await request(
        f"{base}{SERVICE}/ListOrders", envelope(b'{"customerId": ""}'),
        content_type="application/connect+json",
    )  # fmt: skip
    assert reply.status == 200  # streaming: the status travels in the stream
    [(flags, end)] = frames(reply.body)
    assert flags == 0x02
    assert json.loads(end)["error"]["code"] == "invalid_argument"


async def test_grpc_web_serves_unary_and_streams_with_the_status_in_a_trailers_frame(shop):
    base, _ = shop
    order_id = await place_json(base, "erin")
    get = orders_pb2.GetOrderRequest(order_id=order_id).SerializeToString()
    reply = await request(
        f"{base}{SERVICE}/GetOrder", envelope(get), content_type="application/grpc-web+proto"
    )
    (_, message), (flags, trailer) = frames(reply.body)
    assert orders_pb2.Order.FromString(message).customer_id == "erin"
    assert flags == 0x80
    assert trailers(trailer)["grpc-status"] == "0"
    listing = orders_pb2.ListOrdersRequest(customer_id="erin").SerializeToString()
    reply = await request(
        f"{base}{SERVICE}/ListOrders", envelope(listing), content_type="application/grpc-web"
    )
    *items, (_, trailer) = frames(reply.body)
    assert [orders_pb2.Order.FromString(d).order_id for _, d in items] == [order_id]
    assert trailers(trailer)["grpc-status"] == "0"


async def test_a_grpc_web_error_carries_the_grpc_ports_status_details(shop):
    base, stub = shop
    get = orders_pb2.GetOrderRequest(order_id="missing 100%").SerializeToString()
    reply = await request(
        f"{base}{SERVICE}/GetOrder", envelope(get), content_type="application/grpc-web+proto"
    )
    [(flags, trailer)] = frames(reply.body)
    assert flags == 0x80
    fields = trailers(trailer)
    assert fields["grpc-status"] == str(grpc.StatusCode.NOT_FOUND.value[0])
    assert "%25" in fields["grpc-message"]  # percent-encoded, as gRPC-Web clients decode it
    details_b64 = fields["grpc-status-details-bin"]
    details = status_pb2.Status.FromString(base64.b64decode(details_b64 + "=" * 3))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="missing 100%"))
    assert details == status_details(caught.value)


async def test_a_server_streaming_method_called_with_a_unary_content_type_is_unimplemented(shop):
    base, _ = shop
    reply = await request(f"{base}{SERVICE}/ListOrders", b'{"customerId": "x"}')
    assert reply.status == 501
    assert reply.json()["code"] == "unimplemented"
    assert "application/connect+json" in reply.json()["message"]


async def test_an_unknown_method_is_unimplemented_and_an_unknown_content_type_is_415(shop):
    base, _ = shop
    reply = await request(f"{base}{SERVICE}/Nope", b"{}")
    assert (reply.status, reply.json()["code"]) == (501, "unimplemented")
    reply = await request(f"{base}{SERVICE}/GetOrder", b"x", content_type="text/plain")
    assert reply.status == 415
    assert "application/proto" in reply.headers["accept-post"]


async def test_health_answers_get_healthz_and_the_grpc_health_check_over_connect(shop):
    base, _ = shop
    reply = await request(f"{base}/healthz", method="GET", content_type=None)
    assert (reply.status, reply.json()) == (200, {"status": "SERVING"})
    reply = await request(f"{base}/grpc.health.v1.Health/Check", b'{"service": ""}')
    assert reply.json() == {"status": "SERVING"}
    reply = await request(
        f"{base}/grpc.health.v1.Health/Check", b'{"service": "shop.orders.v1.OrderService"}'
    )
    assert reply.json() == {"status": "SERVING"}
    reply = await request(f"{base}/grpc.health.v1.Health/Check", b'{"service": "nope.Svc"}')
    assert reply.json()["code"] == "not_found"
