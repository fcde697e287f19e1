"""Keys land on the partition the Java client (and aiokafka, franz-go) would pick."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from wirebus.kafka import partitioner
from wirebus.kafka.partitioner import _murmur2_python, murmur2, partition_for

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed Java ints)
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("implementation", [murmur2, _murmur2_python])
@pytest.mark.parametrize(("key", "expected"), JAVA_VECTORS.items())
def test_murmur2_matches_the_java_client(implementation, key, expected):
    assert implementation(key) == expected & 0xFFFFFFFF


def test_the_native_hash_is_in_use():
    assert partitioner.murmur2 is partitioner._murmur2_native


@pytest.mark.parametrize("implementation", [murmur2, _murmur2_python])
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
