"""The broker conformance suite (``wirebus.testing.broker_suite``) against real Kafka.

Fresh topics and groups per check, so it runs beside other engineers' tests.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

import pytest

from wirebus.broker import ConsumerPort, EventPublisher
from wirebus.codec import EventRegistry
from wirebus.kafka import KafkaConsumer, KafkaEventPublisher, ensure_topics
from wirebus.testing.broker_suite import CHECKS, BrokerCheck

pytestmark = pytest.mark.integration


class KafkaBrokerHarness:
    """``KafkaEventPublisher`` + ``KafkaConsumer`` on fresh topics of the shared broker."""

    partitions = 3

    def __init__(self, bootstrap: str, prefix: str, *, own_batches: bool = True) -> None:
        self.bootstrap, self.prefix, self.own_batches = bootstrap, prefix, own_batches
        self._names = itertools.count()

    async def topic(self) -> str:
        name = f"{self.prefix}.suite-{next(self._names)}"
        await ensure_topics(self.bootstrap, [name], partitions=self.partitions)
        return name

    def group(self) -> str:
        return f"{self.prefix}-group-{next(self._names)}"

    def publisher(
        self, registry: EventRegistry, *, source: str
    ) -> AbstractAsyncContextManager[EventPublisher]:
        return KafkaEventPublisher(
            self.bootstrap, registry, source=source, own_batches=self.own_batches
        )

    def consumer(self, *, group: str, topics: Sequence[str]) -> ConsumerPort:
        return KafkaConsumer(
            self.bootstrap, group=group, topics=topics, create_topics=False, session_timeout_ms=6000
        )


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_kafka_passes(check: BrokerCheck, bootstrap: str, fresh: str) -> None:
    await check(KafkaBrokerHarness(bootstrap, fresh))


@pytest.mark.parametrize(
    "check",
    [c for c in CHECKS if "order" in c.__name__ or "round_trips" in c.__name__],
    ids=lambda check: check.__name__,
)
async def test_kafka_through_the_public_send_path_passes(
    check: BrokerCheck, bootstrap: str, fresh: str
) -> None:
    await check(KafkaBrokerHarness(bootstrap, fresh, own_batches=False))
