"""Moved to :mod:`wirebus.brokers.partitioner` (broker-neutral); kept for importers.

Example::

    from wirebus.brokers.partitioner import partition_for
"""

from __future__ import annotations

from ..brokers.partitioner import NATIVE_MURMUR2, key_partition, murmur2, partition_for

__all__ = ["NATIVE_MURMUR2", "key_partition", "murmur2", "partition_for"]
