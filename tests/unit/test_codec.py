"""The event registry: identity by protobuf full name, topics, keys and codecs.

The betterproto classes below are hand-written equivalents of
``shop.orders.v1.OrderPlaced`` (betterproto 2.0.0b7). They live at module
level because betterproto resolves its field annotations in the module's
globals.
"""

import dataclasses
import datetime as dt

import betterproto
import pytest
from shop.orders.v1 import orders_pb2
from shop.payments.v1 import payments_pb2

from examples.shop.orders.messages import LineItem, OrderCancelled, OrderPlaced
from examples.shop.payments.messages import PaymentCaptured
from wirebus import Command, ConfigurationError, Event, Message
from wirebus.broker import EventEncoder, UnknownEventType
from wirebus.cloudevents import Attributes
from wirebus.codec import EventRegistry, type_url

PLACED_AT = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)


@dataclasses.dataclass(eq=False, repr=False)
class BpLineItem(betterproto.Message):
    sku: str = betterproto.string_field(1)
    quantity: int = betterproto.int32_field(2)
    price_cents: int = betterproto.int64_field(3)


@dataclasses.dataclass(eq=False, repr=False)
class BpOrderPlaced(betterproto.Message):
    order_id: str = betterproto.string_field(1)
    customer_id: str = betterproto.string_field(2)
    items: list[BpLineItem] = betterproto.message_field(3)  # noqa: RUF009
    total_cents: int = betterproto.int64_field(4)
    placed_at: dt.datetime = betterproto.message_field(5)  # noqa: RUF009 (a Timestamp)


def order_placed() -> OrderPlaced:
    return OrderPlaced(
        order_id="o-1",
        customer_id="c-1",
        items=(
            LineItem(sku="apple", quantity=2, price_cents=150),
            LineItem(sku="pear", quantity=1, price_cents=2_000_000_000_000),
        ),
        total_cents=2_000_000_000_300,
        placed_at=PLACED_AT,
    )


# ---------------------------------------------------------------- identity


def test_an_event_is_known_by_its_protobuf_full_name_not_its_python_class_name() -> None:
    class SomethingElseEntirely(Event, proto=orders_pb2.OrderCancelled):
        order_id: str
        reason: str
        cancelled_at: dt.datetime

    registry = EventRegistry()
    kind = registry.add(SomethingElseEntirely)

    assert kind.full_name == "shop.orders.v1.OrderCancelled"
    assert registry.by_name("shop.orders.v1.OrderCancelled") is kind
    assert registry.by_name("SomethingElseEntirely") is None
    assert registry.by_name(SomethingElseEntirely.__qualname__) is None
    assert kind.dataschema == "type.googleapis.com/shop.orders.v1.OrderCancelled"


def test_the_encoder_writes_the_full_name_as_ce_type() -> None:
    registry = EventRegistry()
    registry.add(OrderPlaced)
    record = EventEncoder(registry, source="shop").record(order_placed())

    headers = dict(record.headers)
    assert headers["ce_type"] == b"shop.orders.v1.OrderPlaced"
    assert headers["ce_dataschema"] == b"type.googleapis.com/shop.orders.v1.OrderPlaced"
    assert headers["ce_source"] == b"shop"


def test_type_url_prefixes_the_full_name() -> None:
    assert type_url("a.b.C") == "type.googleapis.com/a.b.C"


# ---------------------------------------------------------------- topics


def test_the_default_topic_is_the_proto_package() -> None:
    registry = EventRegistry()
    assert registry.add(OrderPlaced).topic == "shop.orders.v1"
    assert registry.add(PaymentCaptured).topic == "shop.payments.v1"
    assert registry.topics == frozenset({"shop.orders.v1", "shop.payments.v1"})


def test_topic_on_the_class_overrides_the_package() -> None:
    class Cancelled(Event, proto=orders_pb2.OrderCancelled, topic="orders.cancellations"):
        order_id: str
        reason: str
        cancelled_at: dt.datetime

    assert EventRegistry().add(Cancelled).topic == "orders.cancellations"


def test_topic_given_to_add_overrides_the_package() -> None:
    kind = EventRegistry().add(orders_pb2.OrderCancelled, topic="audit")
    assert kind.topic == "audit"


def test_an_empty_topic_is_rejected_at_class_definition() -> None:
    with pytest.raises(ConfigurationError, match="topic= must not be empty"):

        class Cancelled(Event, proto=orders_pb2.OrderCancelled, topic=""):
            order_id: str
            reason: str
            cancelled_at: dt.datetime


def test_registering_a_type_twice_with_another_topic_is_a_configuration_error() -> None:
    registry = EventRegistry()
    registry.add(orders_pb2.OrderCancelled)
    with pytest.raises(ConfigurationError, match="registered twice with different settings"):
        registry.add(orders_pb2.OrderCancelled, topic="elsewhere")


def test_registering_a_type_twice_with_the_same_settings_returns_the_first_registration() -> None:
    registry = EventRegistry()
    first = registry.add(OrderPlaced)
    assert registry.add(OrderPlaced) is first
    assert len(registry) == 1


# ---------------------------------------------------------------- keys


def test_the_declared_key_field_keys_the_record() -> None:
    registry = EventRegistry()
    kind = registry.add(OrderPlaced)
    event = order_placed()

    assert kind.key is not None
    assert kind.key(event) == "o-1"
    assert kind.key_bytes(event) == b"o-1"
    assert EventEncoder(registry, source="shop").record(event).key == b"o-1"


def test_a_non_string_key_field_is_stringified() -> None:
    class Counted(Event, proto=payments_pb2.PaymentCaptured, key="amount_cents"):
        payment_id: str
        order_id: str
        amount_cents: int
        captured_at: dt.datetime

    kind = EventRegistry().add(Counted)
    event = Counted(payment_id="p", order_id="o", amount_cents=42, captured_at=PLACED_AT)
    assert kind.key_bytes(event) == b"42"


def test_an_event_without_a_key_has_no_record_key() -> None:
    class Unkeyed(Event, proto=orders_pb2.OrderCancelled):
        order_id: str
        reason: str
        cancelled_at: dt.datetime

    registry = EventRegistry()
    kind = registry.add(Unkeyed)
    event = Unkeyed(order_id="o", reason="", cancelled_at=PLACED_AT)
    assert kind.key is None
    assert EventEncoder(registry, source="s").record(event).key is None


def test_a_key_naming_no_field_fails_when_the_event_class_is_defined() -> None:
    with pytest.raises(ConfigurationError, match=r"key='orderid' names no field"):

        class Cancelled(Event, proto=orders_pb2.OrderCancelled, key="orderid"):
            order_id: str
            reason: str
            cancelled_at: dt.datetime


@pytest.mark.parametrize("base", [Message, Command], ids=["Message", "Command"])
def test_key_on_a_class_that_is_not_an_event_is_a_configuration_error(base: type) -> None:
    with pytest.raises(ConfigurationError, match="key= and topic= are for Event subclasses"):

        class NotAnEvent(base, key="order_id"):  # type: ignore[misc, call-arg]
            order_id: str


def test_a_key_given_to_add_for_a_dataclass_must_name_a_field() -> None:
    with pytest.raises(ConfigurationError, match="names no field"):
        EventRegistry().add(OrderCancelled, key="nope")


# ---------------------------------------------------------------- codecs


def test_a_bound_event_dataclass_round_trips_through_upb() -> None:
    kind = EventRegistry().add(OrderPlaced)
    event = order_placed()
    data = kind.encode(event)

    assert orders_pb2.OrderPlaced.FromString(data) == event.proto()
    assert kind.decode(data) == event


def test_a_raw_generated_protobuf_class_registers_and_round_trips() -> None:
    registry = EventRegistry()
    kind = registry.add(orders_pb2.OrderCancelled, key="order_id")
    message = orders_pb2.OrderCancelled(order_id="o-9", reason="changed my mind")

    assert kind.full_name == "shop.orders.v1.OrderCancelled"
    assert kind.topic == "shop.orders.v1"
    assert registry.by_name("shop.orders.v1.OrderCancelled") is kind
    assert kind.decode(kind.encode(message)) == message
    assert kind.key_bytes(message) == b"o-9"


def test_a_wrong_full_name_for_a_generated_class_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match=r"is shop\.orders\.v1\.OrderCancelled, not x\.Y"):
        EventRegistry().add(orders_pb2.OrderCancelled, full_name="x.Y")


def test_the_first_registration_of_a_name_decodes_it() -> None:
    registry = EventRegistry()
    registry.add(OrderPlaced)
    registry.add(orders_pb2.OrderPlaced)

    assert registry.by_name("shop.orders.v1.OrderPlaced").python_type is OrderPlaced  # type: ignore[union-attr]
    assert registry.by_type(orders_pb2.OrderPlaced) is not None
    assert len(registry) == 2


def test_a_plain_dataclass_cannot_travel() -> None:
    class Local(Event):
        n: int = 0

    with pytest.raises(ConfigurationError, match="cannot travel"):
        EventRegistry().add(Local)


def test_a_betterproto_class_needs_its_full_name() -> None:
    with pytest.raises(ConfigurationError, match="betterproto class: give its protobuf full_name"):
        EventRegistry().add(BpOrderPlaced)


def test_a_betterproto_class_registers_under_the_full_name_given() -> None:
    registry = EventRegistry()
    kind = registry.add(BpOrderPlaced, full_name="shop.orders.v1.OrderPlaced", key="order_id")

    assert kind.full_name == "shop.orders.v1.OrderPlaced"
    assert kind.topic == "shop.orders.v1"
    assert registry.by_name("shop.orders.v1.OrderPlaced") is kind
    assert kind.key_bytes(BpOrderPlaced(order_id="o-7")) == b"o-7"


def test_a_betterproto_consumer_decodes_what_the_upb_encoder_wrote() -> None:
    upb = EventRegistry().add(OrderPlaced)
    bp = EventRegistry().add(BpOrderPlaced, full_name="shop.orders.v1.OrderPlaced")
    event = order_placed()

    decoded = bp.decode(upb.encode(event))

    assert isinstance(decoded, BpOrderPlaced)
    assert decoded.order_id == event.order_id
    assert decoded.customer_id == event.customer_id
    assert [(i.sku, i.quantity, i.price_cents) for i in decoded.items] == [
        (i.sku, i.quantity, i.price_cents) for i in event.items
    ]
    assert decoded.total_cents == event.total_cents
    assert decoded.placed_at == PLACED_AT


def test_the_upb_decoder_reads_what_betterproto_wrote() -> None:
    upb = EventRegistry().add(OrderPlaced)
    bp = EventRegistry().add(BpOrderPlaced, full_name="shop.orders.v1.OrderPlaced")
    written = BpOrderPlaced(
        order_id="o-2",
        customer_id="c-2",
        items=[
            BpLineItem(sku="apple", quantity=3, price_cents=99),
            BpLineItem(sku="plum", quantity=1, price_cents=5_000_000_000),
        ],
        total_cents=5_000_000_297,
        placed_at=PLACED_AT,
    )

    decoded = upb.decode(bp.encode(written))

    assert decoded == OrderPlaced(
        order_id="o-2",
        customer_id="c-2",
        items=(
            LineItem(sku="apple", quantity=3, price_cents=99),
            LineItem(sku="plum", quantity=1, price_cents=5_000_000_000),
        ),
        total_cents=5_000_000_297,
        placed_at=PLACED_AT,
    )


# ---------------------------------------------------------------- encoder


def test_encoding_an_unregistered_raw_protobuf_class_raises_unknown_event_type() -> None:
    encoder = EventEncoder(EventRegistry(), source="shop")
    with pytest.raises(UnknownEventType, match="OrderPlaced is not registered"):
        encoder.record(orders_pb2.OrderPlaced(order_id="o-1"))


def test_a_lookup_never_registers_and_a_frozen_registry_refuses_new_types() -> None:
    registry = EventRegistry()
    assert registry.by_type(OrderPlaced) is None
    assert registry.by_name("shop.orders.v1.OrderPlaced") is None  # the lookup added nothing
    with pytest.raises(UnknownEventType, match="OrderPlaced is not registered"):
        EventEncoder(registry, source="shop").record(order_placed())

    registry.add(OrderPlaced)
    registry.freeze()
    assert registry.add(OrderPlaced) is registry.by_type(OrderPlaced)  # the same: idempotent
    with pytest.raises(ConfigurationError, match="frozen"):
        registry.add(orders_pb2.OrderCancelled)


def test_unknown_event_type_is_a_configuration_error() -> None:
    assert issubclass(UnknownEventType, ConfigurationError)


def test_the_encoder_needs_a_source() -> None:
    with pytest.raises(ConfigurationError, match="source="):
        EventEncoder(EventRegistry(), source="")


def test_the_encoder_keeps_given_attributes_and_makes_fresh_ones_otherwise() -> None:
    registry = EventRegistry()
    registry.add(OrderPlaced)
    encoder = EventEncoder(registry, source="shop")
    given = Attributes(
        id="fixed-id", source="elsewhere", type="shop.orders.v1.OrderPlaced", time=PLACED_AT
    )

    kept = dict(encoder.record(order_placed(), attributes=given).headers)
    first = dict(encoder.record(order_placed()).headers)
    second = dict(encoder.record(order_placed(), subject="orders/o-1").headers)

    assert kept["ce_id"] == b"fixed-id"
    assert kept["ce_source"] == b"elsewhere"
    assert first["ce_id"] != second["ce_id"]
    assert "ce_subject" not in first
    assert second["ce_subject"] == b"orders/o-1"


def test_the_record_value_is_the_serialized_protobuf_message_only() -> None:
    registry = EventRegistry()
    registry.add(OrderPlaced)
    event = order_placed()
    record = EventEncoder(registry, source="shop").record(event)

    assert record.topic == "shop.orders.v1"
    assert record.value == event.proto().SerializeToString()


def test_a_key_given_to_add_for_a_generated_class_must_name_a_field() -> None:
    with pytest.raises(ConfigurationError, match="names no field"):
        EventRegistry().add(orders_pb2.OrderCancelled, key="nope")


def test_registering_a_type_twice_with_another_key_is_a_configuration_error() -> None:
    registry = EventRegistry()
    registry.add(orders_pb2.OrderCancelled, key="order_id")
    with pytest.raises(ConfigurationError, match="registered twice with different settings"):
        registry.add(orders_pb2.OrderCancelled, key="reason")
