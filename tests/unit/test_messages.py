"""Message classes: what subclassing Message/Command/Query/Event gives, and how the
shop example's messages convert to and from their protobuf classes.
"""

import dataclasses
import datetime as dt
from pathlib import Path

import mypy.api
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shop.orders.v1 import orders_pb2
from shop.payments.v1 import payments_pb2

from examples.shop.orders.messages import (
    CancelOrder,
    GetOrder,
    LineItem,
    OrderCancelled,
    OrderPlaced,
    OrderStatus,
    OrderView,
    PlaceOrder,
)
from examples.shop.payments.messages import PaymentCaptured
from wirebus import Command, ConfigurationError, Event, Message, Query, Request

UTC = dt.UTC
PLACED_AT = dt.datetime(2024, 3, 1, 9, 30, 0, 250_000, tzinfo=UTC)


class Note(Message):
    """An unbound value object."""

    text: str
    pinned: bool = False


# ---------------------------------------------------------------- dataclass shape


def test_a_message_subclass_is_a_dataclass() -> None:
    assert dataclasses.is_dataclass(Note)
    assert [f.name for f in dataclasses.fields(Note)] == ["text", "pinned"]


def test_messages_are_frozen() -> None:
    note = Note(text="a")

    with pytest.raises(dataclasses.FrozenInstanceError):
        note.text = "b"  # type: ignore[misc]


def test_messages_are_slotted_and_have_no_instance_dict() -> None:
    note = Note(text="a")

    assert not hasattr(note, "__dict__")
    assert set(Note.__slots__) == {"text", "pinned"}
    with pytest.raises((AttributeError, TypeError)):
        note.extra = 1  # type: ignore[attr-defined]


def test_messages_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Note("a")  # type: ignore[misc]


def test_messages_compare_and_hash_by_value() -> None:
    assert Note(text="a") == Note(text="a")
    assert Note(text="a") != Note(text="a", pinned=True)
    assert len({Note(text="a"), Note(text="a")}) == 1


def test_field_defaults_apply() -> None:
    assert CancelOrder(order_id="o1") == CancelOrder(order_id="o1", reason="")


def test_command_query_and_event_subclasses_are_messages_of_their_kind() -> None:
    assert PlaceOrder.__mro__[1:3] == (Command, Request)
    assert GetOrder.__mro__[1:3] == (Query, Request)
    assert issubclass(OrderPlaced, Event)
    assert not issubclass(OrderPlaced, Request)
    assert all(issubclass(c, Message) for c in (PlaceOrder, GetOrder, OrderPlaced, LineItem))


def test_subclasses_of_request_kinds_are_frozen_dataclasses_too() -> None:
    cmd = PlaceOrder(customer_id="c", items=())

    assert not hasattr(cmd, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmd.customer_id = "d"  # type: ignore[misc]


def test_an_unbound_message_cannot_convert_to_protobuf() -> None:
    with pytest.raises(ConfigurationError, match="Note is not bound to a protobuf class"):
        Note(text="a").proto()
    with pytest.raises(ConfigurationError, match="Note is not bound to a protobuf class"):
        Note.from_proto(orders_pb2.LineItem())


def test_proto_must_be_a_generated_message_class() -> None:
    with pytest.raises(
        ConfigurationError, match=r"Wrong: proto= takes a generated protobuf message class"
    ):

        class Wrong(Message, proto=dict):  # type: ignore[arg-type]
            a: int


# ---------------------------------------------------------------- binding by type argument


def test_the_proto_type_argument_binds_the_class_like_proto_keyword() -> None:
    class Item(Message[orders_pb2.LineItem]):
        sku: str
        quantity: int
        price_cents: int

    class Place(Command[None, orders_pb2.PlaceOrderRequest]):
        customer_id: str
        items: tuple[Item, ...]

    place = Place(customer_id="c", items=(Item(sku="A", quantity=1, price_cents=2),))

    assert place.proto() == orders_pb2.PlaceOrderRequest(
        customer_id="c", items=[orders_pb2.LineItem(sku="A", quantity=1, price_cents=2)]
    )
    assert Place.from_proto(place.proto()) == place


def test_an_event_bound_by_type_argument_keeps_its_routing_keywords() -> None:
    class Cancelled(Event[orders_pb2.OrderCancelled], key="order_id", topic="orders"):
        order_id: str
        reason: str
        cancelled_at: dt.datetime

    at = dt.datetime(2025, 1, 2, tzinfo=UTC)
    event = Cancelled(order_id="o", reason="r", cancelled_at=at)

    assert Cancelled.from_proto(event.proto()) == event
    assert (Cancelled.__wirebus_key__, Cancelled.__wirebus_topic__) == ("order_id", "orders")


def test_a_proto_keyword_that_disagrees_with_the_type_argument_is_refused() -> None:
    with pytest.raises(
        ConfigurationError, match=r"Ref: proto=LineItem disagrees with the type argument"
    ):

        class Ref(Message[orders_pb2.PlaceOrderResponse], proto=orders_pb2.LineItem):
            order_id: str


def test_the_same_class_named_twice_is_one_binding() -> None:
    class Ref(Message[orders_pb2.PlaceOrderResponse], proto=orders_pb2.PlaceOrderResponse):
        order_id: str

    assert Ref.from_proto(orders_pb2.PlaceOrderResponse(order_id="o")) == Ref(order_id="o")


ROOT = Path(__file__).resolve().parents[2]

TYPED_USE = """
from shop.orders.v1 import orders_pb2
from wirebus import Command, Event, Mediator, Message

class OrderRef(Message[orders_pb2.PlaceOrderResponse]):
    order_id: str

class PlaceOrder(Command[OrderRef, orders_pb2.PlaceOrderRequest]):
    customer_id: str

class Legacy(Command[OrderRef], proto=orders_pb2.PlaceOrderRequest):
    customer_id: str

class Placed(Event[orders_pb2.OrderPlaced], key="order_id"):
    order_id: str

cmd = PlaceOrder(customer_id="c")
reveal_type(cmd.proto())
reveal_type(PlaceOrder.from_proto)
reveal_type(Placed(order_id="o").proto())
reveal_type(Legacy(customer_id="c").proto())
wrong: orders_pb2.GetOrderRequest = cmd.proto()
PlaceOrder.from_proto(orders_pb2.GetOrderRequest())

async def send(mediator: Mediator) -> None:
    reveal_type(await mediator.send(cmd))
"""


def test_proto_and_from_proto_are_typed_with_the_bound_class_under_mypy_strict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "typed_use.py").write_text(TYPED_USE)
    monkeypatch.chdir(ROOT)  # the project's config: strict, mypy_path = "src"
    monkeypatch.setenv("MYPYPATH", str(ROOT / "gen" / "python"))

    out, err, status = mypy.api.run(
        ["--config-file", "pyproject.toml", "--cache-dir", str(ROOT / ".mypy_cache"),
         "--no-error-summary", "--hide-error-context", str(tmp_path / "typed_use.py")]
    )  # fmt: skip

    lines = [line.split(": ", 1)[1] for line in out.splitlines()]
    assert lines == [
        'note: Revealed type is "shop.orders.v1.orders_pb2.PlaceOrderRequest"',
        'note: Revealed type is "def (message: shop.orders.v1.orders_pb2.PlaceOrderRequest)'
        ' -> typed_use.PlaceOrder"',
        'note: Revealed type is "shop.orders.v1.orders_pb2.OrderPlaced"',
        'note: Revealed type is "google.protobuf.message.Message"',
        'error: Incompatible types in assignment (expression has type "PlaceOrderRequest",'
        ' variable has type "GetOrderRequest")  [assignment]',
        'error: Argument 1 to "from_proto" of "Message" has incompatible type'
        ' "GetOrderRequest"; expected "PlaceOrderRequest"  [arg-type]',
        'note: Revealed type is "typed_use.OrderRef"',
    ], out + err
    assert status == 1


# ---------------------------------------------------------------- the shop's messages


def test_fields_map_to_the_proto_fields_of_the_same_name() -> None:
    cmd = PlaceOrder(
        customer_id="c1",
        items=(
            LineItem(sku="A", quantity=2, price_cents=150),
            LineItem(sku="B", quantity=1, price_cents=0),
        ),
    )

    m = cmd.proto()

    assert isinstance(m, orders_pb2.PlaceOrderRequest)
    assert m.customer_id == "c1"
    assert list(m.items) == [
        orders_pb2.LineItem(sku="A", quantity=2, price_cents=150),
        orders_pb2.LineItem(sku="B", quantity=1, price_cents=0),
    ]


def test_from_proto_builds_the_dataclass_with_nested_items_as_a_tuple() -> None:
    m = orders_pb2.PlaceOrderRequest(
        customer_id="c1", items=[orders_pb2.LineItem(sku="A", quantity=3)]
    )

    cmd = PlaceOrder.from_proto(m)

    assert cmd == PlaceOrder(
        customer_id="c1", items=(LineItem(sku="A", quantity=3, price_cents=0),)
    )
    assert isinstance(cmd.items, tuple)


def test_order_status_maps_by_name_with_the_order_status_prefix_stripped() -> None:
    view = OrderView(
        order_id="o",
        customer_id="c",
        items=(),
        total_cents=0,
        status=OrderStatus.PAID,
        placed_at=PLACED_AT,
    )

    m = view.proto()

    assert m.status == orders_pb2.ORDER_STATUS_PAID
    assert OrderView.from_proto(m).status is OrderStatus.PAID


def test_an_order_with_unspecified_status_cannot_be_read() -> None:
    from wirebus import ConversionError

    with pytest.raises(
        ConversionError, match=r"OrderView\.status: shop\.orders\.v1\.OrderStatus value 0"
    ):
        OrderView.from_proto(orders_pb2.Order(order_id="o"))


def test_the_placed_at_timestamp_is_a_utc_datetime() -> None:
    m = orders_pb2.OrderPlaced(order_id="o")
    m.placed_at.FromDatetime(PLACED_AT)

    assert OrderPlaced.from_proto(m).placed_at == PLACED_AT


# ---------------------------------------------------------------- properties

text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
timestamps = st.datetimes(
    min_value=dt.datetime(1, 1, 1),
    max_value=dt.datetime(9999, 12, 31, 23, 59, 59, 999_999),
    timezones=st.just(UTC),
)
line_items = st.builds(LineItem, sku=text, quantity=int32, price_cents=int64)
items = st.lists(line_items, max_size=4).map(tuple)

MESSAGES = st.one_of(
    line_items,
    st.builds(PlaceOrder, customer_id=text, items=items),
    st.builds(
        OrderView,
        order_id=text,
        customer_id=text,
        items=items,
        total_cents=int64,
        status=st.sampled_from(OrderStatus),
        placed_at=timestamps,
    ),
    st.builds(
        OrderPlaced,
        order_id=text,
        customer_id=text,
        items=items,
        total_cents=int64,
        placed_at=timestamps,
    ),
    st.builds(OrderCancelled, order_id=text, reason=text, cancelled_at=timestamps),
    st.builds(
        PaymentCaptured,
        payment_id=text,
        order_id=text,
        amount_cents=int64,
        captured_at=timestamps,
    ),
)

PROTO_OF = {
    LineItem: orders_pb2.LineItem,
    PlaceOrder: orders_pb2.PlaceOrderRequest,
    OrderView: orders_pb2.Order,
    OrderPlaced: orders_pb2.OrderPlaced,
    OrderCancelled: orders_pb2.OrderCancelled,
    PaymentCaptured: payments_pb2.PaymentCaptured,
}


@settings(max_examples=200, deadline=None)
@given(MESSAGES)
def test_every_shop_message_survives_proto_and_back(message: Message) -> None:
    m = message.proto()

    assert isinstance(m, PROTO_OF[type(message)])
    assert type(message).from_proto(m) == message


@settings(max_examples=200, deadline=None)
@given(MESSAGES)
def test_every_shop_message_survives_serialising_to_bytes_and_back(message: Message) -> None:
    proto_cls = PROTO_OF[type(message)]

    data = message.proto().SerializeToString()

    assert type(message).from_proto(proto_cls.FromString(data)) == message


def test_from_proto_fills_the_fields_without_init_when_that_is_all_init_does() -> None:
    captured = PaymentCaptured(
        payment_id="p-1",
        order_id="o-1",
        amount_cents=250,
        captured_at=dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )
    back = PaymentCaptured.from_proto(captured.proto())
    assert back == captured
    assert hash(back) == hash(captured)  # a proper frozen instance
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.order_id = "changed"  # type: ignore[misc]


def test_from_proto_still_runs_post_init() -> None:
    checked: list[str] = []

    class Checked(Event, proto=payments_pb2.PaymentCaptured, key="order_id"):
        payment_id: str
        order_id: str
        amount_cents: int
        captured_at: dt.datetime

        def __post_init__(self) -> None:
            checked.append(self.payment_id)
            if self.amount_cents < 0:
                raise ValueError("a capture is never negative")

    message = payments_pb2.PaymentCaptured(payment_id="p-2", order_id="o-2", amount_cents=-1)
    message.captured_at.FromDatetime(dt.datetime(2025, 1, 2, tzinfo=dt.UTC))
    with pytest.raises(ValueError, match="never negative"):
        Checked.from_proto(message)
    assert checked == ["p-2"]
