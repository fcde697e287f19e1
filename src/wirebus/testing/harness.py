"""``AppHarness``: an app running in-process as ``wirebus run`` runs it, for tests.

Started with ``async with``, it runs the app's :class:`~wirebus.runtime.Runtime`
over an :class:`~wirebus.brokers.memory.InMemoryBroker` and a private
SQLite database in a temporary directory:

- requests go through the app's pipeline with a unit of work, so travelling
  events are written to the outbox with the handler's state and a relay
  publishes them to the broker (protobuf value, CloudEvents headers, key),
- the app's event handlers consume their topics from the broker (inbox,
  retries, dead-letter topics), exactly as from Kafka,
- a gRPC gateway on 127.0.0.1 (a free port) starts on the first
  :meth:`AppHarness.channel` call (or at once with ``gateway=True``).

Nothing is waited for with sleeps: the harness is told of every outcome the
consumers reach (the runtime's ``on_outcome``), wakes the relay after each
call it drives and each outcome (the runtime wakes it after every outbox
commit too), and each ``wait_*`` returns as soon as what it waits for holds
(looking again at least every ``relay_poll``), or raises ``TimeoutError``
after ``within`` seconds saying what it saw.

Example::

    async with AppHarness(app) as shop:
        ref = await shop.send(PlaceOrder(customer_id="c1", items=items))
        [placed] = await shop.wait_published(OrderPlaced)
        assert placed.key == ref.order_id
        await shop.handled(placed)          # the payments slice consumed it
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .._lifecycle import AsyncLifecycle
from ..broker import EventEncoder, OutgoingRecord, Record
from ..brokers.memory import InMemoryBroker
from ..consumer import DLQ_SUFFIX, Outcome
from ..context import CallInfo, bind_call, unbind_call
from ..errors import LifecycleError
from ..gateway import Gateway, GatewayConfig
from ..retry import Retry
from ..runtime import Runtime
from ..settings import Settings
from .captured import Consumed, DeadLetter, Published, attributes_of

if TYPE_CHECKING:
    import grpc.aio

    from ..app import App
    from ..db import Database
    from ..mediator import Mediator
    from ..messages import Request

__all__ = ["AppHarness"]

E = TypeVar("E")
T = TypeVar("T")
R = TypeVar("R")

IMMEDIATE_RETRY = Retry(attempts=3, initial_delay=0.0, jitter=False)
"""The harness's default for handlers without a retry policy: three attempts, no waits."""

Of = Published[Any] | Record | str


class AppHarness(AsyncLifecycle):
    """The app, its outbox, relay, consumers and (lazily) its gateway, in one process.

    ``within`` is the default bound of every wait. ``retry`` applies to event
    handlers without their own policy (default: three attempts, no waits).
    ``partitions`` is the broker's (one keeps a topic in total order).
    ``consume=False`` leaves the app's event handlers idle: delivered
    events then only pile up on the broker. ``relay_poll`` is the relay's
    poll when nothing wakes it, and how often waits look again.
    """

    def __init__(
        self,
        app: App,
        *,
        gateway: bool = False,
        consume: bool = True,
        group: str | None = None,
        retry: Retry | None = IMMEDIATE_RETRY,
        partitions: int = 1,
        within: float = 5.0,
        relay_poll: float = 0.05,
    ) -> None:
        self.app = app
        self.within = within
        self.broker = InMemoryBroker(partitions=partitions)
        """The broker the app publishes to and consumes from."""
        self.consumed: list[Consumed] = []
        """Every outcome the app's consumers reached, in order."""
        self._runtime_options: dict[str, Any] = {
            "consume": consume, "group": group, "retry": retry, "relay_poll": relay_poll,
        }  # fmt: skip
        self._runtime: Runtime | None = None
        self._start_gateway = gateway
        self._relay_poll = relay_poll
        self._gateway: Gateway | None = None
        self._gateway_lock = asyncio.Lock()
        self._channels: list[grpc.aio.Channel] = []
        self._delivered: set[tuple[str, int, int]] = set()
        self._changed = asyncio.Event()
        self._stack = contextlib.AsyncExitStack()
        self._state = "new"

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the runtime (relay and consumers) and, with ``gateway=True``, the gateway."""
        if self._state != "new":
            raise LifecycleError(f"a {self._state} harness cannot be started again")
        self._state = "started"
        # A SQLite file of its own, not ``:memory:``: an in-memory database is
        # one shared connection, and the relay's and the handlers' concurrent
        # transactions would interleave on it.
        directory = self._stack.enter_context(
            tempfile.TemporaryDirectory(prefix="wirebus-harness-")
        )
        settings = Settings(database_url=f"sqlite+aiosqlite:///{directory}/app.db")
        self._runtime = Runtime(
            self.app, settings, broker=self.broker, **self._runtime_options,
            on_outcome=self._reached,
        )  # fmt: skip
        self._stack.push_async_callback(self._runtime.stop)
        await self._runtime.start()
        if self._start_gateway:
            await self._gateway_started()

    async def stop(self) -> None:
        """Close channels, then stop the gateway, relay, consumers and database (idempotent)."""
        self._state = "stopped"
        for channel in self._channels:
            await channel.close(None)
        self._channels.clear()
        await self._stack.aclose()

    # ------------------------------------------------------------ parts

    @property
    def runtime(self) -> Runtime:
        """The app's :class:`~wirebus.runtime.Runtime` (built when the harness starts)."""
        return _started(self._runtime)

    @property
    def mediator(self) -> Mediator:
        """The app's mediator (the one the gateway and consumers dispatch into)."""
        return _started(self.runtime.mediator)

    @property
    def database(self) -> Database:
        """The app's database (a temporary SQLite file): its tables, the outbox, the inbox."""
        return _started(self.runtime.database)

    @property
    def topics(self) -> list[str]:
        """The topics the app's consumers read."""
        return self.runtime.topics

    # ------------------------------------------------------------ driving the app

    @overload
    async def send(self, request: Request[R], *, metadata: Mapping[str, str] = ...) -> R: ...

    @overload
    async def send(self, request: Any, *, metadata: Mapping[str, str] = ...) -> Any: ...

    async def send(self, request: Any, *, metadata: Mapping[str, str] | None = None) -> Any:
        """Send a command or query in-process, as the gateway would; return its result.

        ``metadata`` is what behaviours and handlers see as
        ``current_call().metadata`` (e.g. ``{"x-correlation-id": "c-1"}``).
        """
        token = bind_call(_call_info(metadata)) if metadata else None
        try:
            return await self.mediator.send(request)
        finally:
            if token is not None:
                unbind_call(token)
            self._wake_relay()

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        """Run a streaming query in-process; yields its items."""
        try:
            async for item in self.mediator.stream(request):
                yield item
        finally:
            self._wake_relay()

    async def send_stream(
        self,
        message_type: type,
        messages: AsyncIterable[Any] | Iterable[Any],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> Any:
        """Run a client-streaming handler in-process over ``messages``; return its result.

        Example::

            imported = await shop.send_stream(PlaceOrder, [cmd1, cmd2])
        """
        token = bind_call(_call_info(metadata)) if metadata else None
        try:
            return await self.mediator.send_stream(message_type, messages)
        finally:
            if token is not None:
                unbind_call(token)
            self._wake_relay()

    async def bidi(
        self, message_type: type, messages: AsyncIterable[Any] | Iterable[Any]
    ) -> AsyncIterator[Any]:
        """Run a bidirectional handler in-process over ``messages``; yields its items.

        Example::

            async for status in shop.bidi(WatchOrders, [WatchOrders(order_id=ref.order_id)]):
                ...
        """
        try:
            async for item in self.mediator.bidi(message_type, messages):
                yield item
        finally:
            self._wake_relay()

    async def publish(self, event: Any) -> None:
        """Hand ``event`` to the app's in-process handlers of its type (no broker)."""
        try:
            await self.mediator.publish(event)
        finally:
            self._wake_relay()

    async def deliver(
        self,
        event: Any,
        *,
        source: str | None = None,
        subject: str | None = None,
        event_id: str | None = None,
    ) -> Published[Any]:
        """Put ``event`` on its topic as another service would; the app's consumers get it.

        Encoded with the app's registry (protobuf value, key, CloudEvents
        headers); ``source`` defaults to the app's own, ``event_id`` (the
        ``ce_id``) to a new one: deliver the same id twice to see the inbox
        drop the copy. Wait for its outcome with :meth:`handled`.
        """
        encoder = EventEncoder(self.app.registry(), source=source or self.app.source)
        [record] = await self.deliver_records(
            [encoder.record(event, subject=subject, event_id=event_id)]
        )
        attributes = attributes_of(record)
        assert attributes is not None  # the encoder wrote them
        return Published(event, record, attributes)

    async def deliver_records(self, records: Sequence[OutgoingRecord]) -> list[Record]:
        """Put raw records on the broker (any bytes, any headers: garbage is a test case too)."""
        stored = await self.broker.append(records)
        self._delivered.update((r.topic, r.partition, r.offset) for r in stored)
        self._notify()
        return stored

    # ------------------------------------------------------------ the gateway

    async def channel(self) -> grpc.aio.Channel:
        """A ``grpc.aio`` channel to the app's gateway (started on first use; closed on exit).

        Example::

            stub = orders_pb2_grpc.OrderServiceStub(await harness.channel())
        """
        import grpc.aio

        gateway = await self._gateway_started()
        channel = grpc.aio.insecure_channel(gateway.address)
        self._channels.append(channel)
        return channel

    @property
    def address(self) -> str:
        """``host:port`` of the gateway (after :meth:`channel` or with ``gateway=True``)."""
        if self._gateway is None:
            raise LifecycleError("the gateway has not started: call channel() or gateway=True")
        return self._gateway.address

    async def _gateway_started(self) -> Gateway:
        async with self._gateway_lock:
            if self._gateway is None:
                if self._state != "started":
                    raise LifecycleError("start the harness (async with) before using its gateway")
                config = GatewayConfig(host="127.0.0.1", port=0, grace_seconds=1.0)
                gateway = Gateway(self.app, config, mediator=self.mediator)
                await gateway.start()
                self._stack.push_async_callback(gateway.stop)  # stops before the relay
                self._gateway = gateway
            return self._gateway

    # ------------------------------------------------------------ what the app published

    def published(self, event_type: type[E] | None = None) -> list[Published[E]]:
        """The events the app published (not those :meth:`deliver` put there), in order.

        With ``event_type``, only those of that type, decoded to it; without,
        every event on every topic, decoded to the first type registered
        for its ``ce_type``.
        """
        registry = self.app.registry()
        if event_type is not None:
            kind = registry.by_type(event_type)
            if kind is None:
                raise LookupError(f"{event_type.__qualname__} is not an event this app publishes")
            kinds = [kind]
            topics = [kind.topic]
        else:
            kinds = list(registry)
            topics = [t for t in self.broker.topics() if not t.endswith(DLQ_SUFFIX)]
        names = {k.full_name.encode(): k for k in kinds}
        found: list[Published[Any]] = []
        for topic in topics:
            for record in self.broker.records(topic):
                if (record.topic, record.partition, record.offset) in self._delivered:
                    continue
                kind = names.get(record.header("ce_type") or b"")
                attributes = attributes_of(record)
                if kind is not None and attributes is not None:
                    found.append(Published(kind.decode(record.value or b""), record, attributes))
        return found

    async def wait_published(
        self, event_type: type[E], *, count: int = 1, within: float | None = None
    ) -> list[Published[E]]:
        """Wait until at least ``count`` events of ``event_type`` were published; return them."""

        async def enough() -> list[Published[E]] | None:
            found = self.published(event_type)
            return found if len(found) >= count else None

        return await self._wait(
            enough,
            within,
            lambda: (
                f"{count} {event_type.__qualname__} published"
                f" (saw {len(self.published(event_type))})"
            ),
        )

    def dead_letters(self, topic: str | None = None) -> list[DeadLetter]:
        """Records of the dead-letter topics (``<topic>.dlq``), or of ``topic``'s only."""
        topics = [t for t in self.broker.topics() if t.endswith(DLQ_SUFFIX)]
        if topic is not None:
            topics = [t for t in topics if t == topic + DLQ_SUFFIX]
        return [DeadLetter(r, attributes_of(r)) for t in topics for r in self.broker.records(t)]

    # ------------------------------------------------------------ what the consumers did

    def outcomes(self, of: Of) -> list[Outcome]:
        """Every outcome the consumers reached for ``of`` (an event, a record or a ``ce_id``)."""
        return [c.outcome for c in self.consumed if c.concerns(of)]

    async def settled(self, of: Of, *, within: float | None = None) -> Consumed:
        """Wait until the consumers reached an outcome for ``of``; return the first."""

        async def reached() -> Consumed | None:
            return next((c for c in self.consumed if c.concerns(of)), None)

        return await self._wait(
            reached,
            within,
            lambda: f"an outcome for {_describe(of)} (consumers reached {len(self.consumed)})",
        )

    async def handled(self, of: Of, *, within: float | None = None) -> Consumed:
        """Wait for ``of``'s outcome; ``AssertionError`` unless its handlers all succeeded."""
        consumed = await self.settled(of, within=within)
        if consumed.outcome != "handled":
            why = ""
            if consumed.outcome == "dead_lettered":
                dead = [d for d in self.dead_letters() if d.ce_id == consumed.ce_id]
                why = f": {dead[-1].error_type}: {dead[-1].error_message}" if dead else ""
            raise AssertionError(f"{_describe(of)} was {consumed.outcome}, not handled{why}")
        return consumed

    async def idle(self, *, within: float | None = None) -> None:
        """Wait until the outbox is empty and every record on the consumed topics has an outcome.

        Example::

            await harness.send(PlaceOrder(...))
            await harness.idle()        # OrderPlaced relayed, consumed, PaymentCaptured too
        """
        from ..outbox.relay import outbox_stats

        def consumed_all() -> tuple[int, int] | None:
            """(outcomes, records) if every record of the consumed topics has an outcome."""
            records = [r for t in self.topics for r in self.broker.records(t)]
            if self.runtime.consume:
                seen = {
                    (c.record.topic, c.record.partition, c.record.offset) for c in self.consumed
                }
                if any((r.topic, r.partition, r.offset) not in seen for r in records):
                    return None
            return len(self.consumed), len(records)

        async def quiet() -> bool | None:
            before = consumed_all()
            if before is None or (await outbox_stats(self.database)).pending:
                return None
            # A handler commits its outbox rows before its outcome is reported,
            # and the relay settles rows after they are on the broker: nothing
            # consumed or published during the query means nothing is in flight.
            return consumed_all() == before or None

        await self._wait(quiet, within, lambda: "the outbox empty and every record consumed")

    # ------------------------------------------------------------ waiting

    def _reached(self, record: Record, outcome: Outcome) -> None:
        self.consumed.append(Consumed(record, outcome, attributes_of(record)))
        self._wake_relay()  # the handler may have written outbox rows
        self._notify()

    def _wake_relay(self) -> None:
        """Relay what the harness just caused to be committed now, not at the next poll."""
        relay = self._runtime.relay_worker if self._runtime is not None else None
        if relay is not None:
            relay.wake()

    def _notify(self) -> None:
        """Wake every waiter (each waits on the event current when it looked)."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _wait(
        self,
        condition: Callable[[], Awaitable[T | None]],
        within: float | None,
        expected: Callable[[], str],
    ) -> T:
        limit = self.within if within is None else within
        deadline = time.monotonic() + limit
        while True:
            changed = self._changed
            value = await condition()
            if value is not None and value is not False:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"waited {limit}s for {expected()}")
            # The relay wakes waiters, but the gateway's calls write the outbox
            # behind the harness's back: look again at least every relay poll.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, self._relay_poll))


def _started(part: R | None) -> R:
    if part is None:
        raise LifecycleError("start the harness (async with AppHarness(app)) first")
    return part


def _call_info(metadata: Mapping[str, str]) -> Callable[[], CallInfo]:
    info = CallInfo(
        method="", peer="harness", metadata={k.lower(): v for k, v in metadata.items()},
        deadline=None,
    )  # fmt: skip
    return lambda: info


def _describe(of: Of) -> str:
    if isinstance(of, str):
        return f"event {of}"
    if isinstance(of, Published):
        return f"{type(of.event).__qualname__} {of.ce_id}"
    return f"record {of.topic}[{of.partition}]@{of.offset}"
