"""How a call over the Connect port reaches the pipeline: CallInfo, auth, deadlines, limits.

Each test starts a real ``ConnectServer`` (uvicorn) on 127.0.0.1 for a small
app, and calls it as a browser or curl would.
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
from google.protobuf.descriptor import ServiceDescriptor
from shop.orders.v1 import orders_pb2

from tests.unit._connect import envelope, frames, open_request, request
from tests.unit._protos import shop_service
from wirebus import App, Authentication, CallInfo, Router, StaticTokens
from wirebus.connect import ConnectConfig, ConnectServer
from wirebus.errors import LifecycleError
from wirebus.testing import wait_until

GET = "/shop.orders.v1.OrderService/GetOrder"
LIST = "/shop.orders.v1.OrderService/ListOrders"


def app_of(router: Router, **kwargs: Any) -> App:
    return App(name="test", services=[orders_pb2], routers=[router], allow_unbound=True, **kwargs)


@contextlib.asynccontextmanager
async def serving(app: App, **config: Any) -> AsyncIterator[ConnectServer]:
    config.setdefault("grace_seconds", 1.0)
    async with ConnectServer(app, ConnectConfig(port=0, **config)) as server:
        yield server


def echo_router() -> Router:
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest, call: CallInfo) -> orders_pb2.Order:
        blob = call.metadata.get("x-blob-bin", b"")
        assert isinstance(blob, bytes)
        return orders_pb2.Order(
            order_id=call.method,
            customer_id=str(call.metadata.get("x-tenant", "")),
            status=orders_pb2.ORDER_STATUS_PAID if call.peer.startswith("ipv4:127.0.0.1:") else 0,
            items=[orders_pb2.LineItem(sku=blob.decode())],
            total_cents=-1 if call.deadline is None else round(call.time_remaining() or 0),
        )

    return router


async def test_the_handler_sees_headers_as_call_metadata_and_the_peer_as_grpc_writes_it():
    async with serving(app_of(echo_router())) as server:
        blob = base64.b64encode(b"raw bytes").decode().rstrip("=")
        reply = await request(
            server.url + GET, b"{}", headers={"X-Tenant": "acme", "X-Blob-Bin": blob}
        )
    order = reply.json()
    assert order["orderId"] == GET
    assert order["customerId"] == "acme"
    assert order["status"] == "ORDER_STATUS_PAID"
    assert order["items"] == [{"sku": "raw bytes"}]
    assert order["totalCents"] == "-1"  # no deadline given: none


async def test_connect_timeout_ms_and_grpc_timeout_become_the_calls_deadline():
    async with serving(app_of(echo_router())) as server:
        reply = await request(server.url + GET, b"{}", headers={"Connect-Timeout-Ms": "30000"})
        assert 28 <= int(reply.json()["totalCents"]) <= 30
        reply = await request(
            server.url + GET, envelope(b""), content_type="application/grpc-web+json",
            headers={"Grpc-Timeout": "20S"},
        )  # fmt: skip
        (_, message), _ = frames(reply.body)
        assert 18 <= int(json.loads(message)["totalCents"]) <= 20
        reply = await request(server.url + GET, b"{}", headers={"Connect-Timeout-Ms": "soon"})
        assert (reply.status, reply.json()["code"]) == (400, "invalid_argument")


async def test_a_call_past_its_deadline_is_cancelled_and_answers_504_deadline_exceeded():
    router = Router()
    cancelled = asyncio.Event()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return orders_pb2.Order()

    async with serving(app_of(router)) as server:
        reply = await request(server.url + GET, b"{}", headers={"Connect-Timeout-Ms": "100"})
    assert reply.status == 504
    assert reply.json()["code"] == "deadline_exceeded"
    assert cancelled.is_set()


async def test_authentication_reads_the_authorization_header():
    auth = Authentication(StaticTokens({"secret": "someone"}))
    async with serving(app_of(echo_router(), authentication=auth)) as server:
        refused = await request(server.url + GET, b"{}")
        allowed = await request(server.url + GET, b"{}", headers={"Authorization": "Bearer secret"})
    assert (refused.status, refused.json()["code"]) == (401, "unauthenticated")
    assert allowed.status == 200


async def test_a_client_that_goes_away_cancels_its_stream():
    router = Router()
    ended = asyncio.Event()

    @router.handler
    async def list_orders(query: orders_pb2.ListOrdersRequest) -> AsyncIterator[orders_pb2.Order]:
        try:
            while True:
                yield orders_pb2.Order(order_id="o")
                await asyncio.sleep(0.01)
        finally:
            ended.set()

    async with serving(app_of(router)) as server:
        reader, writer = await open_request(
            server.url + LIST, envelope(b"{}"), "application/connect+json", None
        )
        assert b"200" in await reader.readline()
        await reader.readuntil(b'"o"')  # items arrive
        writer.close()
        await wait_until(ended.is_set, message="the handler's stream was not closed")
        await wait_until(lambda: server.calls_in_flight == 0)


def upload_service() -> ServiceDescriptor:
    """``wirebus.testing.connect_uploads.Uploads``: one client-streaming and one bidi method."""
    return shop_service(
        "wirebus/testing/connect_uploads.proto",
        "Uploads",
        [("Upload", "LineItem", "Order", True, False), ("Chat", "LineItem", "Order", True, True)],
    )


async def test_bidi_is_unimplemented_naming_the_grpc_port_and_an_unbound_method_unimplemented():
    app = App(name="test", services=[upload_service()], routers=[Router()], allow_unbound=True)
    async with serving(app) as server:
        said = {}
        for method in ("Upload", "Chat"):
            path = f"/wirebus.testing.connect_uploads.Uploads/{method}"
            reply = await request(
                server.url + path, envelope(b"{}"), content_type="application/connect+json"
            )
            [(_, end)] = frames(reply.body)
            error = json.loads(end)["error"]
            assert error["code"] == "unimplemented"
            said[method] = error["message"]
    assert "needs HTTP/2: call the gRPC port" in said["Chat"]
    assert said["Upload"].endswith("Upload is not implemented")  # client streaming: no handler


async def test_a_body_over_max_message_bytes_is_resource_exhausted():
    async with serving(app_of(echo_router()), max_message_bytes=1024) as server:
        body = json.dumps({"orderId": "x" * 4096}).encode()
        reply = await request(server.url + GET, body)
    assert (reply.status, reply.json()["code"]) == (429, "resource_exhausted")


async def test_calls_over_max_concurrent_calls_are_refused_at_once():
    router = Router()
    release = asyncio.Event()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        await release.wait()
        return orders_pb2.Order()

    async with serving(app_of(router), max_concurrent_calls=1) as server:
        first = asyncio.create_task(request(server.url + GET, b"{}"))
        await wait_until(lambda: server.calls_in_flight == 1)
        refused = await request(server.url + GET, b"{}")
        release.set()
        assert (await first).status == 200
    assert (refused.status, refused.json()["code"]) == (429, "resource_exhausted")


async def test_stop_turns_health_not_serving_and_refuses_new_calls_while_one_finishes():
    router = Router()
    release = asyncio.Event()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        await release.wait()
        return orders_pb2.Order(order_id="finished")

    server = ConnectServer(app_of(router), ConnectConfig(port=0, grace_seconds=5.0))
    await server.start()
    running = asyncio.create_task(request(server.url + GET, b"{}"))
    await wait_until(lambda: server.calls_in_flight == 1)
    stopping = asyncio.create_task(server.stop())
    health = await wait_until(
        lambda: _status_of(request(server.url + "/healthz", method="GET", content_type=None))
    )
    refused = await request(server.url + GET, b"{}")
    release.set()
    assert (await running).json() == {"orderId": "finished"}
    await stopping
    await server.stop()  # idempotent
    assert health == 503
    assert (refused.status, refused.json()["code"]) == (503, "unavailable")
    with pytest.raises(LifecycleError, match="cannot be started again"):
        await server.start()


async def _status_of(reply: Any) -> int | None:
    status = (await reply).status
    return status if status == 503 else None


async def test_a_port_in_use_is_one_line_naming_the_flag():
    async with serving(app_of(echo_router())) as server:
        second = ConnectServer(app_of(echo_router()), ConnectConfig(port=server.port))
        with pytest.raises(LifecycleError, match=r"cannot listen on .*--connect-port"):
            await second.start()
        await second.stop()


async def test_an_unexpected_exception_is_500_internal_with_no_internals_in_the_message():
    router = Router()

    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        raise KeyError("secret-internal-detail")

    async with serving(app_of(router)) as server:
        reply = await request(server.url + GET, b"{}")
    assert reply.status == 500
    assert reply.json() == {"code": "internal", "message": "internal error"}


async def test_a_gzip_enveloped_message_is_inflated_and_an_unknown_compression_refused():
    async with serving(app_of(echo_router())) as server:
        packed = envelope(gzip.compress(b'{"orderId": "x"}'), flags=0x01)
        ctype = "application/grpc-web+json"
        reply = await request(
            server.url + GET, packed, content_type=ctype, headers={"Grpc-Encoding": "gzip"}
        )
        (_, message), (_, trailer) = frames(reply.body)
        assert json.loads(message)["orderId"] == GET
        assert b"grpc-status: 0" in trailer
        refused = await request(
            server.url + GET, b'{"orderId": "x"}', headers={"Content-Encoding": "br"}
        )
    assert (refused.status, refused.json()["code"]) == (501, "unimplemented")
    assert "gzip" in refused.json()["message"]
