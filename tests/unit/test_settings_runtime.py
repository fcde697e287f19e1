"""Settings from the environment, and the Runtime on the embedded broker (no Kafka)."""

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from examples.shop.app import app as shop_app
from examples.shop.orders.messages import GetOrder, LineItem, OrderStatus, OrderView, PlaceOrder
from wirebus import ConfigurationError
from wirebus.broker import Record
from wirebus.brokers.memory import InMemoryBroker
from wirebus.consumer import Outcome
from wirebus.runtime import Runtime
from wirebus.settings import DEFAULT_DATABASE_URL, Settings
from wirebus.testing import wait_until


def tmp_settings(tmp_path: Path) -> Settings:
    """Embedded defaults, with the database in the test's own directory."""
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/wirebus.db")


TIMEOUT = 5


async def until(condition: Callable[[], object]) -> None:
    """Poll ``condition`` (sync or async) until it is true; fail after ``TIMEOUT`` seconds."""
    await wait_until(condition, within=TIMEOUT)


# ---------------------------------------------------------------- Settings


def test_settings_default_to_no_kafka_and_a_local_sqlite_inbox() -> None:
    settings = Settings.from_env({})

    assert settings.kafka_bootstrap is None
    assert settings.database_url == DEFAULT_DATABASE_URL == "sqlite+aiosqlite:///wirebus.db"


def test_empty_variables_count_as_unset() -> None:
    settings = Settings.from_env({"WIREBUS_KAFKA_BOOTSTRAP": "", "WIREBUS_DATABASE_URL": ""})

    assert settings == Settings()


def test_settings_read_the_wirebus_variables() -> None:
    settings = Settings.from_env(
        {
            "WIREBUS_KAFKA_BOOTSTRAP": "kafka-1:9092,kafka-2:9093",
            "WIREBUS_DATABASE_URL": "postgresql+asyncpg://wirebus:pw@db/wirebus",
            "UNRELATED": "x",
        }
    )

    assert settings.kafka_bootstrap == "kafka-1:9092,kafka-2:9093"
    assert settings.database_url == "postgresql+asyncpg://wirebus:pw@db/wirebus"


def test_settings_read_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIREBUS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.delenv("WIREBUS_DATABASE_URL", raising=False)

    settings = Settings.from_env()

    assert settings.kafka_bootstrap == "127.0.0.1:9092"
    assert settings.database_url == DEFAULT_DATABASE_URL


@pytest.mark.parametrize(
    "bootstrap", ["localhost", "localhost:", ":9092", "kafka:port", "kafka:9092,broken"]
)
def test_a_bootstrap_that_is_not_host_port_is_a_configuration_error(bootstrap: str) -> None:
    with pytest.raises(ConfigurationError, match=r"WIREBUS_KAFKA_BOOTSTRAP: .* is not host:port"):
        Settings.from_env({"WIREBUS_KAFKA_BOOTSTRAP": bootstrap})


@pytest.mark.parametrize("url", ["sqlite:///wirebus.db", "postgresql://u:pw@db/wirebus"])
def test_a_database_url_without_an_async_driver_is_rejected(url: str) -> None:
    with pytest.raises(ConfigurationError, match="must name an async driver"):
        Settings.from_env({"WIREBUS_DATABASE_URL": url})


@pytest.mark.parametrize("url", ["postgresql+psycopg2://u@db/wirebus", "sqlite+pysqlite:///x.db"])
def test_a_database_url_naming_a_sync_driver_is_rejected(url: str) -> None:
    with pytest.raises(ConfigurationError, match="must name an async driver"):
        Settings.from_env({"WIREBUS_DATABASE_URL": url})


# ---------------------------------------------------------------- Runtime


def place_order() -> PlaceOrder:
    return PlaceOrder(
        customer_id="c-1",
        items=(
            LineItem(sku="apple", quantity=2, price_cents=150),
            LineItem(sku="pear", quantity=1, price_cents=90),
        ),
    )


async def test_an_order_is_paid_through_the_embedded_broker_and_consumers(tmp_path: Path) -> None:
    async with Runtime(shop_app, tmp_settings(tmp_path), gateway=None, consume=True) as runtime:
        assert runtime.gateway is None
        assert isinstance(runtime.broker, InMemoryBroker)
        assert runtime.mediator is not None
        mediator = runtime.mediator

        ref = await mediator.send(place_order())

        async def paid() -> bool:
            order: OrderView = await mediator.send(GetOrder(order_id=ref.order_id))
            return order.status is OrderStatus.PAID

        await until(paid)

        broker = runtime.broker
        [placed] = broker.records("shop.orders.v1")
        capture, captured = broker.records("shop.payments.v1")  # the checkout saga's
        assert placed.header("ce_type") == b"shop.orders.v1.OrderPlaced"
        assert placed.key == ref.order_id.encode()
        assert capture.header("ce_type") == b"shop.payments.v1.CapturePayment"
        assert captured.header("ce_type") == b"shop.payments.v1.PaymentCaptured"
        assert captured.header("ce_source") == b"shop"
        assert runtime.runner is not None
        runner = runtime.runner
        # OrderPlaced, CapturePayment, PaymentCaptured, and the notification and snapshot
        # of each status change (PENDING, PAID)
        await until(lambda: runner.outcomes.get("handled") == 7)
        assert broker.committed("shop", (placed.topic, placed.partition)) == placed.offset + 1
        assert broker.topics() == [
            "shop.orders.v1",
            "shop.orders.v1.notifications",
            "shop.orders.v1.snapshots",
            "shop.payments.v1",
        ]


async def test_without_kafka_the_relay_publishes_the_outbox_to_the_embedded_broker(
    tmp_path: Path,
) -> None:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/shop.db")
    async with Runtime(shop_app, settings, consume=True) as runtime:
        assert isinstance(runtime.broker, InMemoryBroker)
        assert runtime.relay_worker is not None
        assert runtime.mediator is not None

        mediator = runtime.mediator
        ref = await mediator.send(place_order())

        async def paid() -> OrderView | None:  # the relay and the consumers are asynchronous
            order: OrderView = await mediator.send(GetOrder(order_id=ref.order_id))
            return order if order.status is OrderStatus.PAID else None

        order = await wait_until(paid, within=TIMEOUT * 2, interval=0.025)

        assert order.status is OrderStatus.PAID
        assert [r.topic for r in runtime.broker.records("shop.orders.v1")] == ["shop.orders.v1"]


async def test_the_runtime_uses_the_broker_it_is_given(tmp_path: Path) -> None:
    broker = InMemoryBroker(partitions=1)
    async with Runtime(
        shop_app, tmp_settings(tmp_path), consume=True, group="shop-test", broker=broker
    ) as rt:
        assert rt.broker is broker
        assert rt.mediator is not None
        ref = await rt.mediator.send(place_order())
        await until(lambda: len(broker.records("shop.payments.v1")) == 2)  # capture, captured

    assert broker.records("shop.orders.v1")[0].key == ref.order_id.encode()
    assert broker.committed("shop-test", ("shop.orders.v1", 0)) == 1


async def test_stopping_the_runtime_stops_its_consumer() -> None:
    runtime = Runtime(shop_app, Settings(), consume=True)
    async with runtime:
        assert runtime.runner is not None
    # wait() returns at once when the consumer loop has ended (never while there is none)
    await asyncio.wait_for(runtime.wait(), 1)
    await runtime.stop()  # idempotent


def test_unknown_routers_are_a_configuration_error_listing_the_known_ones() -> None:
    with pytest.raises(
        ConfigurationError,
        match="no router named nope; the app has checkout, inventory, notifications, orders,"
        " payments, replica",
    ):
        Runtime(shop_app, Settings(), consume=True, routers=frozenset({"nope", "payments"}))


def test_the_payments_slice_consumes_the_payments_topic_only() -> None:
    runtime = Runtime(shop_app, Settings(), consume=True, routers=frozenset({"payments"}))
    assert runtime.topics == ["shop.payments.v1"]  # CapturePayment


def test_the_whole_app_consumes_every_topic_its_event_handlers_take() -> None:
    assert Runtime(shop_app, Settings()).topics == [
        "shop.orders.v1",
        "shop.orders.v1.notifications",  # the notifications slice
        "shop.orders.v1.snapshots",  # the replica slice
        "shop.payments.v1",
    ]
    assert Runtime(shop_app, Settings(), routers=frozenset({"checkout"})).topics == [
        "shop.orders.v1",  # OrderPlaced starts the checkout saga
        "shop.payments.v1",  # its replies
    ]
    assert Runtime(shop_app, Settings(), routers=frozenset({"orders"})).topics == []


def test_the_consumer_group_defaults_to_the_app_name() -> None:
    assert Runtime(shop_app, Settings(), consume=True).group == "shop"
    assert Runtime(shop_app, Settings(), consume=True, group="other").group == "other"


def test_an_embedded_broker_is_made_exactly_when_there_is_no_kafka() -> None:
    assert isinstance(Runtime(shop_app, Settings()).broker, InMemoryBroker)
    assert isinstance(Runtime(shop_app, Settings(), consume=True).broker, InMemoryBroker)
    kafka = Settings(kafka_bootstrap="127.0.0.1:9092")
    assert Runtime(shop_app, kafka, consume=True).broker is None


# ---------------------------------------------------------------- Runtime hooks


def test_relay_poll_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="relay_poll must be positive"):
        Runtime(shop_app, Settings(), relay_poll=0)


async def test_on_sqlite_a_committed_event_is_relayed_without_waiting_for_the_relay_poll(
    tmp_path: Path,
) -> None:
    async with Runtime(shop_app, tmp_settings(tmp_path), relay_poll=60.0) as runtime:
        assert runtime.mediator is not None
        assert isinstance(runtime.broker, InMemoryBroker)
        broker = runtime.broker
        await runtime.mediator.send(place_order())  # maybe relayed by the relay's first pass
        await until(lambda: len(broker.records("shop.orders.v1")) == 1)

        ref = await runtime.mediator.send(place_order())  # the relay is waiting for a minute

        await until(lambda: len(broker.records("shop.orders.v1")) == 2)
        assert ref.order_id.encode() in [r.key for r in broker.records("shop.orders.v1")]


async def test_relay_wake_relays_rows_committed_behind_the_runtimes_back_now(
    tmp_path: Path,
) -> None:
    from wirebus.db import Database
    from wirebus.encoding import EventEncoder
    from wirebus.outbox.uow import UnitOfWork

    settings = tmp_settings(tmp_path)
    async with Runtime(shop_app, settings, relay_poll=60.0) as runtime:
        assert runtime.relay_worker is not None
        assert isinstance(runtime.broker, InMemoryBroker)
        broker = runtime.broker
        # Another process's database connection: nothing tells this runtime's relay.
        placed = await runtime_placed_event(runtime)
        other = Database(settings.database_url)
        await other.start()
        try:
            unit = UnitOfWork(other, EventEncoder(shop_app.registry(), source="elsewhere"))
            await unit.commit([placed])
            await unit.close()
        finally:
            await other.close()

        runtime.relay_worker.wake()

        await until(lambda: len(broker.records("shop.orders.v1")) == 2)
        sources = sorted(r.header("ce_source") or b"" for r in broker.records("shop.orders.v1"))
        assert sources == [b"elsewhere", b"shop"]


async def runtime_placed_event(runtime: Runtime) -> object:
    """An ``OrderPlaced`` the runtime itself published (decoded), to commit once more."""
    assert runtime.mediator is not None
    assert isinstance(runtime.broker, InMemoryBroker)
    broker = runtime.broker
    await runtime.mediator.send(place_order())
    await until(lambda: len(broker.records("shop.orders.v1")) == 1)
    [record] = broker.records("shop.orders.v1")
    kind = shop_app.registry().by_name("shop.orders.v1.OrderPlaced")
    assert kind is not None
    return kind.decode(record.value or b"")


async def test_on_outcome_is_told_of_every_record_the_runtimes_consumers_settle(
    tmp_path: Path,
) -> None:
    reached: list[tuple[str, str]] = []

    def on_outcome(record: Record, outcome: Outcome) -> None:
        reached.append((record.topic, outcome))

    async with Runtime(
        shop_app, tmp_settings(tmp_path), consume=True, on_outcome=on_outcome
    ) as runtime:
        assert runtime.mediator is not None
        await runtime.mediator.send(place_order())

        await until(lambda: len(reached) == 7)  # with 2 notifications and 2 snapshots

    causal = [r for r in reached if r[0] in ("shop.orders.v1", "shop.payments.v1")]
    assert causal == [  # OrderPlaced, CapturePayment, PaymentCaptured
        ("shop.orders.v1", "handled"),
        ("shop.payments.v1", "handled"),
        ("shop.payments.v1", "handled"),
    ]
    assert sorted(reached) == sorted(
        [
            *causal,
            *[("shop.orders.v1.notifications", "handled")] * 2,
            *[("shop.orders.v1.snapshots", "handled")] * 2,
        ]
    )
