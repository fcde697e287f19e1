"""Client streaming over the Connect port (HTTP/1.1): the shop's ImportOrders, and bidi refused.

The request body of a client-streaming call is enveloped messages ended by
the body's end; the answer is one enveloped message and the end of the
stream (Connect) or the trailers (gRPC-Web). A real ``ConnectServer``
(uvicorn) on 127.0.0.1 shares the mediator of the shop's ``AppHarness``, and
what was committed is read back over the gRPC port.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from google.rpc import error_details_pb2
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.app import app
from tests.unit._connect import envelope, frames, request, trailers
from tests.unit.test_gateway_observability import labels
from tests.unit.test_metrics import free_port, scrape
from wirebus.connect import ConnectConfig, ConnectServer
from wirebus.gateway import GatewayConfig
from wirebus.runtime import Runtime
from wirebus.settings import Settings
from wirebus.testing import AppHarness, wait_until

SERVICE = "/shop.orders.v1.OrderService"
IMPORT = f"{SERVICE}/ImportOrders"
CONNECT_PROTO = "application/connect+proto"
MAX_MESSAGE_BYTES = 64 * 1024

Shop = tuple[ConnectServer, orders_pb2_grpc.OrderServiceStub]


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    """``(the Connect server, a gRPC stub of the same shop)``."""
    config = ConnectConfig(port=0, grace_seconds=1.0, max_message_bytes=MAX_MESSAGE_BYTES)
    async with serving(config) as served:
        yield served


@contextlib.asynccontextmanager
async def serving(config: ConnectConfig) -> AsyncIterator[Shop]:
    async with (
        AppHarness(app) as harness,
        ConnectServer(app, config, mediator=harness.mediator) as server,
    ):
        yield server, orders_pb2_grpc.OrderServiceStub(await harness.channel())


async def send_part_of_a_body(
    server: ConnectServer, sent: bytes, headers: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An ImportOrders request whose Content-Length promises ten times what is ``sent``."""
    port = int(server.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {IMPORT} HTTP/1.1\r\nHost: x\r\nContent-Type: {CONNECT_PROTO}\r\n"
        f"Content-Length: {len(sent) * 10}\r\n{headers}\r\n"
    )
    writer.write(head.encode() + sent)
    await writer.drain()
    return reader, writer


def order(customer: str, quantity: int = 1) -> bytes:
    item = orders_pb2.LineItem(sku="book", quantity=quantity, price_cents=1250)
    message = orders_pb2.PlaceOrderRequest(customer_id=customer, items=[item])
    return envelope(message.SerializeToString())


async def orders_of(stub: orders_pb2_grpc.OrderServiceStub, customer: str) -> list[str]:
    listed = stub.ListOrders(orders_pb2.ListOrdersRequest(customer_id=customer))
    return [o.order_id async for o in listed]


def end_error(body: bytes) -> dict[str, Any]:
    *_, (flags, end) = frames(body)
    assert flags == 0x02
    error: dict[str, Any] = json.loads(end)["error"]
    return error


async def test_three_orders_in_one_call_are_all_placed_and_answered_with_their_ids(shop):
    server, stub = shop
    body = order("ivy") + order("ivy", 2) + order("ivy", 3)
    reply = await request(server.url + IMPORT, body, content_type=CONNECT_PROTO)
    assert reply.status == 200
    assert reply.headers["content-type"] == CONNECT_PROTO
    (flags, data), (end_flags, end) = frames(reply.body)
    imported = orders_pb2.ImportOrdersResponse.FromString(data)
    assert (flags, imported.imported, len(imported.order_ids)) == (0, 3, 3)
    assert (end_flags, json.loads(end)) == (0x02, {})
    assert sorted(await orders_of(stub, "ivy")) == sorted(imported.order_ids)


async def test_json_messages_are_imported_and_answered_as_json(shop):
    server, stub = shop
    line = b'{"customerId": "jo", "items": [{"sku": "pen", "quantity": 1, "priceCents": "99"}]}'
    reply = await request(
        server.url + IMPORT, envelope(line) * 2, content_type="application/connect+json"
    )
    (_, data), _ = frames(reply.body)
    assert json.loads(data)["imported"] == 2
    assert len(await orders_of(stub, "jo")) == 2


async def test_grpc_web_client_streaming_answers_the_reply_then_ok_trailers(shop):
    server, stub = shop
    body = order("kim") + order("kim")
    reply = await request(server.url + IMPORT, body, content_type="application/grpc-web+proto")
    (_, data), (flags, trailer) = frames(reply.body)
    assert orders_pb2.ImportOrdersResponse.FromString(data).imported == 2
    assert (flags, trailers(trailer)["grpc-status"]) == (0x80, "0")
    assert len(await orders_of(stub, "kim")) == 2


async def test_gzip_compressed_messages_are_inflated(shop):
    server, stub = shop
    message = orders_pb2.PlaceOrderRequest(
        customer_id="gus", items=[orders_pb2.LineItem(sku="book", quantity=1, price_cents=1)]
    )
    body = envelope(gzip.compress(message.SerializeToString()), 0x01) + order("gus")
    reply = await request(
        server.url + IMPORT, body, content_type=CONNECT_PROTO,
        headers={"Connect-Content-Encoding": "gzip"},
    )  # fmt: skip
    (_, data), _ = frames(reply.body)
    assert orders_pb2.ImportOrdersResponse.FromString(data).imported == 2
    assert len(await orders_of(stub, "gus")) == 2


async def test_a_deadline_that_passes_while_the_body_is_read_is_deadline_exceeded(shop):
    server, stub = shop
    reader, writer = await send_part_of_a_body(
        server, order("dee"), headers="Connect-Timeout-Ms: 300\r\n"
    )
    try:  # the answer comes while the body is still unfinished
        answer = await asyncio.wait_for(reader.readuntil(b'"deadline_exceeded"'), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200")  # streaming: the code is in the end of the stream
    assert await orders_of(stub, "dee") == []


async def test_an_invalid_order_in_the_middle_is_bad_request_and_places_no_order(shop):
    server, stub = shop
    body = order("lee") + order("", 1) + order("lee")
    reply = await request(server.url + IMPORT, body, content_type=CONNECT_PROTO)
    assert reply.status == 200  # streaming: the status travels in the end-of-stream message
    error = end_error(reply.body)
    assert error["code"] == "invalid_argument"
    [bad] = [d for d in error["details"] if d["type"] == "google.rpc.BadRequest"]
    value = base64.b64decode(bad["value"] + "=" * (-len(bad["value"]) % 4))
    violations = error_details_pb2.BadRequest.FromString(value).field_violations
    assert [v.field for v in violations] == ["customer_id"]
    assert await orders_of(stub, "lee") == []  # one transaction: none of the three


async def test_a_message_over_max_message_bytes_is_resource_exhausted_before_it_is_read(shop):
    server, stub = shop
    prefix_only = b"\x00" + (MAX_MESSAGE_BYTES + 1).to_bytes(4, "big")
    body = order("max") + prefix_only
    reply = await request(server.url + IMPORT, body, content_type=CONNECT_PROTO)
    assert end_error(reply.body)["code"] == "resource_exhausted"
    assert await orders_of(stub, "max") == []


@pytest.mark.parametrize(
    ("tail", "said"),
    [
        pytest.param(b"\x00\x00\x00\x00\x09abc", "ends inside", id="truncated frame"),
        pytest.param(envelope(b"{}", 0x02), "flags", id="end-of-stream flag"),
        pytest.param(envelope(b"x", 0x01), "compressed", id="compressed without header"),
        pytest.param(envelope(b"\xff\xff"), "", id="bytes that do not parse"),
    ],
)
async def test_a_malformed_frame_is_invalid_argument_and_places_no_order(shop, tail, said):
    server, stub = shop
    customer = f"bad-{len(tail)}-{tail[0]}"
    reply = await request(server.url + IMPORT, order(customer) + tail, content_type=CONNECT_PROTO)
    error = end_error(reply.body)
    assert error["code"] == "invalid_argument"
    assert said in error["message"]
    assert await orders_of(stub, customer) == []


async def test_a_client_that_leaves_mid_body_commits_nothing(shop):
    server, stub = shop
    _, writer = await send_part_of_a_body(server, order("nia") + order("nia"))
    await wait_until(lambda: server.calls_in_flight == 1, message="the call did not start")
    writer.close()
    await writer.wait_closed()
    await wait_until(lambda: server.calls_in_flight == 0, message="the call did not end")
    assert await orders_of(stub, "nia") == []


async def test_a_body_slower_than_the_body_timeout_is_cut_off_and_commits_nothing():
    config = ConnectConfig(port=0, grace_seconds=1.0, body_timeout_seconds=0.5)
    async with serving(config) as (server, stub):
        reader, writer = await send_part_of_a_body(server, order("oz"))
        try:
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, nothing answered
        finally:
            writer.close()
        await wait_until(lambda: server.calls_in_flight == 0, message="the call did not end")
        assert await orders_of(stub, "oz") == []


async def test_each_message_read_counts_as_received_in_the_grpc_ports_series(tmp_path):
    port = free_port()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/shop.db")
    async with Runtime(
        app, settings, gateway=GatewayConfig(port=0), connect=ConnectConfig(port=0),
        metrics_port=port,
    ) as runtime:  # fmt: skip
        assert runtime.connect is not None
        body = order("pam") * 3
        await request(runtime.connect.url + IMPORT, body, content_type=CONNECT_PROTO)
        values = await asyncio.to_thread(scrape, port)
    series = labels("ImportOrders", grpc_type="client_stream")
    assert values[f"grpc_server_msg_received_total{{{series}}}"] == 3
    assert values[f"grpc_server_msg_sent_total{{{series}}}"] == 1
    handled = labels("ImportOrders", grpc_type="client_stream", grpc_code="OK")
    assert values[f"grpc_server_handled_total{{{handled}}}"] == 1


async def test_watch_orders_is_unimplemented_because_bidi_needs_http2(shop):
    server, _ = shop
    reply = await request(
        f"{server.url}{SERVICE}/WatchOrders", envelope(b"{}"), content_type=CONNECT_PROTO
    )
    error = end_error(reply.body)
    assert error["code"] == "unimplemented"
    assert "bidirectional streaming needs HTTP/2: call the gRPC port" in error["message"]


async def test_a_client_streaming_method_called_with_a_unary_content_type_is_unimplemented(shop):
    server, _ = shop
    reply = await request(server.url + IMPORT, b"{}", content_type="application/json")
    assert (reply.status, reply.json()["code"]) == (501, "unimplemented")
