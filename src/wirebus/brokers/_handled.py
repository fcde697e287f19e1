"""``HandledAcks``: the in-memory broker's acknowledgement "handled by every subscribed group".

The embedded runtime's records exist only in its process. An outbox row may
be deleted only once what it carries is safe elsewhere; for an in-memory
record that means: every consumer group subscribed to its topic committed
past it, which it does only after the record's handlers ran and their
transaction (with the inbox row) committed. This object keeps, per
partition, the sends waiting for that, and releases them as groups commit
-- or, with a retriable error for what was not handled, when a group's last
consumer stops (a shutdown must not wait for consumers that are gone).

Example::

    acks = HandledAcks(broker.committed)
    acks.subscribe("shop", ["shop.orders.v1"])
    results = await acks.until_handled(stored)    # None per record once handled
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..broker import OutgoingRecord, PublishError, Record, TopicPartition

__all__ = ["HandledAcks"]

Committed = Callable[[str, TopicPartition], int]


class _Wait:
    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.remaining = 0

    def settle_one(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and not self.future.done():
            self.future.set_result(None)


class HandledAcks:
    """Subscriptions of consumer groups, and the sends waiting until those groups handled them."""

    def __init__(self, committed: Committed) -> None:
        self._committed = committed
        self._groups: dict[str, tuple[str, ...]] = {}  # topic -> subscribed groups
        self._running: dict[str, int] = {}  # group -> consumers started and not stopped
        self._left: set[str] = set()  # groups whose every consumer stopped
        self._waits: dict[TopicPartition, collections.deque[tuple[int, _Wait]]] = {}

    def subscribe(self, group: str, topics: Iterable[str]) -> None:
        """``group`` handles ``topics`` from now on: their records are acked once it committed."""
        for topic in topics:
            groups = self._groups.get(topic, ())
            if group not in groups:
                self._groups[topic] = (*groups, group)

    def started(self, group: str) -> None:
        """A consumer of ``group`` started."""
        self._running[group] = self._running.get(group, 0) + 1
        self._left.discard(group)

    def stopped(self, group: str, *, was_running: bool) -> None:
        """A consumer of ``group`` stopped; the last one releases the sends waiting for it."""
        running = self._running.get(group, 0) - (1 if was_running else 0)
        if running > 0:
            self._running[group] = running
            return
        self._running.pop(group, None)
        self._left.add(group)
        topics = {topic for topic, groups in self._groups.items() if group in groups}
        for tp in [tp for tp in self._waits if tp[0] in topics]:
            for _, wait in self._waits.pop(tp):
                if not wait.future.done():
                    wait.future.set_result(None)

    def handled_up_to(self, tp: TopicPartition) -> int:
        """The offset every group subscribed to ``tp``'s topic has committed (0 if none)."""
        groups = self._groups.get(tp[0], ())
        committed = self._committed
        return min((committed(group, tp) for group in groups), default=0)

    def gone(self) -> Callable[[OutgoingRecord], PublishError | None] | None:
        """A refusal per record of a topic whose subscribed group has no running consumer.

        ``None`` when no group is gone (the usual case, decided without a look
        at the records); otherwise a function of a record: a retriable
        ``PublishError``, or ``None`` if the record may be stored.
        """
        if not self._left:
            return None
        left = self._left
        groups = self._groups

        def refusal(record: OutgoingRecord) -> PublishError | None:
            topic = record.topic
            gone = [group for group in groups.get(topic, ()) if group in left]
            if not gone:
                return None
            return PublishError(topic, f"no consumer of group {gone[0]!r} is running to handle it")

        return refusal

    async def until_handled(self, stored: Sequence[Record]) -> list[BaseException | None]:
        """Wait until the subscribed groups committed past ``stored``; per record, its outcome.

        ``None`` for a handled record (or one of a topic no group subscribes
        to); a retriable ``PublishError`` for one a group left unhandled.
        """
        needed: dict[TopicPartition, int] = {}
        groups = self._groups
        for record in stored:
            if record.topic in groups:
                tp = (record.topic, record.partition)
                if needed.get(tp, 0) <= record.offset:
                    needed[tp] = record.offset + 1
        if not needed:
            return [None] * len(stored)
        wait = _Wait(asyncio.get_running_loop().create_future())
        for tp, end in needed.items():
            if self.handled_up_to(tp) < end:
                wait.remaining += 1
                self._waits.setdefault(tp, collections.deque()).append((end, wait))
        if wait.remaining:
            await wait.future
        return [self._outcome(record) for record in stored]

    def _outcome(self, record: Record) -> PublishError | None:
        if record.topic not in self._groups:
            return None
        if self.handled_up_to((record.topic, record.partition)) > record.offset:
            return None
        return PublishError(record.topic, "not handled: its consumer group stopped first")

    def committed_to(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Release the sends whose records on these partitions are now handled."""
        waits = self._waits
        for tp in offsets:
            queue = waits.get(tp)
            if not queue:
                continue
            upto = self.handled_up_to(tp)
            while queue and (queue[0][0] <= upto or queue[0][1].future.done()):
                queue.popleft()[1].settle_one()
            if not queue:
                del waits[tp]
