"""A value the database refuses is the caller's error: INVALID_ARGUMENT, and one log line.

The shop decides its own limits before its handler writes (a customer_id of
at most 255 characters and no NUL, a total that fits in int64). Any other
data error the database raises for a value the request carried (SQLite's
``OverflowError`` for an integer over int64 here; PostgreSQL's class 22 in
``tests/integration/test_data_errors_postgres.py``) becomes
:class:`~wirebus.errors.DataRejected`: INVALID_ARGUMENT with ErrorInfo
``DATA_REJECTED``, no SQL in the message, and one warning line, no traceback.
"""

from __future__ import annotations

import logging

import grpc
import grpc.aio
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, insert

from examples.shop.app import app as shop_app
from tests.conftest import bad_request, error_info
from wirebus import App, Command, Message, Router
from wirebus.outbox.uow import UnitOfWork
from wirebus.testing import AppHarness

INT64_MAX = 2**63 - 1

ledger_state = MetaData()
ledger = Table(
    "test_ledger",
    ledger_state,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", String(255), nullable=False),
    Column("total", BigInteger, nullable=False),
)


class Item(Message, proto=orders_pb2.LineItem):
    sku: str
    quantity: int
    price_cents: int


class Ref(Message, proto=orders_pb2.PlaceOrderResponse):
    order_id: str


class Book(Command[Ref], proto=orders_pb2.PlaceOrderRequest):
    """Writes what the caller sent without checking it; ``sku="session"`` writes via the session."""

    customer_id: str
    items: tuple[Item, ...]


def ledger_app() -> App:
    """An app whose handler writes the caller's values unchecked, as a careless one would."""
    router = Router("ledger")

    @router.handler
    async def book(cmd: Book, uow: UnitOfWork) -> Ref:
        row = {"customer_id": cmd.customer_id, "total": sum(i.price_cents for i in cmd.items)}
        if any(i.sku == "session" for i in cmd.items):
            await uow.session.execute(insert(ledger), row)  # the handler's own statement
        else:
            await uow.insert(ledger, row)  # PostgreSQL: one statement, at commit
        return Ref(order_id="booked")

    return App(
        name="ledger",
        services=[orders_pb2],
        routers=[router],
        metadata=ledger_state,
        allow_unbound=True,
    )


def book(customer_id: str, *prices: int, via: str = "insert") -> orders_pb2.PlaceOrderRequest:
    items = [orders_pb2.LineItem(sku=via, quantity=1, price_cents=p) for p in prices]
    return orders_pb2.PlaceOrderRequest(customer_id=customer_id, items=items)


def warnings_and_worse(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def assert_rejected_with_one_line(
    err: grpc.aio.AioRpcError, caplog: pytest.LogCaptureFixture
) -> None:
    """INVALID_ARGUMENT + DATA_REJECTED, no SQL to the client, one log line without traceback."""
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(err).reason == "DATA_REJECTED"
    assert "INSERT INTO" not in err.details()
    assert "[SQL" not in err.details()
    [record] = warnings_and_worse(caplog)
    assert record.exc_info is None
    assert "\n" not in record.getMessage()
    assert "INSERT INTO" not in record.getMessage()


@pytest.fixture
async def ledger_stub():
    async with AppHarness(ledger_app()) as harness:
        yield orders_pb2_grpc.OrderServiceStub(await harness.channel())


@pytest.fixture
async def shop_stub():
    async with AppHarness(shop_app) as harness:
        yield orders_pb2_grpc.OrderServiceStub(await harness.channel())


@pytest.mark.parametrize("via", ["insert", "session"])
async def test_an_integer_over_int64_is_invalid_argument_with_one_log_line(
    ledger_stub, caplog, via: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await ledger_stub.PlaceOrder(book("alice", INT64_MAX, 1, via=via))
    assert_rejected_with_one_line(caught.value, caplog)


async def test_values_the_database_takes_are_still_written(ledger_stub) -> None:
    assert (await ledger_stub.PlaceOrder(book("alice", INT64_MAX))).order_id == "booked"


async def test_the_shop_refuses_a_total_over_int64_before_writing(shop_stub, caplog) -> None:
    request = orders_pb2.PlaceOrderRequest(
        customer_id="alice",
        items=[orders_pb2.LineItem(sku="gold", quantity=2, price_cents=INT64_MAX)],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop_stub.PlaceOrder(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in bad_request(caught.value).field_violations] == ["items"]
    assert warnings_and_worse(caplog) == []


@pytest.mark.parametrize(
    "customer_id", ["c" * 256, "al\x00ice"], ids=["256 characters", "a NUL byte"]
)
async def test_the_shop_refuses_a_customer_id_the_database_cannot_keep(
    shop_stub, customer_id: str
) -> None:
    request = orders_pb2.PlaceOrderRequest(
        customer_id=customer_id,
        items=[orders_pb2.LineItem(sku="book", quantity=1, price_cents=100)],
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await shop_stub.PlaceOrder(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in bad_request(caught.value).field_violations] == ["customer_id"]


async def test_a_customer_id_of_255_characters_is_placed(shop_stub) -> None:
    request = orders_pb2.PlaceOrderRequest(
        customer_id="c" * 255,
        items=[orders_pb2.LineItem(sku="book", quantity=1, price_cents=100)],
    )
    reply = await shop_stub.PlaceOrder(request)
    order = await shop_stub.GetOrder(orders_pb2.GetOrderRequest(order_id=reply.order_id))
    assert order.customer_id == "c" * 255
