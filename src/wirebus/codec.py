"""The event registry: how each event type travels, keyed by protobuf full name.

Message identity on the wire is the protobuf full name
(``shop.orders.v1.OrderPlaced``), never a Python class name. Each registered
type gets, once, an encoder (event -> bytes), a decoder (bytes -> event), its
topic and its key getter:

- ``Event`` dataclasses bound with ``proto=`` encode through their compiled
  converter and upb (the default codec);
- generated ``google.protobuf`` classes encode directly;
- betterproto classes (``betterproto.Message``) encode with ``bytes(m)`` and
  decode with ``parse``; give their ``full_name`` since betterproto classes do
  not carry it.

Example::

    registry = EventRegistry()
    registry.add(OrderPlaced)                       # topic shop.orders.v1, key order_id
    registry.add(BpOrderPlaced, full_name="shop.orders.v1.OrderPlaced")
    kind = registry.by_name("shop.orders.v1.OrderPlaced")
"""

from __future__ import annotations

import dataclasses
import operator
import sys
from collections.abc import Callable, Iterator
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from .errors import ConfigurationError
from .messages import converter_of

__all__ = ["EventRegistry", "EventType", "type_url"]


def type_url(full_name: str) -> str:
    """The ``Any`` type URL of a message, used as CloudEvents ``dataschema``."""
    return f"type.googleapis.com/{full_name}"


@dataclasses.dataclass(frozen=True, slots=True)
class EventType:
    """How one event type travels: its name, topic, key and codec."""

    full_name: str
    python_type: type
    topic: str
    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]
    key: Callable[[Any], str] | None = None
    key_field: str | None = None
    topic_declared: bool = False
    """Whether ``topic`` was declared (``topic=``) rather than derived from the package."""
    compacted: bool = False
    """Whether the topic keeps the latest record per key (``cleanup.policy=compact``)."""

    @property
    def dataschema(self) -> str:
        """The CloudEvents ``dataschema``: the message's type URL."""
        return type_url(self.full_name)  # encoders cache the encoded headers per type

    def key_bytes(self, event: Any) -> bytes | None:
        """The Kafka record key of ``event`` (``None``: no key declared)."""
        return None if self.key is None else self.key(event).encode()


class EventRegistry:
    """Event types of one app by full name and by Python type (no globals)."""

    def __init__(self) -> None:
        self._by_name: dict[str, list[EventType]] = {}
        self._by_type: dict[type, EventType] = {}
        self._frozen = False

    def freeze(self) -> None:
        """Refuse further registrations (an app's registry is read-only once built)."""
        self._frozen = True

    def add(
        self,
        python_type: type,
        *,
        topic: str | None = None,
        key: str | None = None,
        full_name: str | None = None,
    ) -> EventType:
        """Register ``python_type``; idempotent for the same type and settings."""
        if self._frozen and python_type not in self._by_type:
            raise ConfigurationError(
                f"cannot register {python_type.__qualname__}: this registry is frozen"
                " (an app's events are fixed when it is built: add it to App(events=[...]))"
            )
        kind = _event_type(python_type, topic=topic, key=key, full_name=full_name)
        existing = self._by_type.get(python_type)
        if existing is not None:
            settings = (existing.topic, existing.full_name, existing.key_field)
            if settings != (kind.topic, kind.full_name, kind.key_field):
                raise ConfigurationError(
                    f"{python_type.__qualname__} is registered twice with different settings"
                )
            return existing
        self._by_type[python_type] = kind
        # Several Python types may travel as one name (a slice's dataclass,
        # another slice's dataclass, the raw proto class): consumers decode a
        # record into each of them that has handlers.
        self._by_name.setdefault(kind.full_name, []).append(kind)
        return kind

    def by_name(self, full_name: str) -> EventType | None:
        """The first type registered for ``full_name``, if any."""
        kinds = self._by_name.get(full_name)
        return kinds[0] if kinds else None

    def all_by_name(self, full_name: str) -> tuple[EventType, ...]:
        """Every Python type that travels as ``full_name``, in registration order."""
        return tuple(self._by_name.get(full_name, ()))

    def by_type(self, python_type: type) -> EventType | None:
        """The registration of a Python type, if any (a lookup never registers)."""
        return self._by_type.get(python_type)

    def __iter__(self) -> Iterator[EventType]:
        return iter(self._by_type.values())

    def __len__(self) -> int:
        return len(self._by_type)

    @property
    def topics(self) -> frozenset[str]:
        """Every topic an event of this registry travels on."""
        return frozenset(t.topic for t in self._by_type.values())

    @property
    def topic_configs(self) -> dict[str, dict[str, str]]:
        """Kafka configs of the topics that need some (compacted ones), to create them with."""
        return {
            t.topic: {"cleanup.policy": "compact"} for t in self._by_type.values() if t.compacted
        }


def _event_type(
    tp: type, *, topic: str | None, key: str | None, full_name: str | None
) -> EventType:
    key = key if key is not None else getattr(tp, "__wirebus_key__", None)
    topic = topic if topic is not None else getattr(tp, "__wirebus_topic__", None)
    compacted = bool(getattr(tp, "__wirebus_compacted__", False))
    key_getter = _key_getter(tp, key) if key else None
    conv = converter_of(tp)
    if conv is not None:
        proto: type[ProtoMessage] = tp.__wirebus_proto__  # type: ignore[attr-defined]
        name = proto.DESCRIPTOR.full_name
        parse, to_proto, from_proto = proto.FromString, conv.to_proto, conv.from_proto
        return EventType(
            full_name=_check_name(tp, name, full_name),
            python_type=tp,
            topic=topic or _package_topic(name),
            encode=lambda e: to_proto(e).SerializeToString(),
            decode=lambda b: from_proto(parse(b)),
            key=key_getter,
            key_field=key,
            topic_declared=bool(topic),
            compacted=compacted,
        )
    if isinstance(tp, type) and issubclass(tp, ProtoMessage):
        name = tp.DESCRIPTOR.full_name
        return EventType(
            full_name=_check_name(tp, name, full_name),
            python_type=tp,
            topic=topic or _package_topic(name),
            encode=tp.SerializeToString,
            decode=tp.FromString,
            key=key_getter,
            key_field=key,
            topic_declared=bool(topic),
            compacted=compacted,
        )
    if _is_betterproto(tp):
        if not full_name:
            raise ConfigurationError(
                f"{tp.__qualname__} is a betterproto class: give its protobuf full_name="
            )
        return EventType(
            full_name=full_name,
            python_type=tp,
            topic=topic or _package_topic(full_name),
            encode=bytes,
            decode=lambda b: tp().parse(b),  # type: ignore[attr-defined]
            key=key_getter,
            key_field=key,
            topic_declared=bool(topic),
            compacted=compacted,
        )
    raise ConfigurationError(
        f"{tp.__qualname__} cannot travel: bind it to a protobuf class with proto=,"
        " or register a generated protobuf or betterproto class"
    )


def _check_name(tp: type, actual: str, given: str | None) -> str:
    if given is not None and given != actual:
        raise ConfigurationError(f"{tp.__qualname__} is {actual}, not {given}")
    return actual


def _package_topic(full_name: str) -> str:
    package, _, _ = full_name.rpartition(".")
    return package or full_name


def _key_getter(tp: type, key: str) -> Callable[[Any], str]:
    fields = getattr(tp, "__dataclass_fields__", None)
    if fields is None and isinstance(tp, type) and issubclass(tp, ProtoMessage):
        fields = tp.DESCRIPTOR.fields_by_name
    if fields is not None and key.partition(".")[0] not in fields:
        raise ConfigurationError(f"{tp.__qualname__}: key={key!r} names no field")
    get = operator.attrgetter(key)  # a dotted key reads a nested field
    return lambda event: str(get(event))


def _is_betterproto(tp: type) -> bool:
    betterproto = sys.modules.get("betterproto")
    return betterproto is not None and isinstance(tp, type) and issubclass(tp, betterproto.Message)


def declared_travelling(tp: type) -> bool:
    """Whether ``tp`` is an ``Event`` bound to a protobuf class (so it must travel)."""
    from .messages import Event

    return isinstance(tp, type) and issubclass(tp, Event) and converter_of(tp) is not None
