"""On PostgreSQL, a step whose circuit is open waits in the timeouts table; the poller resumes it.

The charge step's handler writes a row, then fails while the provider is
down: the failed saga's row rolls back with its step, and the circuit opens.
The next saga's step does not run: its transition commits a "circuit open"
history entry and a due row, and the runtime's poller (claiming due rows
with ``FOR UPDATE SKIP LOCKED``) runs the step again once the circuit lets a
probe through.
"""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import Column, MetaData, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from wirebus import App, CircuitBreaker, Command, Event, Mediator, Router
from wirebus.breaker import CircuitState
from wirebus.db import Database
from wirebus.retry import Backoff
from wirebus.saga import Saga, SagaState, SagaStatus, Step
from wirebus.saga.poller import SagaPoller
from wirebus.saga.tables import saga_timeout_table
from wirebus.testing import wait_until

pytestmark = pytest.mark.integration

state = MetaData()
charges = Table("test_saga_charges", state, Column("order_id", String(32), primary_key=True))


class Charge(Command[None]):
    order_id: str


class PayRequested(Event):
    order_id: str


@dataclasses.dataclass
class Payment:
    order_id: str


@dataclasses.dataclass
class Provider:
    down: bool = True


def pay_app(provider: Provider) -> App:
    router = Router("provider")

    @router.handler
    async def charge(cmd: Charge, session: AsyncSession) -> None:
        await session.execute(insert(charges).values(order_id=cmd.order_id))
        if provider.down:
            raise ConnectionError("the payment provider does not answer")

    async def pay(data: Payment, mediator: Mediator) -> None:
        await mediator.send(Charge(order_id=data.order_id))

    saga = Saga(
        "pay",
        data=Payment,
        key="order_id",
        start_on=[PayRequested],
        backoff=Backoff(initial_delay=0.0, max_delay=0.0, jitter="none"),
        steps=[
            Step(
                "charge",
                action=pay,
                breaker=CircuitBreaker(failure_threshold=1, recovery_timeout=0.5),
            )
        ],
    )
    return App(name="shop", routers=[router], sagas=[saga], metadata=state)


async def test_a_step_refused_by_its_open_circuit_is_resumed_by_the_poller(pg_url: str) -> None:
    provider = Provider()
    app = pay_app(provider)
    database = Database(pg_url, schema="migrate", extra_metadata=[state])
    async with app.mediator(database=database) as mediator:
        engine = app.saga_engine(mediator)
        await mediator.publish(PayRequested(order_id="o-1"))  # fails: the circuit opens
        failed = await engine.find("pay", "o-1")
        assert failed is not None
        assert failed.status is SagaStatus.COMPENSATED
        circuit = mediator.circuits.get("saga:pay.charge")
        assert circuit is not None
        assert circuit.state is CircuitState.OPEN

        await mediator.publish(PayRequested(order_id="o-2"))
        waiting = await engine.find("pay", "o-2")
        assert waiting is not None
        assert waiting.status is SagaStatus.PENDING  # its step never ran
        assert [(h.step, h.outcome) for h in waiting.history] == [("charge", "circuit open")]
        async with database.engine.connect() as conn:
            due = await conn.execute(
                select(saga_timeout_table.c.version).where(
                    saga_timeout_table.c.saga_id == waiting.saga_id
                )
            )
            assert due.scalars().all() == [waiting.version]  # a due row of the current version

        provider.down = False
        async with SagaPoller(engine, interval=0.05, recover=False):

            async def completed() -> SagaState | None:
                found = await engine.find("pay", "o-2")
                return found if found is not None and found.status.final else None

            done = await wait_until(completed, within=30)
        assert done.status is SagaStatus.COMPLETED
        assert circuit.state is CircuitState.CLOSED
        async with database.engine.connect() as conn:
            rows = await conn.execute(select(charges.c.order_id, func.count()).group_by("order_id"))
            assert dict(rows.all()) == {"o-2": 1}  # o-1's write rolled back with its failed step
