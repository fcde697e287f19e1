"""Keys land on the partition the Java client (and aiokafka, franz-go) would pick."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from wirebus.brokers.memory import InMemoryBroker
from wirebus.brokers.partitioner import (
    NATIVE_MURMUR2,
    key_partition,
    murmur2,
    murmur2_python,
    partition_for,
)

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed Java ints)
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("implementation", [murmur2, murmur2_python])
@pytest.mark.parametrize(("key", "expected"), JAVA_VECTORS.items())
def test_murmur2_matches_the_java_client(implementation, key, expected):
    assert implementation(key) == expected & 0xFFFFFFFF


def test_the_native_hash_is_in_use():
    assert NATIVE_MURMUR2


@pytest.mark.parametrize("implementation", [murmur2, murmur2_python])
def test_murmur2_matches_aiokafka_for_every_tail_length(implementation):
    rng = random.Random(7)
    for length in range(80):
        for _ in range(5):
            data = rng.randbytes(length)
            assert implementation(data) == aiokafka_murmur2(data) & 0xFFFFFFFF


def test_partition_for_matches_aiokafkas_default_partitioner():
    rng = random.Random(11)
    for count in (1, 3, 7, 12):
        partitions = list(range(count))
        for _ in range(200):
            key = rng.randbytes(rng.randrange(1, 40))
            assert partition_for(key, partitions) == DefaultPartitioner()(
                key, partitions, partitions
            )


def test_a_record_without_key_goes_to_one_of_the_partitions():
    assert {partition_for(None, [0, 1, 2]) for _ in range(200)} == {0, 1, 2}


def java_partition(key: bytes, partitions: int) -> int:
    """What the Java client's DefaultPartitioner computes: toPositive(murmur2) % n."""
    return (JAVA_VECTORS[key] & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("partitions", [1, 2, 3, 5, 12])
def test_key_partition_is_the_java_clients_partition(partitions):
    for key in JAVA_VECTORS:
        assert key_partition(key, partitions) == java_partition(key, partitions)


@pytest.mark.parametrize("partitions", [2, 3, 5, 12])
async def test_the_in_memory_broker_puts_keys_on_the_java_clients_partition(partitions):
    from wirebus.broker import OutgoingRecord

    broker = InMemoryBroker(partitions=partitions)
    keys = list(JAVA_VECTORS)

    stored = await broker.append([OutgoingRecord("t", key, b"v", ()) for key in keys])

    assert [r.partition for r in stored] == [java_partition(k, partitions) for k in keys]
    assert [broker.partition_for(k) for k in keys] == [java_partition(k, partitions) for k in keys]


def test_the_old_kafka_module_still_exports_the_partitioner():
    from wirebus.kafka import partitioner as moved

    assert moved.partition_for is partition_for
    assert moved.murmur2 is murmur2
