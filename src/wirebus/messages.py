"""Message bases: ``Command``, ``Query``, ``Event`` and plain ``Message`` values.

A subclass is made a frozen, slotted, keyword-only dataclass automatically and
is bound to a generated protobuf class by naming it as the last type argument
(``Message[P]``, ``Event[P]``, ``Command[R, P]``, ``Query[R, P]``), which also
types ``proto() -> P`` and ``from_proto(m: P) -> Self`` for mypy. The
``proto=`` class keyword binds as well (and must agree with the type argument
when both are given); without a type argument ``proto()`` is typed with the
base ``google.protobuf.message.Message``.

Binding checks every field against the proto when the class is defined and
compiles ``proto()`` / ``from_proto()`` once; define either method in the
class body to write it by hand instead.

Example::

    from wirebus import Command, Message
    from shop.orders.v1 import orders_pb2

    class LineItem(Message[orders_pb2.LineItem]):
        sku: str
        quantity: int
        price_cents: int

    class PlaceOrder(Command["OrderRef", orders_pb2.PlaceOrderRequest]):
        customer_id: str
        items: tuple[LineItem, ...]

    cmd = PlaceOrder.from_proto(orders_pb2.PlaceOrderRequest(customer_id="c1"))
    request: orders_pb2.PlaceOrderRequest = cmd.proto()   # typed, no cast
    assert PlaceOrder.from_proto(request) == cmd
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Self, dataclass_transform

from google.protobuf.message import Message as ProtoMessage
from typing_extensions import TypeVar

from ._convert import Converter, compile_converter
from .errors import ConfigurationError

__all__ = ["Command", "Event", "Message", "ProtoMessage", "Query", "Request"]

R = TypeVar("R")
# Covariant so that a PlaceOrder (a Request[OrderRef, PlaceOrderRequest]) is a
# Request[OrderRef] wherever the library takes one (``Mediator.send``).
P = TypeVar("P", bound=ProtoMessage, default=ProtoMessage, covariant=True)


@dataclass_transform(frozen_default=True, kw_only_default=True)
class _MessageMeta(type):
    """Turns each subclass into a frozen, slotted, keyword-only dataclass."""

    def __new__(
        mcls,
        name: str,
        bases: tuple[type, ...],
        namespace: dict[str, Any],
        *,
        proto: type[ProtoMessage] | None = None,
        key: str | None = None,
        topic: str | None = None,
        compacted: bool = False,
        **kwargs: Any,
    ) -> _MessageMeta:
        cls = super().__new__(mcls, name, bases, namespace, **kwargs)
        # dataclass(slots=True) re-creates the class through this metaclass
        # with its fields already processed: let that pass through untouched.
        if "__dataclass_fields__" in namespace or namespace.get("__wirebus_base__"):
            return cls
        cls = typing.cast(
            _MessageMeta, dataclasses.dataclass(frozen=True, slots=True, kw_only=True)(cls)
        )
        proto = _agreed_proto(cls, proto, namespace.get("__orig_bases__", ()))
        if key is not None or topic is not None or compacted:
            _declare_routing(cls, key, topic, proto, compacted=compacted)
        if proto is not None:
            # sys._getframe(1) runs the class statement: its locals let
            # classes defined inside functions name each other in annotations.
            _bind(cls, proto, namespace, dict(sys._getframe(1).f_locals))
        return cls


def _agreed_proto(
    cls: type, keyword: type[ProtoMessage] | None, orig_bases: tuple[Any, ...]
) -> type[ProtoMessage] | None:
    """The class bound by ``proto=`` or by the ``P`` type argument; both must agree."""
    argument = None
    for base in orig_bases:
        params = getattr(typing.get_origin(base), "__parameters__", ())
        args = typing.get_args(base)
        if P in params and params.index(P) < len(args):
            arg = args[params.index(P)]
            if isinstance(arg, type) and issubclass(arg, ProtoMessage) and arg is not ProtoMessage:
                argument = arg
    if keyword is not None and argument is not None and keyword is not argument:
        raise ConfigurationError(
            f"{cls.__qualname__}: proto={keyword.__qualname__} disagrees with the type"
            f" argument {argument.__qualname__}; name one protobuf class"
        )
    return keyword or argument


def _declare_routing(
    cls: type,
    key: str | None,
    topic: str | None,
    proto: type[ProtoMessage] | None,
    *,
    compacted: bool,
) -> None:
    if not any(getattr(b, "__name__", "") == "Event" for b in cls.__mro__[1:]):
        raise ConfigurationError(
            f"{cls.__qualname__}: key= and topic= are for Event subclasses (compacted= too)"
        )
    if compacted and key is None:
        raise ConfigurationError(
            f"{cls.__qualname__}: compacted=True keeps the latest record per key: give it key="
        )
    names = {f.name for f in dataclasses.fields(cls)}
    if key is not None and key.partition(".")[0] not in names:
        raise ConfigurationError(
            f"{cls.__qualname__}: key={key!r} names no field (fields: {', '.join(sorted(names))})"
        )
    if key is not None and proto is not None:
        problem = _key_path_problem(proto, key)
        if problem:
            raise ConfigurationError(f"{cls.__qualname__}: key={key!r} {problem}")
    if topic is not None and not topic:
        raise ConfigurationError(f"{cls.__qualname__}: topic= must not be empty")
    cls.__wirebus_key__ = key  # type: ignore[attr-defined]
    cls.__wirebus_topic__ = topic  # type: ignore[attr-defined]
    cls.__wirebus_compacted__ = compacted  # type: ignore[attr-defined]


def _key_path_problem(proto: type[ProtoMessage], key: str) -> str | None:
    """Why ``key`` (``order_id`` or a dotted ``order.order_id``) is no scalar of ``proto``."""
    message: Any = proto.DESCRIPTOR  # None once the path reaches a scalar
    for part in key.split("."):
        if message is None:
            return f"goes inside {part!r}, which is not a message"
        field = message.fields_by_name.get(part)
        if field is None:
            return f"names no field of {message.full_name} ({part!r})"
        message = field.message_type
    if message is not None:
        return f"names the message {message.full_name}: name a field inside it"
    return None


def _bind(
    cls: type, proto: type[ProtoMessage], namespace: dict[str, Any], localns: dict[str, Any]
) -> None:
    if not (isinstance(proto, type) and issubclass(proto, ProtoMessage)):
        raise ConfigurationError(
            f"{cls.__qualname__}: proto= takes a generated protobuf message class, not {proto!r}"
        )
    cls.__wirebus_proto__ = proto  # type: ignore[attr-defined]
    to_proto: Callable[[Any], ProtoMessage] | None = namespace.get("proto")
    has_from = "from_proto" in namespace
    if to_proto is None or not has_from:
        compiled = compile_converter(cls, proto, localns=localns)
        if to_proto is None:
            to_proto = compiled.to_proto
            cls.proto = to_proto  # type: ignore[attr-defined]
        if not has_from:
            # The compiled function already knows its class: bind it as is.
            cls.from_proto = staticmethod(compiled.from_proto)  # type: ignore[attr-defined]
    # The effective pair, hand-written or compiled: what nesting and the
    # gateway call, so a hand-written method is never bypassed.
    cls.__wirebus_converter__ = Converter(  # type: ignore[attr-defined]
        to_proto=to_proto,
        from_proto=cls.from_proto,  # type: ignore[attr-defined]
    )


class Message(Generic[P], metaclass=_MessageMeta):
    """A value object; bound to its protobuf class ``P`` it converts both ways.

    Example::

        class LineItem(Message[orders_pb2.LineItem]):
            sku: str
            quantity: int
            price_cents: int
    """

    __slots__ = ()
    __wirebus_base__: ClassVar[bool] = True
    __wirebus_proto__: ClassVar[type[ProtoMessage] | None] = None

    def proto(self) -> P:
        """This value as its bound protobuf message."""
        raise ConfigurationError(f"{type(self).__qualname__} is not bound to a protobuf class")

    # A constructor, like __init__: P in a parameter does not break covariance.
    @classmethod
    def from_proto(cls, message: P) -> Self:  # type: ignore[misc]
        """Build this class from its bound protobuf message."""
        raise ConfigurationError(f"{cls.__qualname__} is not bound to a protobuf class")


class Request(Message[P], Generic[R, P]):
    """Base of commands and queries; ``R`` is what the handler returns, ``P`` the proto."""

    __slots__ = ()
    __wirebus_base__ = True


class Command(Request[R, P]):
    """A request to change state; its handler may emit events.

    Example::

        class CancelOrder(Command[None, orders_pb2.CancelOrderRequest]):
            order_id: str
            reason: str = ""
    """

    __slots__ = ()
    __wirebus_base__ = True


class Query(Request[R, P]):
    """A request to read state; it changes nothing and emits no events.

    Example::

        class GetOrder(Query[OrderView, orders_pb2.GetOrderRequest]):
            order_id: str
    """

    __slots__ = ()
    __wirebus_base__ = True


class Event(Message[P]):
    """Something that happened; handled by zero or more event handlers.

    ``key=`` names the field whose value keys the Kafka record (one
    aggregate's events stay in order on one partition), or a dotted path to a
    field of a nested message (``order.order_id``); ``topic=`` overrides
    the default topic, which is the proto package (``shop.orders.v1``).
    ``compacted=True`` says the topic keeps the latest record per key
    (``cleanup.policy=compact``, for state-transfer events): wirebus creates
    it so when it creates the topic. ``wirebus describe`` lists each event's
    topic, key and where the topic comes from.

    Example::

        class OrderPlaced(Event[orders_pb2.OrderPlaced], key="order_id"):
            order_id: str
            total_cents: int

        class OrderSnapshot(
            Event[orders_pb2.OrderSnapshot],
            topic="shop.orders.v1.snapshots",
            key="order.order_id",
            compacted=True,
        ):
            order: OrderView
    """

    __slots__ = ()
    __wirebus_base__ = True
    __wirebus_key__: ClassVar[str | None] = None
    __wirebus_topic__: ClassVar[str | None] = None
    __wirebus_compacted__: ClassVar[bool] = False


def proto_class_of(tp: type) -> type[ProtoMessage] | None:
    """The protobuf class a message type travels as, or ``None`` if it has none."""
    if issubclass(tp, ProtoMessage):
        return tp
    bound: type[ProtoMessage] | None = getattr(tp, "__wirebus_proto__", None)
    return bound


def converter_of(tp: type) -> Converter | None:
    """The compiled converter of a bound message class, if it has one."""
    conv: Converter | None = getattr(tp, "__wirebus_converter__", None)
    return conv
