"""Fuzzing the consumer: any headers and any value on a topic the shop consumes.

Hypothesis puts records on the shop's topics (over the harness's in-memory
broker, read by the same ``ConsumerRunner`` and ``EventProcessor`` as from
Kafka): CloudEvents headers valid, missing, repeated, non-UTF-8, with NUL
bytes, huge, of another spec version or an unknown type, ``None``; values
valid, mutated, random, empty or ``None``. Each record reaches exactly one
outcome, the consumer loop keeps running, a normal record put behind it on
the same partition is handled, and a dead-lettered record's DLQ copy carries
its original key and bytes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from typing import Any

import pytest
from google.protobuf import descriptor_pool
from hypothesis import given
from hypothesis import strategies as st

from examples.shop.app import app
from examples.shop.orders.messages import (
    GetOrder,
    LineItem,
    OrderPlaced,
    OrderSnapshot,
    OrderStatusChanged,
    OrderView,
    PlaceOrder,
)
from examples.shop.payments.messages import CapturePayment
from tests.fuzz.conftest import ThreadedShop
from tests.fuzz.wire import TEXT, message_bytes, settings_for
from wirebus.broker import OutgoingRecord, Record
from wirebus.cloudevents import Attributes
from wirebus.encoding import EventEncoder
from wirebus.testing import AppHarness

pytestmark = pytest.mark.fuzz

KINDS = list(app.registry())
"""The event types the shop knows, with their topics (from its registry)."""

Headers = tuple[tuple[str, bytes | None], ...]

ODD_BYTES = st.sampled_from(
    [b"", b"\x00", b"a\x00b", b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"x" * 100_000]
)
CE_NAMES = ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type",
            "ce_dataschema", "ce_subject", "traceparent", "tracestate"]  # fmt: skip


def valid_headers(ce_type: str) -> Headers:
    attributes = Attributes.new(source="fuzz", type=ce_type, subject="s")
    return tuple(attributes.headers())


@st.composite
def mutated_headers(draw: st.DrawFn, headers: Headers) -> Headers:
    """``headers`` with a few of them dropped, repeated, replaced or added."""
    out = list(headers)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "repeat", "replace", "add", "none"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "drop" and out:
            del out[at]
        elif kind == "repeat" and out:
            out.insert(at, (out[at][0], draw(st.one_of(ODD_BYTES, st.binary(max_size=20)))))
        elif kind == "replace" and out:
            out[at] = (out[at][0], draw(header_value()))
        elif kind == "none" and out:
            out[at] = (out[at][0], None)
        else:
            out.insert(at, (draw(st.one_of(st.sampled_from(CE_NAMES), TEXT)), draw(header_value())))
    return tuple(out)


def header_value() -> st.SearchStrategy[bytes]:
    return st.one_of(
        ODD_BYTES,
        st.binary(max_size=40),
        TEXT.map(str.encode),
        st.sampled_from(
            [
                b"1.0",
                b"0.3",
                b"2.0",
                b"1.0\x00",
                b"application/json",
                b"application/protobuf; charset=x",
                b"shop.orders.v1.Nope",
                b"2024-13-45T99:99:99Z",
                b"2024-05-06T07:08:09",
                b"9999-12-31T23:59:59Z",
                b"0001-01-01T00:00:00+23:59",
            ]
        ),
    )


@st.composite
def records(draw: st.DrawFn) -> OutgoingRecord:
    kind = draw(st.sampled_from(KINDS))
    headers = valid_headers(kind.full_name)
    headers = draw(st.one_of(st.just(headers), mutated_headers(headers), st.just(())))
    descriptor = descriptor_pool.Default().FindMessageTypeByName(kind.full_name)
    value = draw(st.one_of(message_bytes(descriptor), st.just(b""), st.none()))
    key = draw(st.one_of(st.none(), st.binary(max_size=12)))
    return OutgoingRecord(kind.topic, key, value, headers)  # type: ignore[arg-type]


def normal_record(topic: str, order: OrderView) -> OutgoingRecord:
    """A well-formed event on ``topic`` that the shop handles.

    On the orders topic an OrderPlaced of no stored order (the checkout saga
    starts and stops at its first step), on the payments topic a
    CapturePayment (the payments slice answers it), on the notifications
    topic an OrderStatusChanged of ``order`` (a stored order, which the
    notifications slice calls back) and on the snapshots topic an
    OrderSnapshot (the replica keeps it).
    """
    now = dt.datetime.now(dt.UTC)
    order_id = f"fuzz-{uuid.uuid4()}"
    events: list[Any] = [
        OrderPlaced(order_id=order_id, customer_id="c", items=(), total_cents=1, placed_at=now),
        CapturePayment(order_id=order_id, customer_id="c", amount_cents=1),
        OrderStatusChanged(order_id=order.order_id, status=order.status, changed_at=now),
        OrderSnapshot(order=dataclasses.replace(order, order_id=order_id), changed_at=now),
    ]
    registry = app.registry()
    by_topic = {registry.by_type(type(e)).topic: e for e in events}  # type: ignore[union-attr]
    assert topic in by_topic, f"no normal record for {topic}: add one the shop handles"
    return EventEncoder(registry, source="fuzz").record(by_topic[topic])


async def placed_order(harness: AppHarness) -> OrderView:
    """An order placed through the shop, as stored (the notifications slice reads it)."""
    item = LineItem(sku="fuzz", quantity=1, price_cents=1)
    ref = await harness.send(PlaceOrder(customer_id="fuzz", items=(item,)))
    return await harness.send(GetOrder(order_id=ref.order_id))


def dead_letter_of(shop: ThreadedShop, record: Record) -> Record:
    """The DLQ copy of ``record`` (by its original topic, partition and offset)."""
    position = (record.topic.encode(), str(record.partition).encode(), str(record.offset).encode())
    for dead in shop.harness.dead_letters(record.topic):
        if (
            dead.record.header("wirebus_original_topic"),
            dead.record.header("wirebus_original_partition"),
            dead.record.header("wirebus_original_offset"),
        ) == position:
            return dead.record
    raise AssertionError(f"no DLQ copy of {record.topic}[{record.partition}]@{record.offset}")


def test_any_record_reaches_one_outcome_and_the_partition_goes_on(
    shop: ThreadedShop, fuzz_examples: int, figures: list[str]
) -> None:
    harness = shop.harness
    outcomes: dict[str, int] = {}
    order = shop.run(lambda: placed_order(harness))

    async def deliver(*outgoing: OutgoingRecord) -> list[Any]:
        stored = await harness.deliver_records(outgoing)
        return [(r, (await harness.settled(r)).outcome) for r in stored]

    @settings_for(fuzz_examples)
    @given(records())
    def any_record(garbage: OutgoingRecord) -> None:
        (record, outcome), (normal, normal_outcome) = shop.run(
            lambda: deliver(garbage, normal_record(garbage.topic, order))
        )
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        assert harness.outcomes(record) == [outcome]  # exactly one
        assert normal_outcome == "handled", f"the record after {garbage!r} was {normal_outcome}"
        assert (normal.topic, normal.partition) == (record.topic, record.partition)
        if outcome == "dead_lettered":
            dead = dead_letter_of(shop, record)
            assert (dead.key, dead.value) == (record.key, record.value or b"")

    started = time.monotonic()
    any_record()
    elapsed = time.monotonic() - started
    examples = sum(outcomes.values())
    figures.append(
        f"fuzz consumer: {examples} records in {elapsed:.1f}s ({examples / elapsed:.0f}/s);"
        f" {dict(sorted(outcomes.items()))}"
    )
    assert {"handled", "dead_lettered"} <= outcomes.keys()
