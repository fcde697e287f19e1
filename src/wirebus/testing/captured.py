"""What an :class:`~wirebus.testing.AppHarness` saw: published events, dead letters, outcomes.

Each is a frozen view of one record on the in-memory broker, with the
CloudEvents attributes read from its headers, so a test asserts on exactly
what a consumer in another language would receive.

Example::

    [placed] = await harness.wait_published(OrderPlaced)
    assert placed.key == placed.event.order_id
    assert (placed.ce_type, placed.ce_source) == ("shop.orders.v1.OrderPlaced", "shop")
    [dead] = harness.dead_letters()
    assert dead.error_type == "PaymentDeclined"
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Generic, TypeVar

from ..broker import Record
from ..cloudevents import Attributes, MalformedEvent
from ..consumer import Outcome

__all__ = ["Consumed", "DeadLetter", "Published", "attributes_of"]

E = TypeVar("E")


def attributes_of(record: Record) -> Attributes | None:
    """The CloudEvents attributes of ``record``, or ``None`` if its headers are malformed."""
    try:
        return Attributes.from_headers(record.headers)
    except MalformedEvent:
        return None


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode(errors="replace")


@dataclasses.dataclass(frozen=True, slots=True)
class Published(Generic[E]):
    """One event on its topic: the decoded ``event``, its ``record`` and its ``attributes``.

    Example::

        [placed] = harness.published(OrderPlaced)
        assert placed.topic == "shop.orders.v1" and placed.key == placed.event.order_id
    """

    event: E
    record: Record
    attributes: Attributes

    @property
    def topic(self) -> str:
        return self.record.topic

    @property
    def partition(self) -> int:
        return self.record.partition

    @property
    def offset(self) -> int:
        return self.record.offset

    @property
    def key(self) -> str | None:
        """The record key as text (the aggregate id), ``None`` for an unkeyed record."""
        return _text(self.record.key)

    @property
    def ce_id(self) -> str:
        return self.attributes.id

    @property
    def ce_type(self) -> str:
        return self.attributes.type

    @property
    def ce_source(self) -> str:
        return self.attributes.source

    @property
    def ce_time(self) -> dt.datetime:
        return self.attributes.time

    @property
    def ce_subject(self) -> str | None:
        return self.attributes.subject


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of a ``<topic>.dlq`` topic, with the reasons the consumer wrote on it.

    ``attributes`` are the original event's (``None`` when its headers were
    what was wrong with it).

    Example::

        [dead] = harness.dead_letters()
        assert (dead.original_topic, dead.attempts) == ("shop.orders.v1", 3)
    """

    record: Record
    attributes: Attributes | None

    @property
    def topic(self) -> str:
        return self.record.topic

    @property
    def ce_id(self) -> str | None:
        return None if self.attributes is None else self.attributes.id

    @property
    def ce_type(self) -> str | None:
        return None if self.attributes is None else self.attributes.type

    @property
    def error_type(self) -> str:
        return _text(self.record.header("wirebus_error_type")) or ""

    @property
    def error_message(self) -> str:
        return _text(self.record.header("wirebus_error_message")) or ""

    @property
    def original_topic(self) -> str:
        return _text(self.record.header("wirebus_original_topic")) or ""

    @property
    def original_partition(self) -> int:
        return int(self.record.header("wirebus_original_partition") or b"-1")

    @property
    def original_offset(self) -> int:
        return int(self.record.header("wirebus_original_offset") or b"-1")

    @property
    def attempts(self) -> int:
        return int(self.record.header("wirebus_attempts") or b"0")


@dataclasses.dataclass(frozen=True, slots=True)
class Consumed:
    """The outcome the app's consumers reached for one record.

    ``outcome`` is one of ``handled``, ``duplicate``, ``ignored``,
    ``skipped``, ``dead_lettered``.

    Example::

        consumed = await harness.handled(placed)
        assert consumed.outcome == "handled"
    """

    record: Record
    outcome: Outcome
    attributes: Attributes | None

    @property
    def ce_id(self) -> str | None:
        return None if self.attributes is None else self.attributes.id

    def concerns(self, of: Published[object] | Record | str) -> bool:
        """Whether this is the outcome of ``of`` (a published event, a record, or a ``ce_id``)."""
        if isinstance(of, str):
            return self.ce_id == of
        record = of.record if isinstance(of, Published) else of
        mine = self.record
        return (mine.topic, mine.partition, mine.offset) == (
            record.topic,
            record.partition,
            record.offset,
        )
