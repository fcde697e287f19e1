"""A command app for the outbox fault tests: per-aggregate sequences, state rows, events.

``PlaceOrder`` (the shop's proto) is reinterpreted: ``customer_id`` is the
*aggregate* id and ``items[0].quantity`` the aggregate's *sequence* number.
The handler writes one ``sequencer_state`` row through the request's
``AsyncSession`` and emits ``Placed`` (bound to ``shop.orders.v1.OrderPlaced``,
keyed by ``order_id`` = the aggregate id, ``total_cents`` = the sequence), so
state row and outbox row commit in one transaction.

Configured by the environment of the test that starts it (read at import,
fine for a test fixture app):

- ``SEQUENCER_TOPIC``: the topic of the events (fresh per test);
- ``SEQUENCER_FAIL_PREFIX``: test-only fault mode -- for an aggregate whose id
  starts with this prefix the handler writes its state row, emits its event
  and *then* raises, so neither may persist.
"""

from __future__ import annotations

import datetime as dt
import os

from shop.orders.v1 import orders_pb2
from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from wirebus import App, Command, Context, Event, Message, Router

TOPIC = os.environ.get("SEQUENCER_TOPIC", "sequencer")
FAIL_PREFIX = os.environ.get("SEQUENCER_FAIL_PREFIX", "")

metadata = MetaData()

state = Table(
    "sequencer_state",
    metadata,
    Column("aggregate_id", String(255), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("written_at", DateTime(timezone=True), nullable=False),
)


class LineItem(Message, proto=orders_pb2.LineItem):
    sku: str
    quantity: int
    price_cents: int


class Ref(Message, proto=orders_pb2.PlaceOrderResponse):
    order_id: str


class Step(Command[Ref], proto=orders_pb2.PlaceOrderRequest):
    customer_id: str
    items: tuple[LineItem, ...]


def placed_type(topic: str) -> type[Event]:
    """The event on ``topic``: aggregate id in ``order_id`` (its key), sequence in total_cents."""

    class Placed(Event, proto=orders_pb2.OrderPlaced, key="order_id", topic=topic):
        order_id: str
        customer_id: str
        total_cents: int
        placed_at: dt.datetime

    return Placed


Placed = placed_type(TOPIC)


class InjectedFault(RuntimeError):
    """Raised by the handler in fault mode, after it emitted and wrote its state."""


router = Router("sequencer")


@router.handler
async def step(cmd: Step, session: AsyncSession, ctx: Context) -> Ref:
    aggregate, seq = cmd.customer_id, cmd.items[0].quantity
    now = dt.datetime.now(dt.UTC)
    await session.execute(insert(state).values(aggregate_id=aggregate, seq=seq, written_at=now))
    ctx.emit(Placed(order_id=aggregate, customer_id=aggregate, total_cents=seq, placed_at=now))
    if FAIL_PREFIX and aggregate.startswith(FAIL_PREFIX):
        raise InjectedFault(f"injected fault after emitting {aggregate}#{seq}")
    return Ref(order_id=f"{aggregate}:{seq}")


app = App(
    name="sequencer",
    services=[orders_pb2],
    routers=[router],
    events=[Placed],
    metadata=metadata,
    allow_unbound=True,
)
