"""EventProcessor: one consumed record to an outcome (handled, duplicate, DLQ...)."""

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
from shop.orders.v1 import orders_pb2
from shop.payments.v1 import payments_pb2

from examples.shop.app import app as shop_app
from examples.shop.orders.messages import LineItem, OrderPlaced
from examples.shop.payments.messages import CapturePayment, PaymentCaptured
from wirebus import App, Event, InvalidArgument, Router, Unavailable
from wirebus.broker import EventEncoder, OutgoingRecord, PublishError, Record
from wirebus.brokers.memory import InMemoryBroker
from wirebus.cloudevents import Attributes
from wirebus.consumer import EventProcessor, ProcessingInterrupted, dead_letter_record
from wirebus.inbox import InMemoryInbox
from wirebus.retry import Retry

NOW = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
TOPIC = "shop.orders.v1"
DLQ = "shop.orders.v1.dlq"


class Cancelled(Event, proto=orders_pb2.OrderCancelled, key="order_id"):
    order_id: str
    reason: str
    cancelled_at: dt.datetime


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


class BrokenPublisher:
    """A DLQ publisher whose broker is down."""

    def __init__(self) -> None:
        self.calls = 0

    async def publish(self, event: Any, *, subject: str | None = None) -> None:
        raise PublishError("x", "down")

    async def publish_many(self, events: Any) -> None:
        raise PublishError("x", "down")

    async def send_records(self, records: Sequence[OutgoingRecord]) -> None:
        self.calls += 1
        raise PublishError(records[0].topic, "broker unreachable")


def cancelled(order_id: str = "o-1") -> Cancelled:
    return Cancelled(order_id=order_id, reason="changed my mind", cancelled_at=NOW)


def app_of(*routers: Router, **kwargs: Any) -> App:
    return App(name="test", routers=routers, **kwargs)


def router_with(*handlers: Any, name: str = "test") -> Router:
    router = Router(name)
    for h in handlers:
        router.handler(h)
    return router


def to_record(out: OutgoingRecord, *, partition: int = 0, offset: int = 7) -> Record:
    return Record(out.topic, partition, offset, out.key, out.value, out.headers)


def record_of(app: App, event: Any, **kwargs: Any) -> Record:
    return to_record(EventEncoder(app.registry(), source="producer").record(event), **kwargs)


def processor_for(
    app: App,
    broker: InMemoryBroker,
    *,
    mediator: Any = None,
    inbox: InMemoryInbox | None = None,
    sleep: FakeSleep | None = None,
    **kwargs: Any,
) -> EventProcessor:
    return EventProcessor(
        mediator or app.mediator(),
        app.registry(),
        group="g",
        inbox=inbox or InMemoryInbox(),
        dead_letters=broker.publisher(app.registry(), source="test"),
        sleep=sleep or FakeSleep(),
        **kwargs,
    )


def why(record: Record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers if k.startswith("wirebus_")}


# ---------------------------------------------------------------- handled


async def test_a_record_is_decoded_and_handled() -> None:
    seen: list[Cancelled] = []

    async def on_cancelled(event: Cancelled) -> None:
        seen.append(event)

    app = app_of(router_with(on_cancelled))
    broker = InMemoryBroker()
    processor = processor_for(app, broker)

    assert await processor.process(record_of(app, cancelled())) == "handled"
    assert seen == [cancelled()]
    assert broker.records(DLQ) == []


async def test_a_shop_order_placed_record_is_handled_by_the_checkout_saga() -> None:
    broker = InMemoryBroker()
    event = OrderPlaced(
        order_id="o-1",
        customer_id="c-1",
        items=(LineItem(sku="a", quantity=1, price_cents=5),),
        total_cents=5,
        placed_at=NOW,
    )
    async with shop_app.mediator() as mediator:  # its private database holds the saga
        processor = processor_for(shop_app, broker, mediator=mediator)

        assert await processor.process(record_of(shop_app, event)) == "handled"


async def test_an_event_without_handlers_is_ignored() -> None:
    async def on_cancelled(event: Cancelled) -> None:
        return None

    app = app_of(router_with(on_cancelled), events=[PaymentCaptured])
    broker = InMemoryBroker()
    event = PaymentCaptured(payment_id="p", order_id="o", amount_cents=1, captured_at=NOW)

    assert await processor_for(app, broker).process(record_of(app, event)) == "ignored"
    assert broker.records("shop.payments.v1.dlq") == []


# ---------------------------------------------------------------- inbox


async def test_a_redelivered_event_is_a_duplicate_and_not_handled_twice() -> None:
    calls = 0

    async def on_cancelled(event: Cancelled) -> None:
        nonlocal calls
        calls += 1

    app = app_of(router_with(on_cancelled))
    inbox = InMemoryInbox()
    processor = processor_for(app, InMemoryBroker(), inbox=inbox)
    record = record_of(app, cancelled())
    ce_id = record.header("ce_id").decode()  # type: ignore[union-attr]

    assert await processor.process(record) == "handled"
    assert await inbox.seen("g", ce_id)
    assert await processor.process(record) == "duplicate"
    assert calls == 1


async def test_the_inbox_is_per_group() -> None:
    calls = 0

    async def on_cancelled(event: Cancelled) -> None:
        nonlocal calls
        calls += 1

    app = app_of(router_with(on_cancelled))
    inbox = InMemoryInbox()
    broker = InMemoryBroker()
    record = record_of(app, cancelled())
    other = EventProcessor(
        app.mediator(),
        app.registry(),
        group="other",
        inbox=inbox,
        dead_letters=broker.publisher(app.registry(), source="t"),
    )

    assert await processor_for(app, broker, inbox=inbox).process(record) == "handled"
    assert await other.process(record) == "handled"
    assert calls == 2


async def test_a_dead_lettered_event_is_not_marked_in_the_inbox() -> None:
    async def on_cancelled(event: Cancelled) -> None:
        raise InvalidArgument("no")

    app = app_of(router_with(on_cancelled))
    inbox = InMemoryInbox()
    record = record_of(app, cancelled())

    assert await processor_for(app, InMemoryBroker(), inbox=inbox).process(record) == (
        "dead_lettered"
    )
    assert not await inbox.seen("g", record.header("ce_id").decode())  # type: ignore[union-attr]


# ---------------------------------------------------------------- bad input


async def test_an_unknown_ce_type_is_dead_lettered_with_why() -> None:
    app = app_of(router_with())
    broker = InMemoryBroker()
    attrs = Attributes.new(source="elsewhere", type="shop.orders.v1.Unheard")
    record = Record(TOPIC, 2, 41, b"key", b"\x0a\x01x", tuple(attrs.headers()))

    assert await processor_for(app, broker).process(record) == "dead_lettered"

    [dead] = broker.records(DLQ)
    assert why(dead) == {
        "wirebus_error_type": "UnknownEventType",
        "wirebus_error_message": "ce_type 'shop.orders.v1.Unheard' is not registered",
        "wirebus_original_topic": TOPIC,
        "wirebus_original_partition": "2",
        "wirebus_original_offset": "41",
        "wirebus_attempts": "0",
    }


async def test_an_unknown_ce_type_is_skipped_with_skip_unknown() -> None:
    app = app_of(router_with())
    broker = InMemoryBroker()
    attrs = Attributes.new(source="elsewhere", type="shop.orders.v1.Unheard")
    record = Record(TOPIC, 0, 0, None, b"", tuple(attrs.headers()))

    assert await processor_for(app, broker, skip_unknown=True).process(record) == "skipped"
    assert broker.records(DLQ) == []


async def test_many_distinct_unknown_ce_types_do_not_grow_the_processor() -> None:
    app = app_of(router_with())
    processor = processor_for(app, InMemoryBroker(), skip_unknown=True)
    for n in range(50):
        attrs = Attributes.new(source="elsewhere", type=f"garbage.T{n}")
        record = Record(TOPIC, 0, n, None, b"", tuple(attrs.headers()))
        assert await processor.process(record) == "skipped"
    assert processor.planned_types == frozenset()  # nothing remembered per unknown name


async def test_a_value_that_does_not_decode_is_dead_lettered() -> None:
    async def on_cancelled(event: Cancelled) -> None:
        raise AssertionError("must not be called")

    app = app_of(router_with(on_cancelled))
    broker = InMemoryBroker()
    good = record_of(app, cancelled())
    garbage = Record(good.topic, 0, 3, good.key, b"\xff\xff\xff\xff", good.headers)

    assert await processor_for(app, broker).process(garbage) == "dead_lettered"

    [dead] = broker.records(DLQ)
    reason = why(dead)
    assert reason["wirebus_error_type"] == "UndecodableEvent"
    assert "value is not a valid shop.orders.v1.OrderCancelled" in reason["wirebus_error_message"]
    assert reason["wirebus_attempts"] == "0"
    assert dead.value == b"\xff\xff\xff\xff"


async def test_a_record_without_headers_is_dead_lettered() -> None:
    app = app_of(router_with())
    broker = InMemoryBroker()
    record = Record(TOPIC, 1, 5, b"k", b"payload", ())

    assert await processor_for(app, broker).process(record) == "dead_lettered"

    [dead] = broker.records(DLQ)
    assert why(dead)["wirebus_error_type"] == "MalformedEvent"
    assert "missing CloudEvents header" in why(dead)["wirebus_error_message"]
    assert (dead.key, dead.value) == (b"k", b"payload")


async def test_a_record_with_no_value_is_dead_lettered_with_an_empty_value() -> None:
    app = app_of(router_with())
    broker = InMemoryBroker()

    assert await processor_for(app, broker).process(Record(TOPIC, 0, 0, None, None, ())) == (
        "dead_lettered"
    )
    [dead] = broker.records(DLQ)
    assert dead.value == b""


async def test_the_dlq_record_keeps_the_original_key_value_and_headers() -> None:
    async def on_cancelled(event: Cancelled) -> None:
        raise InvalidArgument("reason is not allowed")

    app = app_of(router_with(on_cancelled))
    broker = InMemoryBroker()
    record = record_of(app, cancelled("o-42"))

    await processor_for(app, broker).process(record)

    [dead] = broker.records(DLQ)
    assert dead.key == record.key == b"o-42"
    assert dead.value == record.value
    assert dead.headers[: len(record.headers)] == record.headers
    assert dead.header("ce_id") == record.header("ce_id")


def test_dead_lettering_twice_does_not_stack_wirebus_headers() -> None:
    record = Record(TOPIC, 0, 1, b"k", b"v", (("ce_id", b"1"),))
    once = dead_letter_record(record, ValueError("first"), 1)
    again = dead_letter_record(
        Record(once.topic, 0, 0, once.key, once.value, once.headers), ValueError("second"), 2
    )

    names = [k for k, _ in again.headers]
    assert names.count("wirebus_error_message") == 1
    assert dict(again.headers)["wirebus_error_message"] == b"second"
    assert again.topic == "shop.orders.v1.dlq.dlq"


def test_a_long_error_message_is_truncated_in_the_dlq_header() -> None:
    record = Record(TOPIC, 0, 1, None, b"v", ())
    dead = dead_letter_record(record, ValueError("x" * 10_000), 1)
    assert len(dict(dead.headers)["wirebus_error_message"]) == 2000


# ---------------------------------------------------------------- retries


async def test_a_handler_failing_twice_then_succeeding_is_handled_after_two_delays() -> None:
    attempts = 0

    async def flaky(event: Cancelled) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("database hiccup")

    app = app_of(router_with(flaky))
    broker = InMemoryBroker()
    sleep = FakeSleep()
    processor = processor_for(app, broker, sleep=sleep, retry=Retry(attempts=3))

    assert await processor.process(record_of(app, cancelled())) == "handled"
    assert attempts == 3
    assert len(sleep.delays) == 2
    assert all(0 <= d <= 5.0 for d in sleep.delays)
    assert broker.records(DLQ) == []


async def test_delays_back_off_exponentially_without_jitter() -> None:
    async def failing(event: Cancelled) -> None:
        raise ConnectionError("down")

    app = app_of(router_with(failing))
    sleep = FakeSleep()
    retry = Retry(attempts=5, initial_delay=0.1, multiplier=2, max_delay=0.5, jitter=False)
    processor = processor_for(app, InMemoryBroker(), sleep=sleep, retry=retry)

    await processor.process(record_of(app, cancelled()))

    assert sleep.delays == pytest.approx([0.1, 0.2, 0.4, 0.5])


async def test_an_always_failing_handler_is_dead_lettered_after_all_attempts() -> None:
    attempts = 0

    async def failing(event: Cancelled) -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("still down")

    app = app_of(router_with(failing))
    broker = InMemoryBroker()
    sleep = FakeSleep()
    processor = processor_for(app, broker, sleep=sleep, retry=Retry(attempts=4))

    assert await processor.process(record_of(app, cancelled())) == "dead_lettered"

    [dead] = broker.records(DLQ)
    assert attempts == 4
    assert len(sleep.delays) == 3
    assert why(dead)["wirebus_attempts"] == "4"
    assert why(dead)["wirebus_error_type"] == "ConnectionError"
    assert why(dead)["wirebus_error_message"] == "still down"


async def test_a_non_retriable_domain_error_is_dead_lettered_after_one_attempt() -> None:
    attempts = 0

    async def invalid(event: Cancelled) -> None:
        nonlocal attempts
        attempts += 1
        raise InvalidArgument("the reason is too rude")

    app = app_of(router_with(invalid))
    broker = InMemoryBroker()
    sleep = FakeSleep()
    processor = processor_for(app, broker, sleep=sleep, retry=Retry(attempts=5))

    assert await processor.process(record_of(app, cancelled())) == "dead_lettered"

    [dead] = broker.records(DLQ)
    assert attempts == 1
    assert sleep.delays == []
    assert why(dead)["wirebus_attempts"] == "1"
    assert why(dead)["wirebus_error_type"] == "InvalidArgument"


async def test_a_retriable_domain_error_is_retried() -> None:
    attempts = 0

    async def unavailable(event: Cancelled) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise Unavailable("payment provider busy")

    app = app_of(router_with(unavailable))
    processor = processor_for(app, InMemoryBroker(), retry=Retry(attempts=2))

    assert await processor.process(record_of(app, cancelled())) == "handled"
    assert attempts == 2


async def test_a_handlers_own_retry_policy_overrides_the_default() -> None:
    attempts = 0
    router = Router("test")

    @router.handler(retry=Retry(attempts=5, initial_delay=0.01, jitter=False))
    async def patient(event: Cancelled) -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("down")

    app = app_of(router)
    broker = InMemoryBroker()
    sleep = FakeSleep()
    processor = processor_for(app, broker, sleep=sleep, retry=Retry(attempts=1))

    assert await processor.process(record_of(app, cancelled())) == "dead_lettered"
    assert attempts == 5
    assert sleep.delays == pytest.approx([0.01, 0.02, 0.04, 0.08])
    assert why(broker.records(DLQ)[0])["wirebus_attempts"] == "5"


async def test_each_handler_gets_its_own_policy() -> None:
    counts = {"default": 0, "custom": 0}
    router = Router("test")

    @router.handler
    async def default(event: Cancelled) -> None:
        counts["default"] += 1
        if counts["default"] < 2:
            raise ConnectionError("once")

    @router.handler(retry=Retry(attempts=3, jitter=False))
    async def custom(event: Cancelled) -> None:
        counts["custom"] += 1
        if counts["custom"] < 3:
            raise ConnectionError("twice")

    app = app_of(router)
    processor = processor_for(app, InMemoryBroker(), retry=Retry(attempts=2))

    assert await processor.process(record_of(app, cancelled())) == "handled"
    assert counts == {"default": 2, "custom": 3}


# ---------------------------------------------------------------- emitted events


async def test_events_a_handler_emits_are_published_through_the_mediators_publisher() -> None:
    broker = InMemoryBroker()
    publisher = broker.publisher(shop_app.registry(), source="shop")
    processor = processor_for(
        shop_app,
        broker,
        mediator=shop_app.mediator(publisher=publisher),
        routers=frozenset({"payments"}),
    )
    event = CapturePayment(order_id="o-77", customer_id="c-1", amount_cents=500)

    assert await processor.process(record_of(shop_app, event)) == "handled"

    [published] = broker.records("shop.payments.v1")
    assert published.header("ce_type") == b"shop.payments.v1.PaymentCaptured"
    assert published.header("ce_source") == b"shop"
    assert published.key == b"o-77"
    captured = PaymentCaptured.from_proto(payments_pb2.PaymentCaptured.FromString(published.value))
    assert (captured.order_id, captured.amount_cents) == ("o-77", 500)


async def test_a_failing_emitted_publish_is_retried_then_dead_lettered() -> None:
    async def emits(event: Cancelled) -> PaymentCaptured:
        return PaymentCaptured(
            payment_id="p", order_id=event.order_id, amount_cents=1, captured_at=NOW
        )

    app = app_of(router_with(emits), events=[PaymentCaptured])
    broker = InMemoryBroker()
    processor = processor_for(
        app, broker, mediator=app.mediator(publisher=BrokenPublisher()), retry=Retry(attempts=2)
    )

    assert await processor.process(record_of(app, cancelled())) == "dead_lettered"
    assert why(broker.records(DLQ)[0])["wirebus_error_type"] == "PublishError"
    assert why(broker.records(DLQ)[0])["wirebus_attempts"] == "2"


# ---------------------------------------------------------------- infrastructure


async def test_a_failing_dead_letter_publisher_interrupts_processing() -> None:
    async def invalid(event: Cancelled) -> None:
        raise InvalidArgument("no")

    app = app_of(router_with(invalid))
    broken = BrokenPublisher()
    processor = EventProcessor(
        app.mediator(), app.registry(), group="g", inbox=InMemoryInbox(), dead_letters=broken
    )

    with pytest.raises(ProcessingInterrupted, match=r"PublishError.*broker unreachable"):
        await processor.process(record_of(app, cancelled()))
    assert broken.calls == 1


async def test_a_failing_dead_letter_publisher_interrupts_malformed_records_too() -> None:
    app = app_of(router_with())
    processor = EventProcessor(
        app.mediator(),
        app.registry(),
        group="g",
        inbox=InMemoryInbox(),
        dead_letters=BrokenPublisher(),
    )

    with pytest.raises(ProcessingInterrupted):
        await processor.process(Record(TOPIC, 0, 0, None, b"", ()))


async def test_an_unreachable_inbox_interrupts_processing() -> None:
    class DownInbox(InMemoryInbox):
        async def seen_many(self, group: str, event_ids: Sequence[str]) -> set[str]:
            raise OSError("connection refused")

    async def on_cancelled(event: Cancelled) -> None:
        return None

    app = app_of(router_with(on_cancelled))
    processor = processor_for(app, InMemoryBroker(), inbox=DownInbox())

    with pytest.raises(ProcessingInterrupted, match="OSError: connection refused"):
        await processor.process(record_of(app, cancelled()))


# ---------------------------------------------------------------- slices


async def test_routers_runs_only_that_slices_handlers() -> None:
    ran: list[str] = []

    async def in_billing(event: Cancelled) -> None:
        ran.append("billing")

    async def in_shipping(event: Cancelled) -> None:
        ran.append("shipping")

    app = app_of(router_with(in_billing, name="billing"), router_with(in_shipping, name="shipping"))
    broker = InMemoryBroker()
    record = record_of(app, cancelled())

    billing = processor_for(app, broker, routers=frozenset({"billing"}))
    both = EventProcessor(
        app.mediator(),
        app.registry(),
        group="both",
        inbox=InMemoryInbox(),
        dead_letters=broker.publisher(app.registry(), source="t"),
    )

    assert await billing.process(record) == "handled"
    assert ran == ["billing"]
    assert await both.process(record) == "handled"
    assert ran == ["billing", "billing", "shipping"]


async def test_an_event_no_handler_of_the_slice_takes_is_ignored() -> None:
    broker = InMemoryBroker()
    event = PaymentCaptured(payment_id="p", order_id="o", amount_cents=1, captured_at=NOW)
    processor = processor_for(shop_app, broker, routers=frozenset({"payments"}))

    assert await processor.process(record_of(shop_app, event)) == "ignored"


async def test_a_raw_proto_class_in_events_does_not_hide_the_handled_dataclass() -> None:
    from examples.shop.payments.handlers import PaymentsProvider
    from examples.shop.payments.handlers import router as payments

    app = App(
        name="test",
        routers=[payments],
        providers=[PaymentsProvider()],
        events=[payments_pb2.CapturePayment],
    )
    event = CapturePayment(order_id="o-1", customer_id="c-1", amount_cents=5)

    assert await processor_for(app, InMemoryBroker()).process(record_of(app, event)) == "handled"
