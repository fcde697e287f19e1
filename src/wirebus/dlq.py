"""Dead-letter records: their size bound, and replay back to the original topic.

A dead letter must always leave its partition, so it must always fit the
DLQ producer's ``max_request_size``. :func:`fit_dead_letter` keeps a record
that fits whole; one that does not keeps the ``wirebus_*`` reasons, the
original headers that fit (CloudEvents ones first in practice: they come
first and are small), the key (cut to an eighth of the limit) and as much
of the value as fits, and says so in headers::

    wirebus_truncated          what was cut: "value", "value,headers", "value,headers,key"
    wirebus_original_size      the original value's length in bytes
    wirebus_original_sha256    hex SHA-256 of the original value
    wirebus_dropped_headers    names of the original headers left out (if any)
    wirebus_original_key_size  the original key's length (if it was cut)

Replay leaves such a record where it is (skipped, counted): its value is not the event
any more.

A replayed record keeps its key, value and CloudEvents headers (so its
``ce_id`` is unchanged and the inbox still recognises it); the ``wirebus_*``
headers that said why it failed are dropped.

A replay takes a fixed range: from the replay group's committed offsets to
the dead-letter topic's end offsets *when it starts*. Records that fail again
and come back to the DLQ while it runs are after that end, so a replay never
reads what it caused (run another replay for them, after fixing the handler).
It commits as it goes, so a second replay continues where the first stopped
instead of sending the same records twice. A dry run lists what would be sent
and sends and commits nothing. A topic that is not a dead-letter topic (no
``.dlq`` suffix) is refused unless forced: replaying ``shop.orders.v1`` by
mistake would send the topic into itself.

Example::

    report = await replay(port, publisher, limit=100)
    print(f"replayed {report.replayed} record(s)")
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from collections.abc import Mapping, Sequence

from .broker import ConsumerPort, EventPublisher, OutgoingRecord, Record, TopicPartition
from .errors import ConfigurationError, WirebusError
from .outbox.rows import record_size

__all__ = [
    "DLQ_SUFFIX",
    "MIN_DEAD_LETTER_BYTES",
    "REPLAY_GROUP",
    "TRUNCATED",
    "UnreplayableRecord",
    "ReplayItem",
    "ReplayReport",
    "check_dead_letter_topic",
    "fit_dead_letter",
    "record_size",
    "replay",
    "replay_record",
]

log = logging.getLogger(__name__)

REPLAY_GROUP = "wirebus-dlq-replay"
DLQ_SUFFIX = ".dlq"
TRUNCATED = "wirebus_truncated"
"""The header a dead letter cut to fit carries (its value says what was cut)."""
MIN_DEAD_LETTER_BYTES = 16 * 1024
"""The smallest size limit a dead letter can be fitted to (its reasons need room)."""

_HEADER_OVERHEAD = 10  # a header's varints, at most


def fit_dead_letter(dead: OutgoingRecord, max_bytes: int) -> OutgoingRecord:
    """``dead`` itself if it fits ``max_bytes``, else a copy cut to fit (module docstring).

    The reasons (``wirebus_*`` headers) are always kept whole; ``max_bytes``
    must be at least :data:`MIN_DEAD_LETTER_BYTES`.

    Example::

        out = fit_dead_letter(dead_letter, 1024 * 1024)
        if out is not dead_letter:
            ...  # cut: out.header says what, the original size and sha256
    """
    if record_size(dead.key, dead.value, dead.headers) <= max_bytes:
        return dead
    value = dead.value
    cut = ["value"]
    reasons = [(k, v) for k, v in dead.headers if k.startswith("wirebus_")]
    kept: list[tuple[str, bytes]] = []
    dropped: list[str] = []
    room = max_bytes // 4
    for name, header in dead.headers:
        if name.startswith("wirebus_"):
            continue
        size = _HEADER_OVERHEAD + len(name.encode()) + len(header or b"")
        if size <= room:
            kept.append((name, header))
            room -= size
        else:
            dropped.append(name)
    extra = [
        ("wirebus_original_size", str(len(value)).encode()),
        ("wirebus_original_sha256", hashlib.sha256(value).hexdigest().encode()),
    ]
    if dropped:
        cut.append("headers")
        extra.append(("wirebus_dropped_headers", ",".join(dropped)[:1000].encode()))
    key = dead.key
    if key is not None and len(key) > max_bytes // 8:
        cut.append("key")
        extra.append(("wirebus_original_key_size", str(len(key)).encode()))
        key = key[: max_bytes // 8]
    headers = (*kept, *reasons, (TRUNCATED, ",".join(cut).encode()), *extra)
    room = max(0, max_bytes - record_size(key, b"", headers) - 8)  # 8: the value's varint
    return OutgoingRecord(dead.topic, key, value[:room], headers)


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayItem:
    """One dead letter a replay sent (or, in a dry run, would send)."""

    partition: TopicPartition
    offset: int
    target: str
    key: bytes | None
    ce_type: str
    ce_id: str
    reason: str

    def line(self) -> str:
        """One line for a person: where it is, where it goes, what it is and why it failed."""
        topic, partition = self.partition
        key = self.key.decode(errors="replace") if self.key is not None else "-"
        return (
            f"{topic}[{partition}]@{self.offset} -> {self.target} key={key}"
            f" type={self.ce_type or '-'} id={self.ce_id or '-'} reason={self.reason or '-'}"
        )


@dataclasses.dataclass(slots=True)
class ReplayReport:
    """What a replay did: the records it really sent (acknowledged), or would send."""

    replayed: int = 0
    items: list[ReplayItem] = dataclasses.field(default_factory=list)
    ends: dict[TopicPartition, int] = dataclasses.field(default_factory=dict)
    """The dead-letter topic's end offsets when the replay started: nothing at or after them
    was read."""
    skipped: list[ReplayItem] = dataclasses.field(default_factory=list)
    """Dead letters left where they are: cut to fit the DLQ, their value is not the event."""
    failure: str | None = None
    """Why the replay stopped early (a send failed); what was sent before is committed."""


def check_dead_letter_topic(topic: str, *, force: bool = False) -> None:
    """Refuse a topic that is not a dead-letter topic, unless ``force``."""
    if not force and not topic.endswith(DLQ_SUFFIX):
        raise ConfigurationError(
            f"{topic!r} is not a dead-letter topic (no {DLQ_SUFFIX!r} suffix): replaying it"
            f" would send its records back into it; did you mean {topic + DLQ_SUFFIX!r}?"
            " (--force replays it anyway, up to its end when the replay starts)"
        )


class UnreplayableRecord(WirebusError):
    """A dead letter that names no topic it could go back to (garbled or illegal)."""


_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def replay_record(record: Record) -> OutgoingRecord:
    """The record to send back: to ``wirebus_original_topic``, without ``wirebus_*`` headers.

    :class:`UnreplayableRecord` when that topic is not UTF-8, not a legal Kafka
    topic name, a broker-internal topic (``__...``) or a dead-letter topic.
    """
    original = record.header("wirebus_original_topic")
    if original is None:  # a record not written by wirebus: strip the suffix
        topic = record.topic.removesuffix(DLQ_SUFFIX)
    else:
        try:
            topic = original.decode()
        except UnicodeDecodeError:
            raise UnreplayableRecord(
                f"{_where(record)}: its wirebus_original_topic header is not UTF-8"
            ) from None
    if not _TOPIC.fullmatch(topic) or topic in (".", "..") or topic.startswith("__"):
        raise UnreplayableRecord(
            f"{_where(record)}: {topic[:100]!r} (its wirebus_original_topic, or its topic"
            " without .dlq) is not a topic a record can be replayed to"
        )
    if topic.endswith(DLQ_SUFFIX) and topic != record.topic:
        raise UnreplayableRecord(f"{_where(record)}: it names another dead-letter topic {topic!r}")
    headers = tuple((k, v) for k, v in record.headers if not k.startswith("wirebus_"))
    return OutgoingRecord(topic=topic, key=record.key, value=record.value or b"", headers=headers)


def _where(record: Record) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


async def replay(
    port: ConsumerPort,
    publisher: EventPublisher,
    *,
    limit: int | None = None,
    idle_seconds: float = 3.0,
    dry_run: bool = False,
) -> ReplayReport:
    """Replay up to ``limit`` records (all when ``None``) of the range fixed at the start.

    Stops when every partition reached its end offset at the start, or after
    ``idle_seconds`` without a record in that range (partitions already replayed
    up to their end deliver nothing).
    """
    report = ReplayReport()
    await port.start()
    try:
        report.ends = dict(await port.end_offsets())
        await _run(port, publisher, report, limit=limit, idle=idle_seconds, dry_run=dry_run)
    finally:
        await port.stop()
    verb = "would replay" if dry_run else "replayed"
    log.info(
        "%s %d dead-lettered record(s)", verb, len(report.items) if dry_run else report.replayed
    )
    return report


async def _run(
    port: ConsumerPort,
    publisher: EventPublisher,
    report: ReplayReport,
    *,
    limit: int | None,
    idle: float,
    dry_run: bool,
) -> None:
    ends = report.ends
    pending = {tp for tp, end in ends.items() if end > 0}
    idle_since = time.monotonic()
    while pending and (limit is None or len(report.items) < limit):
        batch = await port.fetch(min(0.5, idle))
        offsets: dict[TopicPartition, int] = {}
        for tp, records in batch.items():
            if tp not in pending:
                continue  # done, or created after the start
            for record in records:
                if record.offset >= ends[tp] or (limit is not None and len(report.items) >= limit):
                    await port.seek(tp, record.offset)
                    if record.offset >= ends[tp]:
                        pending.discard(tp)
                    break
                item = _item(record)
                offsets[tp] = record.offset + 1
                if record.offset + 1 >= ends[tp]:
                    pending.discard(tp)
                if record.header(TRUNCATED) is not None:
                    log.warning("not replaying %s: it was cut to fit the DLQ", item.line())
                    report.skipped.append(item)
                    continue
                try:
                    outgoing = replay_record(record)
                except UnreplayableRecord as exc:
                    log.warning("not replaying %s", exc)
                    report.skipped.append(dataclasses.replace(item, reason=str(exc)[:300]))
                    continue
                if not dry_run:
                    try:
                        await publisher.send_records([outgoing])
                    except WirebusError as exc:
                        report.failure = f"sending {item.line()} failed: {exc}"
                        offsets[tp] = record.offset  # not sent: the next replay starts here
                        await _commit(port, offsets)
                        return
                    report.replayed += 1
                report.items.append(item)
                idle_since = time.monotonic()
        if not dry_run:
            await _commit(port, offsets)
        if time.monotonic() - idle_since > idle:
            break


async def _commit(port: ConsumerPort, offsets: Mapping[TopicPartition, int]) -> None:
    if offsets:
        await port.commit(offsets)


def _target(record: Record) -> str:
    try:
        return replay_record(record).topic
    except UnreplayableRecord:
        return "(none)"


def _item(record: Record) -> ReplayItem:
    def text(name: str) -> str:
        value = record.header(name)
        return value.decode(errors="replace")[:200] if value is not None else ""

    return ReplayItem(
        partition=(record.topic, record.partition),
        offset=record.offset,
        target=_target(record),
        key=record.key,
        ce_type=text("ce_type"),
        ce_id=text("ce_id"),
        reason=": ".join(filter(None, (text("wirebus_error_type"), text("wirebus_error_message")))),
    )


def summary(report: ReplayReport, topic: str, *, dry_run: bool) -> Sequence[str]:
    """The lines ``wirebus dlq replay`` prints."""
    lines = [item.line() for item in report.items] if dry_run else []
    lines += [f"skipped: {item.line()}" for item in report.skipped]
    if dry_run:
        lines.append(f"would replay {len(report.items)} record(s) from {topic} (dry run)")
    else:
        lines.append(f"replayed {report.replayed} record(s) from {topic}")
    return lines
