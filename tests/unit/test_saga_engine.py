"""A saga runs its steps in order, compensates completed ones in reverse, and can be retried.

The trip saga books a hotel (in-process, through the mediator), charges a
card (a message to a "bank" that replies CardCharged or CardDeclined) and
sends a confirmation (in-process). Everything runs in one mediator with the
in-memory saga store.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from wirebus import App, Command, Context, Event, Mediator, Router
from wirebus.retry import Backoff
from wirebus.saga import Saga, SagaEngine, SagaStatus, Step
from wirebus.testing import wait_until


class BookHotel(Command[None]):
    trip_id: str


class CancelHotel(Command[None]):
    trip_id: str


class Confirm(Command[None]):
    trip_id: str


class TripRequested(Event):
    trip_id: str
    amount: int


class ChargeCard(Event):
    trip_id: str
    amount: int


class CardCharged(Event):
    trip_id: str
    charge_id: str


class CardDeclined(Event):
    trip_id: str


@dataclasses.dataclass
class Trip:
    trip_id: str
    amount: int
    charge_id: str = ""


@dataclasses.dataclass
class World:
    """What the handlers did, in order."""

    calls: list[str] = dataclasses.field(default_factory=list)
    cancel_failures: int = 0
    confirm_fails: bool = False


def trip_app(world: World, *, bank: bool = True, timeout: float | None = None) -> App:
    hotel = Router("hotel")

    @hotel.handler
    async def book(cmd: BookHotel) -> None:
        world.calls.append(f"book {cmd.trip_id}")

    @hotel.handler
    async def cancel(cmd: CancelHotel) -> None:
        if world.cancel_failures > 0:
            world.cancel_failures -= 1
            raise RuntimeError("the hotel is unreachable")
        world.calls.append(f"cancel {cmd.trip_id}")

    @hotel.handler
    async def confirm(cmd: Confirm) -> None:
        if world.confirm_fails:
            raise RuntimeError("no mail server")
        world.calls.append(f"confirm {cmd.trip_id}")

    payments = Router("bank")

    @payments.handler
    async def charge(event: ChargeCard, ctx: Context) -> None:
        world.calls.append(f"charge {event.trip_id}")
        if event.amount > 100:
            ctx.emit(CardDeclined(trip_id=event.trip_id))
        else:
            ctx.emit(CardCharged(trip_id=event.trip_id, charge_id=f"ch-{event.trip_id}"))

    async def book_hotel(data: Trip, mediator: Mediator) -> None:
        await mediator.send(BookHotel(trip_id=data.trip_id))

    async def cancel_hotel(data: Trip, mediator: Mediator) -> None:
        await mediator.send(CancelHotel(trip_id=data.trip_id))

    async def confirm_trip(data: Trip, mediator: Mediator) -> None:
        await mediator.send(Confirm(trip_id=data.trip_id))

    def charged(data: Trip, reply: CardCharged) -> None:
        data.charge_id = reply.charge_id

    trip = Saga(
        "trip",
        data=Trip,
        key="trip_id",
        start_on=[TripRequested],
        compensation_attempts=3,
        backoff=Backoff(initial_delay=0.0, max_delay=0.0, jitter="none"),
        steps=[
            Step("book hotel", action=book_hotel, compensate=cancel_hotel),
            Step(
                "charge card",
                send=lambda d: ChargeCard(trip_id=d.trip_id, amount=d.amount),
                replies={CardCharged: charged, CardDeclined: "fail"},
                timeout=timeout,
            ),
            Step("confirm", action=confirm_trip),
        ],
    )
    routers = [hotel, payments] if bank else [hotel]
    return App(name="trips", routers=routers, sagas=[trip])


async def started(mediator: Mediator, trip_id: str, amount: int = 50) -> None:
    await mediator.publish(TripRequested(trip_id=trip_id, amount=amount))


async def test_a_saga_whose_steps_all_succeed_completes_with_its_reply_data() -> None:
    world = World()
    app = trip_app(world)
    mediator = app.mediator()
    await started(mediator, "t-1")
    engine = app.saga_engine(mediator)
    state = await engine.find("trip", "t-1")
    assert state is not None
    assert state.status is SagaStatus.COMPLETED
    assert state.data["charge_id"] == "ch-t-1"
    assert world.calls == ["book t-1", "charge t-1", "confirm t-1"]
    assert [(h.step, h.outcome) for h in state.history] == [
        ("book hotel", "succeeded"),
        ("charge card", "started"),
        ("charge card", "succeeded"),
        ("confirm", "succeeded"),
    ]


async def test_a_fail_reply_compensates_the_completed_steps_and_ends_compensated() -> None:
    world = World()
    app = trip_app(world)
    mediator = app.mediator()
    await started(mediator, "t-2", amount=500)
    state = await app.saga_engine(mediator).find("trip", "t-2")
    assert state is not None
    assert state.status is SagaStatus.COMPENSATED
    assert world.calls == ["book t-2", "charge t-2", "cancel t-2"]
    assert "CardDeclined" in state.error


async def test_a_failing_in_process_step_compensates_the_steps_before_it_last_first() -> None:
    world = World(confirm_fails=True)
    app = trip_app(world)
    mediator = app.mediator()
    await started(mediator, "t-3")
    state = await app.saga_engine(mediator).find("trip", "t-3")
    assert state is not None
    assert state.status is SagaStatus.COMPENSATED
    assert world.calls == ["book t-3", "charge t-3", "cancel t-3"]  # confirm never happened
    assert state.error == "confirm: RuntimeError: no mail server"
    assert ("confirm", "action", "failed") in [(h.step, h.phase, h.outcome) for h in state.history]


async def test_a_step_whose_reply_never_comes_times_out_and_compensates() -> None:
    world = World()
    app = trip_app(world, bank=False, timeout=0.05)
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    await started(mediator, "t-4")
    waiting = await engine.find("trip", "t-4")
    assert waiting is not None
    assert waiting.status is SagaStatus.RUNNING

    async def compensated() -> bool:
        await engine.fire_due()  # what the runtime's poller does
        state = await engine.find("trip", "t-4")
        return state is not None and state.status is SagaStatus.COMPENSATED

    await wait_until(compensated, within=5)
    assert world.calls == ["book t-4", "cancel t-4"]


async def test_a_late_reply_after_the_timeout_does_nothing() -> None:
    world = World()
    app = trip_app(world, bank=False, timeout=0.01)
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    await started(mediator, "t-5")

    async def compensated() -> bool:
        await engine.fire_due()
        state = await engine.find("trip", "t-5")
        return state is not None and state.status is SagaStatus.COMPENSATED

    await wait_until(compensated, within=5)
    before = await engine.find("trip", "t-5")
    await mediator.publish(CardCharged(trip_id="t-5", charge_id="late"))
    after = await engine.find("trip", "t-5")
    assert before is not None
    assert after is not None
    assert (after.status, after.version, after.data) == (
        SagaStatus.COMPENSATED, before.version, before.data,
    )  # fmt: skip


async def test_a_compensation_that_keeps_failing_fails_the_saga_and_retry_compensates_it() -> None:
    world = World(cancel_failures=3)  # as many as the saga's compensation_attempts
    app = trip_app(world)
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    await started(mediator, "t-6", amount=500)

    async def status() -> SagaStatus | None:
        await engine.fire_due()  # the retries are due at once (no backoff)
        state = await engine.find("trip", "t-6")
        return state.status if state is not None and state.status.final else None

    assert await wait_until(status, within=5) is SagaStatus.FAILED
    [failed] = await engine.list(status=SagaStatus.FAILED)
    assert failed.attempts == 3
    assert "the hotel is unreachable" in failed.error
    assert "cancel t-6" not in world.calls

    assert await engine.retry(failed.saga_id)  # the hotel answers again (no failures left)
    state = await engine.get(failed.saga_id)
    assert state is not None
    assert state.status is SagaStatus.COMPENSATED
    assert world.calls[-1] == "cancel t-6"
    assert not await engine.retry(failed.saga_id)  # only a failed saga is retried


async def test_two_concurrent_starts_of_one_key_are_one_saga() -> None:
    world = World()
    app = trip_app(world)
    mediator = app.mediator()
    await asyncio.gather(*(started(mediator, "t-7") for _ in range(5)))
    sagas = await app.saga_engine(mediator).list(saga_type="trip")
    assert [s.key for s in sagas] == ["t-7"]
    assert world.calls.count("book t-7") == 1


async def test_two_workers_racing_on_one_saga_advance_it_once_per_step() -> None:
    gate = asyncio.Event()
    booked: list[str] = []

    async def book(data: Trip) -> None:
        booked.append(data.trip_id)
        await gate.wait()  # both workers are inside the step before either updates

    async def notify(data: Trip) -> None:
        booked.append(f"notified {data.trip_id}")

    race = Saga(
        "race", data=Trip, key="trip_id",
        steps=[Step("book", action=book), Step("notify", action=notify)],
    )  # fmt: skip
    app = App(name="race", sagas=[race])
    mediator = app.mediator()
    engine = app.saga_engine(mediator)
    saga_id = await start_without_driving(app, engine, race)
    workers = [asyncio.ensure_future(engine.drive(saga_id)) for _ in range(2)]
    await wait_until(lambda: len(booked) == 2)
    gate.set()
    await asyncio.gather(*workers)  # the loser's conflict was retried from a fresh read
    state = await engine.get(saga_id)
    assert state is not None
    assert state.status is SagaStatus.COMPLETED
    assert [(h.step, h.outcome) for h in state.history] == [
        ("book", "succeeded"),
        ("notify", "succeeded"),
    ]
    assert booked.count("notified t-8") == 1


async def start_without_driving(app: App, engine: SagaEngine, saga: Saga[Trip]) -> str:
    """Store a PENDING saga the way a start does, but leave driving it to the test."""
    ctx = Context()
    state = await engine.start(saga, ctx, data=Trip(trip_id="t-8", amount=1))
    assert state is not None
    assert [type(e).__name__ for e in ctx.take_events()] == ["Due"]  # what would drive it
    return state.saga_id


def test_a_step_needs_exactly_one_kind_of_action() -> None:
    from wirebus.errors import ConfigurationError

    async def act(data: Trip) -> None:
        return None

    with pytest.raises(ConfigurationError, match="exactly one of action= or send="):
        Step("both", action=act, send=lambda d: d, replies={CardCharged: "ok"})
    with pytest.raises(ConfigurationError, match="needs replies="):
        Step("no replies", send=lambda d: d)

    async def odd(data: Trip, other: int) -> None:
        return None

    with pytest.raises(ConfigurationError, match="must be annotated Mediator, Context"):
        Saga("odd", data=Trip, key="trip_id", steps=[Step("odd", action=odd)])
