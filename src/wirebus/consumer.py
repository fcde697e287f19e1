"""Consuming events: the processor that takes each consumed record to an outcome.

``EventProcessor.process(record)`` takes one record all the way to an
outcome, never raising for bad input:

1. CloudEvents headers are read; missing or malformed ones -> DLQ; a
   ``ce_id`` no inbox can store (a NUL character, longer than
   :data:`~wirebus.inbox.MAX_EVENT_ID_LENGTH`) -> DLQ, on every database
   alike, before the inbox is asked;
2. ``ce_type`` selects the registered type; unknown -> DLQ (or skipped when
   ``skip_unknown``);
3. a null value (a Kafka tombstone) or an empty one goes only to the
   handlers registered with ``tombstones=True`` (as the type's default
   message); with none -> DLQ. An empty value is a valid encoding of a
   default message, but an event of all defaults is never what a producer
   meant (an ``OrderPlaced`` for order "" of 0): a handler must ask for it;
4. the value is decoded (upb, then ``from_proto``); garbage -> DLQ;
5. an event the inbox has seen for this group is acknowledged unhandled;
6. each handler runs with its retry policy; after the last attempt the record
   goes to ``<topic>.dlq`` with headers saying why;
7. the inbox records the event.

A dead letter always fits ``max_dead_letter_bytes`` (the DLQ producer's
``max_request_size``): one that would not is cut to fit
(:func:`wirebus.dlq.fit_dead_letter`: reasons and metadata kept, the value
truncated, its original size and SHA-256 in headers), counted in
``truncated_dead_letters`` (and the ``wirebus_consumer_dead_letters_truncated``
metric) and logged, so that it too leaves its partition.

The runner hands each partition's fetched records to
``EventProcessor.process_batch``: the inbox is asked once per batch which
events it has seen and told once which were handled (a crash in between
redelivers them: at-least-once, as between a handler and its inbox row).

Only infrastructure failures (the DLQ or the inbox unreachable) raise
:class:`ProcessingInterrupted`; the runner then keeps the offset uncommitted,
seeks back and retries after a pause, so nothing is lost. A handler (or a
batch commit) failing because the *database* is unreachable (see
:func:`wirebus.db_errors.database_unreachable`) is one of them,
:class:`DatabaseUnavailable`: the record is not dead-lettered and keeps all
its attempts for when the database answers again. A handler's own error
(an ``IntegrityError``, a bug) takes its retries, then the DLQ.

``wirebus.consumer_runner.ConsumerRunner`` drives a processor over a
:class:`ConsumerPort` (Kafka or in-memory).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .broker import ConsumerPort, EventPublisher, OutgoingRecord, Record, TopicPartition
from .cloudevents import CloudEventsReader, MalformedEvent
from .codec import EventRegistry, EventType
from .db_errors import database_unreachable
from .dlq import DLQ_SUFFIX, MIN_DEAD_LETTER_BYTES, TRUNCATED, fit_dead_letter
from .errors import ConfigurationError, UnknownEventType, WirebusError
from .inbox import MAX_EVENT_ID_LENGTH, InboxClaim, InboxStore, unstorable
from .outbox.rows import MAX_RECORD_BYTES
from .retry import Retry
from .tracing import RecordObserver, Tracing

if TYPE_CHECKING:
    from .db import Database
    from .mediator import EventRunner, Mediator
    from .outbox.batch import BatchUnitOfWork

__all__ = [
    "ConsumerPort",
    "DLQ_SUFFIX",
    "DatabaseUnavailable",
    "EmptyValue",
    "EventProcessor",
    "Outcome",
    "ProcessingInterrupted",
    "TopicPartition",
    "UnstorableEventId",
    "dead_letter_record",
]

log = logging.getLogger(__name__)

Outcome = Literal["handled", "duplicate", "ignored", "skipped", "dead_lettered"]
_MAX_ERROR_MESSAGE = 2000
MAX_DEAD_LETTER_BYTES = MAX_RECORD_BYTES  # the Kafka producer's default max_request_size
"""The default ``max_dead_letter_bytes``: the Kafka publisher's default ``max_request_size``."""
Handlers = tuple[tuple[str, "Retry | None", "EventRunner"], ...]


class ProcessingInterrupted(WirebusError):
    """The record could not reach an outcome (DLQ or inbox unavailable); retry it."""

    retriable = True


class DatabaseUnavailable(ProcessingInterrupted):
    """The handlers' (or the inbox's) database is unreachable: hold the offset, retry later.

    Example::

        try:
            await processor.process(record)
        except DatabaseUnavailable:
            ...  # the record has no outcome yet: run it again when the database answers
    """


def _interruption(error: BaseException) -> ProcessingInterrupted:
    """The :class:`ProcessingInterrupted` (or :class:`DatabaseUnavailable`) of ``error``."""
    kind = DatabaseUnavailable if database_unreachable(error) else ProcessingInterrupted
    return kind(f"{type(error).__name__}: {error}")


class UndecodableEvent(WirebusError):
    """A record's value does not decode as the type its ``ce_type`` names."""


class UnstorableEventId(WirebusError):
    """A record's ``ce_id`` cannot be an inbox key (a NUL character, or too long)."""


class EmptyValue(WirebusError):
    """A record's value is null (a tombstone) or empty and no handler asked for tombstones."""


def dead_letter_record(
    record: Record, error: BaseException, attempts: int, *, max_bytes: int | None = None
) -> OutgoingRecord:
    """The DLQ copy of ``record``: key, value and headers kept, plus why it failed.

    With ``max_bytes``, a copy that would be larger is cut to fit (see
    :func:`wirebus.dlq.fit_dead_letter`). A database error's message is
    the driver's, without the SQL statement and its parameters.

    Example::

        dead = dead_letter_record(record, ValueError("bad"), 1, max_bytes=1024 * 1024)
    """
    message = _error_text(error)[:_MAX_ERROR_MESSAGE]
    kept = tuple((k, v) for k, v in record.headers if not k.startswith("wirebus_"))
    why = (
        ("wirebus_error_type", type(error).__qualname__.encode()),
        ("wirebus_error_message", message.encode(errors="replace")),
        ("wirebus_original_topic", record.topic.encode()),
        ("wirebus_original_partition", str(record.partition).encode()),
        ("wirebus_original_offset", str(record.offset).encode()),
        ("wirebus_attempts", str(attempts).encode()),
    )
    dead = OutgoingRecord(
        topic=record.topic + DLQ_SUFFIX,
        key=record.key,
        value=record.value or b"",
        headers=kept + why,
    )
    return dead if max_bytes is None else fit_dead_letter(dead, max_bytes)


def _error_text(error: BaseException) -> str:
    """``str(error)``; for an SQLAlchemy statement error, only its driver's error."""
    orig = getattr(error, "orig", None)
    if orig is not None and getattr(error, "statement", None) is not None:
        return f"{type(orig).__name__}: {orig}"
    return str(error)


class _Single:
    """The common plan of a ``ce_type``: one Python type with one handler, run inline."""

    __slots__ = ("decode", "name", "retry", "run")

    def __init__(
        self, decode: Callable[[bytes], Any], name: str, retry: Retry | None, run: EventRunner
    ) -> None:
        self.decode = decode
        self.name = name
        self.retry = retry
        self.run = run


Route = tuple[str, str]
"""``(ce_id, ce_type)`` of a record whose CloudEvents headers are valid."""


class EventProcessor:
    """Takes one consumed record to an outcome (see the module docstring).

    Example::

        processor = EventProcessor(mediator, registry, group="payments",
                                   inbox=InMemoryInbox(), dead_letters=broker)
        assert await processor.process(record) == "handled"
    """

    def __init__(
        self,
        mediator: Mediator,
        registry: EventRegistry,
        *,
        group: str,
        inbox: InboxStore,
        dead_letters: EventPublisher,
        retry: Retry | None = None,
        skip_unknown: bool = False,
        routers: frozenset[str] | None = None,
        claim_inbox: bool = False,
        database: Database | None = None,
        max_dead_letter_bytes: int = MAX_DEAD_LETTER_BYTES,
        metrics: Any = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        tracing: Tracing | None = None,
    ) -> None:
        problem = unstorable("the consumer group", group)
        if problem is not None:
            raise ConfigurationError(f"{problem}: choose a shorter group name without NUL")
        if max_dead_letter_bytes < MIN_DEAD_LETTER_BYTES:
            raise ConfigurationError(
                f"max_dead_letter_bytes must be at least {MIN_DEAD_LETTER_BYTES},"
                f" not {max_dead_letter_bytes}"
            )
        self.mediator = mediator
        self.registry = registry
        self.group = group
        self.inbox = inbox
        self.dead_letters = dead_letters
        self.retry = retry or Retry()
        self.skip_unknown = skip_unknown
        self.routers = routers
        self.claim_inbox = claim_inbox
        """The inbox is a table of the handlers' database: write it in their transaction."""
        self.database = database
        """The handlers' database (and the inbox's): a partition's batch commits once in it."""
        self.max_dead_letter_bytes = max_dead_letter_bytes
        """The DLQ producer's ``max_request_size``: larger dead letters are cut to fit."""
        self.metrics = metrics
        """A :class:`~wirebus.metrics.Metrics` (a runner gives its own when this is None)."""
        self.truncated_dead_letters = 0
        """How many dead letters were cut to fit ``max_dead_letter_bytes``."""
        self._sleep = sleep
        self._plans: dict[str, list[tuple[EventType, Handlers]]] = {}
        self._tombstone_plans: dict[str, list[tuple[EventType, Handlers]]] = {}
        self._singles: dict[str, _Single | None] = {}
        self._reader = CloudEventsReader()
        self.observe = RecordObserver(
            tracing if tracing is not None else Tracing.of_pipeline(mediator.pipeline)
        )
        """Binds each record's correlation (and, with tracing, its CONSUMER span)."""

    @property
    def planned_types(self) -> frozenset[str]:
        """The ``ce_type`` names this processor has planned handlers for (registered only)."""
        return frozenset(self._plans)

    async def process(self, record: Record) -> Outcome:
        """Handle, acknowledge, skip or dead-letter ``record``."""
        outcomes: list[Outcome] = []
        await self.process_batch([record], lambda _record, outcome: outcomes.append(outcome))
        return outcomes[0]

    async def process_batch(
        self, records: Sequence[Record], on_outcome: Callable[[Record, Outcome], None]
    ) -> None:
        """Take the records of one partition, in order, each to an outcome.

        ``on_outcome`` is called after each record. The inbox is asked once
        for the whole batch which events it has seen. With a ``database``,
        the records first run in one transaction (see the class docstring);
        if a handler fails there, or the commit does, that is rolled back
        and they run one transaction each, with retries and DLQ per record.
        Raises :class:`ProcessingInterrupted` at the first record that
        cannot reach an outcome; the records before it have theirs.
        """
        read = self._reader.read_route
        routes: list[Route | Exception] = []
        append = routes.append
        for record in records:
            try:
                route = read(record.headers)
            except MalformedEvent as exc:
                append(exc)
                continue
            ident = route[0]
            if len(ident) > MAX_EVENT_ID_LENGTH or "\x00" in ident:  # what no inbox stores
                problem = f"{unstorable('ce_id', ident)}: it cannot be deduplicated"
                append(UnstorableEventId(problem))
            else:
                append(route)
        ids = [r[0] for r in routes if type(r) is tuple]
        seen = await self._guarded(self.inbox.seen_many(self.group, ids)) if ids else set()
        together = self.database is not None and len(records) > 1
        if together and await self._process_together(records, routes, seen, on_outcome):
            return
        await self._process_each(records, routes, seen, on_outcome)

    async def _process_each(
        self,
        records: Sequence[Record],
        routes: Sequence[Route | Exception],
        seen: set[str],
        on_outcome: Callable[[Record, Outcome], None],
    ) -> None:
        """One transaction per record; the inbox told once at the end of the unclaimed ones.

        The common case (a type with one handler, which succeeds at once) is
        run inline, without a coroutine per step; anything else takes the
        general path with the same outcomes.
        """
        handled: list[str] = []
        singles, claims, dispatch = self._singles, self.claim_inbox, self.mediator.dispatch
        observe = self.observe
        outcome: Outcome
        try:
            for record, route in zip(records, routes, strict=True):
                if type(route) is not tuple:
                    outcome = await self._dead_letter(record, route, 0)  # type: ignore[arg-type]
                    on_outcome(record, outcome)
                    continue
                ident, name = route
                single = singles[name] if name in singles else self._single(name)
                if single is None or not record.value:  # a tombstone takes the general path
                    with observe(record, name):
                        outcome = await self._handle(record, ident, name, seen, handled)
                    on_outcome(record, outcome)
                    continue
                try:
                    event = single.decode(record.value or b"")
                except Exception as exc:  # upb DecodeError, ConversionError, ...
                    outcome = await self._undecodable(record, name, exc)
                    on_outcome(record, outcome)
                    continue
                if ident in seen:
                    on_outcome(record, "duplicate")
                    continue
                claim = InboxClaim(self.group, ident) if claims else None
                with observe(record, name):  # the record's correlation and trace
                    try:
                        emitted = await single.run(event, claim)
                        if emitted:
                            await dispatch(emitted)
                        outcome = "handled"
                    except Exception as exc:
                        outcome = await self._single_failed(
                            record, ident, name, event, single, claim, exc
                        )
                if outcome == "handled":
                    seen.add(ident)  # a copy later in this batch is a duplicate
                    if claim is None or not claim.written:
                        handled.append(ident)
                on_outcome(record, outcome)
        finally:
            if handled:
                await self._guarded(self.inbox.mark_many(self.group, handled))

    async def _process_together(
        self,
        records: Sequence[Record],
        routes: Sequence[Route | Exception],
        seen: set[str],
        on_outcome: Callable[[Record, Outcome], None],
    ) -> bool:
        """Run ``records`` in one :class:`BatchUnitOfWork`; False (all rolled back) to re-run.

        Outcomes are reported only after the commit; dead letters (records
        that never reached a handler) are sent and in-process events
        delivered after it too, so a rolled-back batch left nothing behind.
        """
        from .outbox.batch import BatchUnitOfWork

        assert self.database is not None
        batch = BatchUnitOfWork(self.database, self.group)
        seen = set(seen)  # the fallback starts again from what the inbox said
        outcomes: list[Outcome] = []
        dead: list[tuple[int, OutgoingRecord]] = []
        local: list[Any] = []
        try:
            for index, (record, route) in enumerate(zip(records, routes, strict=True)):
                staged = await self._stage(record, route, seen, batch, local)
                if staged is None:
                    return False
                if isinstance(staged, Exception):
                    self._log_dead_letter(record, staged)
                    dead.append((index, self._dead_letter_of(record, staged, 0)))
                    staged = "dead_lettered"
                outcomes.append(staged)
            try:
                await batch.commit()
            except Exception as exc:
                if database_unreachable(exc):
                    raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
                log.warning(
                    "a batch of %d record(s) of %s[%d] failed to commit (%s: %s);"
                    " running them one transaction each",
                    len(records), records[0].topic, records[0].partition, type(exc).__name__, exc,
                )  # fmt: skip
                return False
        finally:
            await batch.close()
        await self._after_commit(records, outcomes, dead, local, on_outcome)
        return True

    async def _after_commit(
        self,
        records: Sequence[Record],
        outcomes: Sequence[Outcome],
        dead: Sequence[tuple[int, OutgoingRecord]],
        local: Sequence[Any],
        on_outcome: Callable[[Record, Outcome], None],
    ) -> None:
        """Deliver in-process events, send dead letters, then report every outcome in order."""
        if local:
            try:
                await self.mediator.dispatch(local)
            except Exception:
                log.exception("delivering the events a committed batch emitted failed")
        if dead:
            try:
                await self.dead_letters.send_records([r for _, r in dead])
            except Exception as exc:
                first = dead[0][0]  # the records before it have their outcome
                for record, outcome in zip(records[:first], outcomes[:first], strict=True):
                    on_outcome(record, outcome)
                raise ProcessingInterrupted(f"{type(exc).__name__}: {exc}") from exc
        for record, outcome in zip(records, outcomes, strict=True):
            on_outcome(record, outcome)

    async def _stage(
        self,
        record: Record,
        route: Route | Exception,
        seen: set[str],
        batch: BatchUnitOfWork,
        local: list[Any],
    ) -> Outcome | Exception | None:
        """Run ``record``'s handlers inside ``batch``: its outcome, why to dead-letter it, or
        None when a handler failed (the batch must be rolled back)."""
        if isinstance(route, Exception):
            return route
        ident, name = route
        decoded = self._decode(record, name, ident, seen)
        if isinstance(decoded, (str, Exception)):
            return decoded
        claim = InboxClaim(self.group, ident, batch=batch)
        with self.observe(record, name):  # the record's correlation and trace
            staged = await self._stage_handlers(record, name, ident, decoded, claim, local)
        if staged is None:
            return None
        seen.add(ident)
        batch.mark(ident)
        return "handled"

    async def _stage_handlers(
        self,
        record: Record,
        name: str,
        ident: str,
        decoded: list[tuple[Any, Handlers]],
        claim: InboxClaim,
        local: list[Any],
    ) -> Outcome | None:
        """Run the handlers of a decoded record in a batch: None if one failed."""
        for event, handlers in decoded:
            for handler, _retry, run in handlers:
                try:
                    local.extend(await run(event, claim))
                except Exception as exc:
                    if database_unreachable(exc):
                        raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
                    log.info(
                        "handler %s failed on %s %s in a batch (%s: %s);"
                        " running the batch one transaction per record",
                        handler, name, ident, type(exc).__name__, exc,
                    )  # fmt: skip
                    return None
        return "handled"

    def _plan(self, event_type: str) -> list[tuple[EventType, Handlers]]:
        """Per registered Python type of this ``ce_type``, the handlers it has here."""
        plan = self._plans.get(event_type)
        if plan is None:
            plan = []
            kinds = self.registry.all_by_name(event_type)
            for kind in kinds:
                handlers = self.mediator.event_handlers(kind.python_type, self.routers)
                if handlers:
                    plan.append((kind, handlers))
            if kinds:  # only registered names: a topic's garbage must not grow the cache
                self._plans[event_type] = plan
        return plan

    def _single(self, event_type: str) -> _Single | None:
        """The inline plan of ``event_type`` if it has one type with one handler, else None."""
        plan = self._plan(event_type)
        single = None
        if len(plan) == 1 and len(plan[0][1]) == 1:
            kind, ((name, retry, run),) = plan[0]
            single = _Single(kind.decode, name, retry, run)
        if event_type in self._plans:  # registered names only, as the plans
            self._singles[event_type] = single
        return single

    def _tombstone_plan(self, event_type: str) -> list[tuple[EventType, Handlers]]:
        """The plan of ``event_type`` cut to the handlers registered with ``tombstones=True``."""
        plan = self._tombstone_plans.get(event_type)
        if plan is None:
            plan = []
            for kind, handlers in self._plan(event_type):
                wanted = self.mediator.tombstone_handlers(kind.python_type, self.routers)
                kept = tuple(h for h in handlers if h[0] in wanted)
                if kept:
                    plan.append((kind, kept))
            self._tombstone_plans[event_type] = plan  # called for registered names only
        return plan

    def _decode(
        self, record: Record, event_type: str, ident: str, seen: set[str]
    ) -> Outcome | Exception | list[tuple[Any, Handlers]]:
        """The record's events with their handlers, or its outcome, or why to dead-letter it.

        Checked in this order: known type, a value (or handlers that take
        tombstones), decodable value, not seen before.
        """
        plan = self._plan(event_type)
        if not plan:
            if not self.registry.all_by_name(event_type):
                if self.skip_unknown:
                    return "skipped"
                return UnknownEventType(f"ce_type {event_type!r} is not registered")
            return "ignored"
        if not record.value:
            plan = self._tombstone_plan(event_type)
            if not plan:
                return _empty_value(record, event_type)
        events = []
        for kind, handlers in plan:
            try:
                events.append((kind.decode(record.value or b""), handlers))
            except Exception as exc:  # upb DecodeError, ConversionError, ...
                return UndecodableEvent(f"value is not a valid {event_type}: {exc}")
        if ident in seen:
            return "duplicate"
        return events

    async def _handle(
        self, record: Record, ident: str, event_type: str, seen: set[str], handled: list[str]
    ) -> Outcome:
        """The general path: the event's outcome; ``handled`` gets what the inbox must record."""
        events = self._decode(record, event_type, ident, seen)
        if isinstance(events, str):
            return events
        if isinstance(events, Exception):
            return await self._dead_letter(record, events, 0)
        claim = None
        if self.claim_inbox and len(events) == 1 and len(events[0][1]) == 1:
            claim = InboxClaim(self.group, ident)
        for event, handlers in events:
            outcome = await self._run_handlers(record, ident, event_type, event, handlers, claim)
            if outcome is not None:
                return outcome
        seen.add(ident)  # a copy later in this batch is a duplicate
        # With a claim the unit of work wrote the inbox row with the handler's state.
        if claim is None or not claim.written:
            handled.append(ident)
        return "handled"

    async def _undecodable(self, record: Record, event_type: str, error: Exception) -> Outcome:
        problem = UndecodableEvent(f"value is not a valid {event_type}: {error}")
        return await self._dead_letter(record, problem, 0)

    async def _single_failed(
        self,
        record: Record,
        ident: str,
        event_type: str,
        event: Any,
        single: _Single,
        claim: InboxClaim | None,
        error: Exception,
    ) -> Outcome:
        """The inline handler's first attempt failed: its retries, then the DLQ."""
        retry = single.retry or self.retry
        failure = await self._retry(single.run, event, retry, claim, error)
        if failure is None:
            return "handled"
        return await self._give_up(record, ident, event_type, single.name, failure)

    async def _run_handlers(
        self,
        record: Record,
        ident: str,
        event_type: str,
        event: Any,
        handlers: Handlers,
        claim: InboxClaim | None,
    ) -> Outcome | None:
        """Run each handler with its retries; the DLQ outcome if one gives up, else None.

        ``claim`` (only when there is one handler) goes with the event, for
        the handler's unit of work to record in its transaction.
        """
        for name, retry, run in handlers:
            failure = await self._run_with_retries(run, event, retry or self.retry, claim)
            if failure is not None:
                return await self._give_up(record, ident, event_type, name, failure)
        return None

    async def _give_up(
        self,
        record: Record,
        ident: str,
        event_type: str,
        handler: str,
        failure: tuple[Exception, int],
    ) -> Outcome:
        error, attempts = failure
        log.error(
            "handler %s failed on %s %s after %d attempt(s); dead-lettering",
            handler, event_type, ident, attempts, exc_info=error,
        )  # fmt: skip
        return await self._dead_letter(record, error, attempts)

    async def _run_with_retries(
        self, run: EventRunner, event: Any, retry: Retry, claim: InboxClaim | None
    ) -> tuple[Exception, int] | None:
        try:
            emitted = await run(event, claim)
            if emitted:
                await self.mediator.dispatch(emitted)
            return None
        except Exception as exc:
            return await self._retry(run, event, retry, claim, exc)

    async def _retry(
        self, run: EventRunner, event: Any, retry: Retry, claim: InboxClaim | None, error: Exception
    ) -> tuple[Exception, int] | None:
        """After a failed first attempt: retry while ``retry`` allows; the last failure, or None.

        Raises :class:`DatabaseUnavailable` when an attempt failed because the
        database is unreachable: that attempt does not count, nor do the
        ones before it (the record runs again, from its first attempt).
        """
        attempt = 1
        while attempt < retry.attempts and retry.worth_retrying(error):
            if database_unreachable(error):
                raise DatabaseUnavailable(f"{type(error).__name__}: {error}") from error
            await self._sleep(retry.delay(attempt))
            attempt += 1
            try:
                emitted = await run(event, claim)
                if emitted:
                    await self.mediator.dispatch(emitted)
                return None
            except Exception as exc:
                error = exc
        if database_unreachable(error):
            raise DatabaseUnavailable(f"{type(error).__name__}: {error}") from error
        return error, attempt

    async def _dead_letter(self, record: Record, error: Exception, attempts: int) -> Outcome:
        self._log_dead_letter(record, error)
        dead = self._dead_letter_of(record, error, attempts)
        await self._guarded(self.dead_letters.send_records([dead]))
        return "dead_lettered"

    def _dead_letter_of(self, record: Record, error: Exception, attempts: int) -> OutgoingRecord:
        """The DLQ record of ``record``, cut to fit; a cut one is counted and logged."""
        dead = dead_letter_record(record, error, attempts, max_bytes=self.max_dead_letter_bytes)
        cut = next((v for k, v in dead.headers if k == TRUNCATED), None)
        if cut is not None:
            self.truncated_dead_letters += 1
            if self.metrics is not None:
                self.metrics.dead_letters_truncated.labels(record.topic).inc()
            log.warning(
                "the dead letter of %s[%d]@%d is over %d bytes: sent cut to fit (%s cut,"
                " value %d of %d bytes kept)",
                record.topic, record.partition, record.offset, self.max_dead_letter_bytes,
                cut.decode(), len(dead.value), len(record.value or b""),
            )  # fmt: skip
        return dead

    @staticmethod
    def _log_dead_letter(record: Record, error: Exception) -> None:
        log.warning(
            "dead-lettering %s[%d]@%d: %s: %s",
            record.topic, record.partition, record.offset, type(error).__name__, error,
        )  # fmt: skip

    @staticmethod
    async def _guarded(step: Awaitable[Any]) -> Any:
        try:
            return await step
        except Exception as exc:
            raise _interruption(exc) from exc


def _empty_value(record: Record, event_type: str) -> EmptyValue:
    what = "null (a tombstone)" if record.value is None else "empty"
    return EmptyValue(
        f"the value is {what}: no handler of {event_type} here takes tombstones"
        " (register one with tombstones=True to handle such records)"
    )
