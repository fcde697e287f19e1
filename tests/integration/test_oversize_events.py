"""The commit-time size limit is exactly the one Kafka's producer enforces (real Kafka).

The unit of work refuses an event whose record is over
``wirebus.outbox.rows.MAX_RECORD_BYTES`` (issue 12, defect 4). That limit
is only right if a record the outbox accepts is one the producer sends and
the broker stores, and a record it refuses is one the producer would refuse.
"""

from __future__ import annotations

import datetime as dt

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from tests.integration.conftest import read_records
from wirebus.broker import OutgoingRecord, PublishError
from wirebus.codec import EventRegistry
from wirebus.errors import EventTooLarge
from wirebus.kafka import KafkaEventPublisher, ensure_topics
from wirebus.outbox.rows import MAX_RECORD_BYTES, record_size, row_from_record

HEADERS = (
    ("ce_specversion", b"1.0"),
    ("ce_id", b"0190a8a2-2f3c-7d1e-9a4b-5c6d7e8f9a0b"),
    ("ce_type", b"shop.orders.v1.OrderPlaced"),
    ("ce_source", b"shop"),
    ("content-type", b"application/protobuf"),
)


def sized(topic: str, total: int, key: bytes = b"o-1") -> OutgoingRecord:
    """A record of ``topic`` whose size, as the producer counts it, is ``total`` bytes."""
    value = b"v" * (total - record_size(key, b"", HEADERS))
    for _ in range(3):  # the value's length prefix grows with the value
        value = b"v" * (len(value) + total - record_size(key, value, HEADERS))
    record = OutgoingRecord(topic, key, value, HEADERS)
    assert record_size(key, value, HEADERS) == total
    return record


@pytest.mark.parametrize(
    ("key", "value", "headers"),
    [
        (None, b"", []),
        (b"o-1", b"x" * 127, [("a", b"")]),
        (b"k" * 300, b"x" * 20_000, list(HEADERS)),
        (b"o-2", b"x" * 1_200_000, [*HEADERS, ("ce_subject", "ö".encode() * 100)]),
    ],
)
def test_record_size_is_aiokafkas_estimate_the_producer_compares_with_its_limit(
    key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    expected = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
    assert record_size(key, value, headers) == expected


async def test_a_record_at_the_limit_is_published_and_one_byte_more_is_refused_as_at_commit(
    bootstrap: str, fresh: str
) -> None:
    topic = f"{fresh}.big"
    await ensure_topics(bootstrap, [topic], partitions=1)
    at_limit, over = sized(topic, MAX_RECORD_BYTES), sized(topic, MAX_RECORD_BYTES + 1, b"o-2")
    now = dt.datetime.now(dt.UTC)
    assert row_from_record(at_limit, now)["value"] == at_limit.value  # accepted at commit
    with pytest.raises(EventTooLarge):
        row_from_record(over, now)  # refused at commit

    async with KafkaEventPublisher(bootstrap, EventRegistry(), source="it") as publisher:
        assert publisher.max_record_bytes == MAX_RECORD_BYTES
        sent, refused = await publisher.send_records_settled([at_limit, over])

    assert sent is None  # the producer sent it and the broker stored it
    assert isinstance(refused, PublishError)
    assert not refused.retriable  # the producer refused it: too large, for good
    [stored] = await read_records(bootstrap, topic, 1)
    assert stored.value == at_limit.value
