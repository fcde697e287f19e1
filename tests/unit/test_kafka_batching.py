"""The publisher's own batches: aiokafka's private API, contained and checked before use."""

from __future__ import annotations

import types

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.record import default_records

from wirebus.kafka.batching import OwnBatches, missing_private_api, own_batches


def test_the_installed_aiokafka_has_the_private_api_the_publisher_uses() -> None:
    assert missing_private_api(default_records) == []
    assert isinstance(own_batches(), OwnBatches)


def test_the_size_estimate_is_aiokafkas_own() -> None:
    batches = own_batches()
    assert batches is not None
    headers = [("ce_id", b"8c4a7c1e-2b6f-4a53-9d0e-3c2f1a0b9e77")]

    size = batches.estimate(b"key", b"x" * 1000, headers)

    assert size == default_records.DefaultRecordBatchBuilder.estimate_size_in_bytes(
        b"key", b"x" * 1000, headers
    )
    assert size > 1000


def test_a_missing_record_batch_builder_is_detected_and_batching_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    changed = types.SimpleNamespace()  # an aiokafka whose default_records moved on

    assert missing_private_api(changed) == ["DefaultRecordBatchBuilder"]
    assert own_batches(changed) is None
    assert "sends records one by one" in caplog.text


def test_a_builder_without_the_size_estimate_is_detected() -> None:
    class Builder:  # the class is there, the classmethod we call is not
        pass

    changed = types.SimpleNamespace(DefaultRecordBatchBuilder=Builder)

    assert missing_private_api(changed) == ["DefaultRecordBatchBuilder.estimate_size_in_bytes"]
    assert own_batches(changed) is None


async def test_a_real_producers_batches_fit() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")  # never connects
    try:
        assert OwnBatches.fits(producer) is True
    finally:
        await producer.stop()


def test_a_producer_without_batches_or_with_other_batches_does_not_fit() -> None:
    class NoBatches:
        pass

    class Batch:  # no append/close
        pass

    class OtherBatches:
        def create_batch(self) -> Batch:
            return Batch()

        async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> None:
            return None

    assert OwnBatches.fits(NoBatches()) is False
    assert OwnBatches.fits(OtherBatches()) is False


async def test_a_full_batch_refuses_the_next_record() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", max_batch_size=2048)
    batches = own_batches()
    assert batches is not None
    try:
        _, append = batches.new(producer)
        appended = [
            append(timestamp=None, key=b"k", value=b"x" * 500, headers=[]) is not None
            for _ in range(10)
        ]
    finally:
        await producer.stop()

    assert appended[0] is True
    assert appended[-1] is False
