"""``KafkaConsumer``: the aiokafka consumer behind the ``ConsumerPort``.

Auto-commit is off: the runner commits offsets only after their records
reached an outcome. On rebalance, ``on_partitions_revoked`` waits for the
runner's lock, so the batch in hand finishes and its offsets are committed
before the partitions are given up. A group with no committed offsets starts
at the earliest offset (``start_at="latest"``: only new records).

Example::

    port = KafkaConsumer("127.0.0.1:9092", group="payments", topics=["shop.orders.v1"])
    async with ConsumerRunner(port, processor) as runner:
        await runner.run()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from ..broker import Record
from ..broker import TopicPartition as TP
from ..errors import ConfigurationError, ConsumeError
from ..kafka_security import PLAINTEXT, KafkaSecurity

__all__ = ["KafkaConsumer", "ensure_topics"]

log = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap_servers: str,
    topics: Iterable[str],
    *,
    partitions: int = 3,
    replication: int = 1,
    security: KafkaSecurity | None = None,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    ready_within: float = 30.0,
) -> None:
    """Create the topics that do not exist yet (existing ones are left as they are).

    ``configs`` gives topic configs by topic name, used when creating it
    (``{"shop.orders.v1.snapshots": {"cleanup.policy": "compact"}}``).
    Returns once the broker's metadata lists the created topics' partitions with a
    leader (at most ``ready_within`` seconds, then a warning), so a consumer that
    subscribes next is assigned them.
    """
    wanted = sorted(set(topics))
    if not wanted:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, **(security or PLAINTEXT).client_options()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            new = [
                NewTopic(
                    t,
                    num_partitions=partitions,
                    replication_factor=replication,
                    topic_configs=dict((configs or {}).get(t, {})),
                )
                for t in missing
            ]
            # Another process may create them at the same moment: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
            await _until_in_metadata(admin, missing, within=ready_within)
    finally:
        await admin.close()


async def _until_in_metadata(admin: AIOKafkaAdminClient, topics: list[str], within: float) -> None:
    """Until the broker's metadata lists every partition of ``topics`` with a leader.

    CreateTopics answers before the brokers' metadata has the new topics: a
    consumer that joined its group in between was assigned none of their
    partitions until its next metadata refresh (aiokafka's, every 5 minutes).
    """
    deadline = time.monotonic() + within
    while True:
        ready = {t["topic"] for t in await admin.describe_topics(topics) if _has_leaders(t)}
        if ready >= set(topics):
            return
        if time.monotonic() > deadline:
            log.warning("topics %s not in the broker's metadata after %.0f s", topics, within)
            return
        await asyncio.sleep(0.05)


def _has_leaders(topic: Mapping[str, Any]) -> bool:
    partitions = topic["partitions"]
    return (
        topic["error_code"] == 0
        and bool(partitions)
        and all(p["error_code"] == 0 and p["leader"] >= 0 for p in partitions)
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KafkaConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        lock = self.owner._lock
        if lock is not None:
            async with lock:  # the runner commits under this lock before we give up
                pass
        if revoked:  # the first join revokes nothing: no line for it
            log.info("partitions revoked: %s", sorted(str(tp) for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned: %s", sorted(str(tp) for tp in assigned))


class KafkaConsumer:
    """One member of a consumer group, for :class:`~wirebus.consumer.ConsumerRunner`."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        group: str,
        topics: Sequence[str],
        max_records: int = 500,
        create_topics: bool = True,
        partitions: int = 3,
        session_timeout_ms: int = 10_000,
        max_poll_interval_ms: int = 300_000,
        start_at: Literal["earliest", "latest"] = "earliest",
        security: KafkaSecurity | None = None,
        topic_configs: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        if not group:
            raise ConfigurationError("a consumer needs a group")
        if not topics:
            raise ConfigurationError("a consumer needs at least one topic")
        self.bootstrap_servers = bootstrap_servers
        self.group = group
        self.topics = list(topics)
        self.max_records = max_records
        self.create_topics = create_topics
        self.partitions = partitions
        self.topic_configs = dict(topic_configs or {})
        """Configs of the topics it creates, by name (``create_topics``)."""
        self._lock: asyncio.Lock | None = None
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=start_at,  # only for a group with no committed offsets
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=max(1000, session_timeout_ms // 3),
            max_poll_interval_ms=max_poll_interval_ms,
            **(security or PLAINTEXT).client_options(),
        )
        self.security = security
        self._started = False

    def guard_rebalance(self, lock: asyncio.Lock) -> None:
        self._lock = lock

    async def start(self) -> None:
        """Create missing topics, join the group and subscribe; ``ConsumeError`` if it cannot."""
        try:
            if self.create_topics:
                await ensure_topics(
                    self.bootstrap_servers,
                    self.topics,
                    partitions=self.partitions,
                    security=self.security,
                    configs=self.topic_configs,
                )
            await self._consumer.start()
        except KafkaError as exc:
            await self._consumer.stop()  # release its client: nothing to leak on failure
            what = f"cannot join {self.group!r} at {self.bootstrap_servers}"
            raise _consume_error(what, exc) from exc
        self._started = True
        self._consumer.subscribe(self.topics, listener=_Listener(self))

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._consumer.stop()

    async def fetch(self, wait: float) -> Mapping[TP, Sequence[Record]]:
        """The next records per partition; ``ConsumeError`` if the broker refuses the read."""
        try:
            batch = await self._consumer.getmany(
                timeout_ms=int(wait * 1000), max_records=self.max_records
            )
        except KafkaError as exc:
            raise _consume_error(f"fetching for {self.group!r} failed", exc) from exc
        return {
            (tp.topic, tp.partition): _records(tp.topic, tp.partition, messages)
            for tp, messages in batch.items()
            if messages
        }

    async def commit(self, offsets: Mapping[TP, int]) -> None:
        try:
            await self._consumer.commit({TopicPartition(t, p): o for (t, p), o in offsets.items()})
        except KafkaError as exc:
            # Lost the partitions in a rebalance: the new owner re-reads from
            # the last commit, so these records are delivered again (the inbox
            # drops the duplicates). Nothing is lost.
            log.warning("commit of %s failed: %s", dict(offsets), exc)

    async def seek(self, partition: TP, offset: int) -> None:
        tp = TopicPartition(*partition)
        if tp in self._consumer.assignment():
            self._consumer.seek(tp, offset)

    async def end_offsets(self) -> Mapping[TP, int]:
        """End offsets of every partition of the subscribed topics (a topic not there: none)."""
        try:
            existing = await self._consumer.topics()  # fresh metadata of every topic
            partitions = [
                TopicPartition(topic, p)
                for topic in self.topics
                if topic in existing
                for p in sorted(await self._partitions_of(topic))
            ]
            ends = await self._consumer.end_offsets(partitions) if partitions else {}
        except KafkaError as exc:
            raise _consume_error(f"reading the end offsets of {self.topics}", exc) from exc
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    async def lag(self) -> Mapping[TP, int]:
        """Records not yet committed by the group, per partition assigned to this member.

        End offset (the highwater mark of the last fetch: no extra request;
        asked from the broker until a fetch saw the partition) minus the
        group's committed offset (its first offset when none is committed).
        For a sampler every few seconds (``wirebus.lag``), not per record.
        """
        consumer = self._consumer
        try:
            lags: dict[TP, int] = {}
            for tp in sorted(consumer.assignment()):
                end = consumer.highwater(tp)
                if end is None:
                    end = (await consumer.end_offsets([tp]))[tp]
                committed = await consumer.committed(tp)
                if committed is None:
                    committed = (await consumer.beginning_offsets([tp]))[tp]
                lags[(tp.topic, tp.partition)] = max(0, end - committed)
        except KafkaError as exc:
            raise _consume_error(f"reading the lag of {self.group!r}", exc) from exc
        return lags

    async def _partitions_of(self, topic: str, within: float = 10.0) -> set[int]:
        """The partitions of an existing topic, once the subscription's metadata has it."""
        deadline = time.monotonic() + within
        while (found := self._consumer.partitions_for_topic(topic)) is None:
            if time.monotonic() > deadline:
                raise ConsumeError(f"no partition metadata for {topic!r} within {within:.0f}s")
            await asyncio.sleep(0.05)
        return set(found)


def _consume_error(what: str, exc: KafkaError) -> ConsumeError:
    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    error = ConsumeError(f"{what}: {reason}")
    error.retriable = bool(exc.retriable)
    return error


def _records(topic: str, partition: int, messages: Sequence[Any]) -> list[Record]:
    """aiokafka's records of one partition as ``Record`` tuples.

    Built with ``tuple.__new__`` (no Python ``__new__`` frame: this runs for
    every record consumed); aiokafka's fetcher gives the headers as a tuple
    already, anything else is copied into one.
    """
    new, cls = tuple.__new__, Record
    return [
        new(
            cls,
            (
                topic,
                partition,
                m.offset,
                m.key,
                m.value,
                h if type(h := m.headers) is tuple else tuple(h or ()),
                m.timestamp or 0,
            ),
        )
        for m in messages
    ]
