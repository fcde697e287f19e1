"""Client-streaming and bidirectional calls through a real gateway on 127.0.0.1 (SQLite).

``ImportOrders`` (client streaming) and ``WatchOrders`` (bidi) of the shop's
protos are bound here to test handlers that write a row and emit an event
per message, so what committed can be counted: a client-streaming call is
one transaction, committed when the handler returns; a bidi call commits
what led to each item before the item leaves. A customer id or order id
``fail`` raises a domain error, ``crash`` an unexpected exception, ``wait``
parks the handler (for cancellation and deadlines).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from sqlalchemy import Column, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import bad_request, error_info
from tests.unit.test_metrics import free_port, scrape
from wirebus import App, Context, Event, FailedPrecondition, Router, Validation
from wirebus.db import outbox_table
from wirebus.gateway import GatewayConfig
from wirebus.gateway.request_limits import RequestLimits
from wirebus.runtime import Runtime
from wirebus.settings import Settings
from wirebus.testing import wait_until

SERVICE = "shop.orders.v1.OrderService"
ITEM = orders_pb2.LineItem(sku="sku-1", quantity=1, price_cents=100)

metadata = MetaData()
notes = Table("stream_notes", metadata, Column("note", String, primary_key=True))


class Noted(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic="stream-test"):
    order_id: str
    customer_id: str
    total_cents: int
    placed_at: dt.datetime


@dataclasses.dataclass
class Observed:
    read: list[str] = dataclasses.field(default_factory=list)
    entered: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    closed: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


async def _note(session: AsyncSession, ctx: Context, note: str) -> None:
    await session.execute(insert(notes).values(note=note))
    ctx.emit(
        Noted(order_id=note, customer_id=note, total_cents=1, placed_at=dt.datetime.now(dt.UTC))
    )


async def _act(observed: Observed, name: str) -> None:
    if name == "fail":
        raise FailedPrecondition("cannot take fail", reason="NO_FAIL", metadata={"name": name})
    if name == "crash":
        raise RuntimeError("secret internals")
    if name == "wait":
        observed.entered.set()
        await asyncio.sleep(30)


def streams_app(observed: Observed) -> App:
    router = Router()

    @router.handler
    async def import_notes(
        cmds: AsyncIterator[orders_pb2.PlaceOrderRequest], session: AsyncSession, ctx: Context
    ) -> orders_pb2.ImportOrdersResponse:
        try:
            names = []
            async for cmd in cmds:
                observed.read.append(cmd.customer_id)
                await _note(session, ctx, cmd.customer_id)
                await _act(observed, cmd.customer_id)
                names.append(cmd.customer_id)
            return orders_pb2.ImportOrdersResponse(imported=len(names), order_ids=names)
        finally:
            observed.closed.set()

    @router.handler
    async def echo(
        requests: AsyncIterator[orders_pb2.WatchOrdersRequest], session: AsyncSession, ctx: Context
    ) -> AsyncIterator[orders_pb2.OrderStatusUpdate]:
        try:
            async for request in requests:
                observed.read.append(request.order_id)
                await _note(session, ctx, request.order_id)
                await _act(observed, request.order_id)
                yield orders_pb2.OrderStatusUpdate(
                    order_id=request.order_id, status=orders_pb2.ORDER_STATUS_PENDING
                )
                if request.order_id == "last":  # the server ends the call first
                    return
        finally:
            observed.closed.set()

    return App(
        name="streams",
        services=[orders_pb2],
        routers=[router],
        metadata=metadata,
        events=[Noted],
        validation=Validation(),
        allow_unbound=True,
    )


@pytest.fixture
def observed() -> Observed:
    return Observed()


@pytest.fixture
async def runtime(tmp_path: Path, observed: Observed) -> AsyncIterator[Runtime]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/streams.db")
    config = GatewayConfig(port=0)
    async with Runtime(
        streams_app(observed), settings, gateway=config, relay=False, metrics_port=free_port()
    ) as runtime:
        yield runtime


@pytest.fixture
async def stub(runtime: Runtime) -> AsyncIterator[orders_pb2_grpc.OrderServiceStub]:
    assert runtime.gateway is not None
    async with grpc.aio.insecure_channel(runtime.gateway.address) as channel:
        yield orders_pb2_grpc.OrderServiceStub(channel)


async def committed(runtime: Runtime) -> tuple[set[str], int]:
    """(notes committed, outbox rows committed)."""
    assert runtime.database is not None
    async with runtime.database.engine.connect() as conn:
        written = {row[0] for row in await conn.execute(select(notes.c.note))}
        outbox = await conn.scalar(select(func.count()).select_from(outbox_table))
    return written, int(outbox or 0)


def order(name: str) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(customer_id=name, items=[ITEM])


def watch(name: str) -> orders_pb2.WatchOrdersRequest:
    return orders_pb2.WatchOrdersRequest(order_id=name)


async def drain(call: AsyncIterator[orders_pb2.OrderStatusUpdate], answered: list[str]) -> None:
    """Read a bidi call to its end, noting each answer's id (the call's error is raised)."""
    async for update in call:
        answered.append(update.order_id)


async def idle(runtime: Runtime) -> None:
    await wait_until(lambda: runtime.gateway is not None and not runtime.gateway.calls_in_flight)


# ---------------------------------------------------------------- client streaming


async def test_a_client_stream_is_answered_once_and_commits_all_its_messages_together(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub
) -> None:
    reply = await stub.ImportOrders(iter([order("a"), order("b"), order("c")]))
    assert reply.imported == 3
    assert list(reply.order_ids) == ["a", "b", "c"]
    assert await committed(runtime) == ({"a", "b", "c"}, 3)


async def test_a_client_stream_failing_midway_commits_nothing_and_carries_the_error_details(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub, observed: Observed
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ImportOrders(iter([order("a"), order("fail"), order("c")]))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "NO_FAIL",
        "streams",
        {"name": "fail"},
    )
    assert observed.read == ["a", "fail"]
    assert await committed(runtime) == (set(), 0)


async def test_an_invalid_message_in_the_middle_fails_the_call_and_nothing_commits(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub, observed: Observed
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ImportOrders(iter([order("a"), orders_pb2.PlaceOrderRequest(customer_id="b")]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = bad_request(caught.value)
    assert violations is not None
    assert [v.field for v in violations.field_violations] == ["items"]
    assert observed.read == ["a"]  # the invalid one never reached the handler
    assert await committed(runtime) == (set(), 0)


async def test_bytes_that_do_not_parse_midway_are_invalid_argument(
    runtime: Runtime, observed: Observed
) -> None:
    assert runtime.gateway is not None
    async with grpc.aio.insecure_channel(runtime.gateway.address) as channel:
        call = channel.stream_unary(f"/{SERVICE}/ImportOrders")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(iter([order("a").SerializeToString(), b"\xff\xff\xff"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == "MALFORMED_REQUEST"
    assert observed.read == ["a"]
    assert await committed(runtime) == (set(), 0)


async def test_an_unexpected_error_is_internal_without_internals(
    stub: orders_pb2_grpc.OrderServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ImportOrders(iter([order("crash")]))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (caught.value.details() or "")


async def test_a_client_cancelling_a_client_stream_closes_the_handler_and_commits_nothing(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub, observed: Observed
) -> None:
    call = stub.ImportOrders()
    await call.write(order("a"))
    await call.write(order("wait"))
    await asyncio.wait_for(observed.entered.wait(), 10)  # two rows written, not committed
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(observed.closed.wait(), 5)  # the handler's finally ran
    await idle(runtime)
    assert await committed(runtime) == (set(), 0)


async def test_a_passed_deadline_ends_a_client_stream_with_deadline_exceeded_and_rolls_back(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub, observed: Observed
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ImportOrders(iter([order("a"), order("wait")]), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(observed.closed.wait(), 5)
    await idle(runtime)
    assert await committed(runtime) == (set(), 0)


async def test_each_message_is_held_to_the_gateways_limits_as_it_is_read(
    tmp_path: Path, observed: Observed
) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/limits.db")
    config = GatewayConfig(
        port=0, limits=RequestLimits(max_repeated=2), max_message_bytes=64 * 1024
    )
    many_items = orders_pb2.PlaceOrderRequest(customer_id="many", items=[ITEM] * 3)
    huge = orders_pb2.PlaceOrderRequest(customer_id="x" * 100_000, items=[ITEM])
    async with Runtime(streams_app(observed), settings, gateway=config, relay=False) as runtime:
        assert runtime.gateway is not None
        async with grpc.aio.insecure_channel(runtime.gateway.address) as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as over_limit:
                await stub.ImportOrders(iter([order("a"), many_items]))
            with pytest.raises(grpc.aio.AioRpcError) as too_big:
                await stub.ImportOrders(iter([order("b"), huge]))
        await idle(runtime)
        assert await committed(runtime) == (set(), 0)
    assert over_limit.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(over_limit.value)
    assert info is not None
    assert info.reason == "REQUEST_LIMIT_EXCEEDED"
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert observed.read == ["a", "b"]


async def test_a_slow_handler_holds_the_clients_writes_back_instead_of_buffering_them(
    tmp_path: Path,
) -> None:
    """Flow control, not a queue: unread messages stay with the client (bounded by its window)."""
    release, read = asyncio.Event(), [0]
    router = Router()

    @router.handler
    async def slow_import(
        cmds: AsyncIterator[orders_pb2.PlaceOrderRequest],
    ) -> orders_pb2.ImportOrdersResponse:
        async for _ in cmds:
            read[0] += 1
            await release.wait()  # reads one message, then nothing until released
        return orders_pb2.ImportOrdersResponse(imported=read[0])

    app = App(name="slow", services=[orders_pb2], routers=[router], allow_unbound=True)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/slow.db")
    total, big = 200, orders_pb2.PlaceOrderRequest(customer_id="x" * 256 * 1024)  # 50 MB in all
    async with Runtime(app, settings, gateway=GatewayConfig(port=0), relay=False) as runtime:
        assert runtime.gateway is not None
        async with grpc.aio.insecure_channel(runtime.gateway.address) as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            call, written = stub.ImportOrders(), [0]

            async def write_all() -> None:
                for _ in range(total):
                    await call.write(big)
                    written[0] += 1
                await call.done_writing()

            writer = asyncio.ensure_future(write_all())
            await wait_until(lambda: read[0] == 1)
            for _ in range(20):  # the connection goes on serving other calls meanwhile
                with pytest.raises(grpc.aio.AioRpcError):
                    await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="o"))
            assert not writer.done()
            assert written[0] < total // 4  # at most a flow-control window's worth in flight
            release.set()
            reply = await call
            await writer
    assert reply.imported == total


# ---------------------------------------------------------------- bidirectional


async def test_a_bidi_call_answers_each_message_as_it_arrives(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub
) -> None:
    call = stub.WatchOrders()
    for name in ("a", "b"):
        await call.write(watch(name))
        update = await call.read()
        assert update.order_id == name
        assert name in (await committed(runtime))[0]  # committed before its answer left
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    assert await committed(runtime) == ({"a", "b"}, 2)


async def test_a_bidi_handler_that_returns_ends_the_call_while_the_client_still_sends(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub
) -> None:
    call = stub.WatchOrders()
    await call.write(watch("last"))
    assert (await call.read()).order_id == "last"
    assert await call.read() == grpc.aio.EOF  # the client never closed its side
    assert await call.code() == grpc.StatusCode.OK
    assert await committed(runtime) == ({"last"}, 1)


async def test_a_bidi_call_failing_midway_keeps_what_it_answered_and_carries_the_status(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub
) -> None:
    answered: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain(stub.WatchOrders(iter([watch("a"), watch("fail"), watch("c")])), answered)
    assert answered == ["a"]
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == "NO_FAIL"
    assert await committed(runtime) == ({"a"}, 1)  # "fail"'s row rolled back


async def test_an_invalid_message_in_a_bidi_call_is_invalid_argument_after_earlier_answers(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub, observed: Observed
) -> None:
    answered: list[str] = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await drain(stub.WatchOrders(iter([watch("a"), watch(""), watch("c")])), answered)
    assert answered == ["a"]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    violations = bad_request(caught.value)
    assert violations is not None
    assert [v.field for v in violations.field_violations] == ["order_id"]
    assert observed.read == ["a"]


async def test_a_client_cancelling_a_bidi_call_closes_the_handler_and_rolls_back_the_rest(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub, observed: Observed
) -> None:
    call = stub.WatchOrders()
    await call.write(watch("a"))
    assert (await call.read()).order_id == "a"
    await call.write(watch("wait"))
    await asyncio.wait_for(observed.entered.wait(), 10)
    call.cancel()
    await asyncio.wait_for(observed.closed.wait(), 5)  # the handler's finally ran
    await idle(runtime)
    assert await committed(runtime) == ({"a"}, 1)  # "wait"'s row never committed


async def test_a_passed_deadline_ends_a_bidi_call_with_deadline_exceeded(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub, observed: Observed
) -> None:
    call = stub.WatchOrders(timeout=1.0)
    await call.write(watch("a"))
    assert (await call.read()).order_id == "a"
    await call.write(watch("wait"))
    assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(observed.closed.wait(), 5)
    await idle(runtime)
    assert await committed(runtime) == ({"a"}, 1)


async def test_each_message_of_a_stream_is_counted_as_received(
    runtime: Runtime, stub: orders_pb2_grpc.OrderServiceStub
) -> None:
    await stub.ImportOrders(iter([order("a"), order("b"), order("c")]))
    [update async for update in stub.WatchOrders(iter([watch("d"), watch("e")]))]
    values = await asyncio.to_thread(scrape, runtime.metrics_port)  # type: ignore[arg-type]

    def count(name: str, method: str, grpc_type: str) -> float:
        labels = f'grpc_method="{method}",grpc_service="{SERVICE}",grpc_type="{grpc_type}"'
        return values[f"{name}{{{labels}}}"]

    assert count("grpc_server_msg_received_total", "ImportOrders", "client_stream") == 3
    assert count("grpc_server_msg_sent_total", "ImportOrders", "client_stream") == 1
    assert count("grpc_server_msg_received_total", "WatchOrders", "bidi_stream") == 2
    assert count("grpc_server_msg_sent_total", "WatchOrders", "bidi_stream") == 2
    assert count("grpc_server_started_total", "WatchOrders", "bidi_stream") == 1
