"""The broker conformance suite (``wirebus.testing.broker_suite``) against ``InMemoryBroker``."""

from __future__ import annotations

import pytest

from wirebus.testing.broker_suite import CHECKS, BrokerCheck, InMemoryBrokerHarness


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_the_in_memory_broker_passes(check: BrokerCheck) -> None:
    await check(InMemoryBrokerHarness())


@pytest.mark.parametrize("partitions", [1, 4])
async def test_the_in_memory_broker_passes_with_other_partition_counts(partitions: int) -> None:
    from wirebus.brokers.memory import InMemoryBroker

    for check in CHECKS:
        await check(InMemoryBrokerHarness(InMemoryBroker(partitions=partitions)))


class ReorderingBroker(InMemoryBrokerHarness):
    """A broken adapter: its publisher sends each call's records in reverse."""

    def publisher(self, registry, *, source):  # type: ignore[no-untyped-def, override]
        import contextlib

        inner = self.broker.publisher(registry, source=source)

        class Reversing:
            async def send_records(self, records):  # type: ignore[no-untyped-def]
                await inner.send_records(list(reversed(records)))

        return contextlib.nullcontext(Reversing())


async def test_the_suite_catches_a_broker_that_breaks_per_key_order() -> None:
    from wirebus.testing.broker_suite import one_keys_records_stay_in_order_on_one_partition

    with pytest.raises(AssertionError, match="arrived as"):
        await one_keys_records_stay_in_order_on_one_partition(ReorderingBroker())


async def test_the_suite_catches_a_consumer_that_ignores_commits() -> None:
    from wirebus.testing.broker_suite import (
        a_new_consumer_of_the_group_resumes_from_committed_offsets,
    )

    class Forgetful(InMemoryBrokerHarness):
        def consumer(self, *, group, topics):  # type: ignore[no-untyped-def, override]
            port = self.broker.consumer(group=group, topics=topics)

            async def commit(offsets):  # type: ignore[no-untyped-def]
                return None

            port.commit = commit  # type: ignore[method-assign]
            return port

    with pytest.raises(AssertionError, match="committed records came back"):
        await a_new_consumer_of_the_group_resumes_from_committed_offsets(Forgetful())
