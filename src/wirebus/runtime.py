"""``Runtime``: everything one process runs for an app, started and stopped in order.

- a gateway (``serve``, ``run``), and/or
- consumers of the app's event handlers (``run``, ``consume``),
- the event publisher the mediator hands emitted events to: Kafka when
  ``WIREBUS_KAFKA_BOOTSTRAP`` is set, otherwise (with consumers) the embedded
  in-memory broker, otherwise none (events are handled in-process).

Shutdown order: the gateway stops taking calls and lets in-flight ones
finish; consumers finish the batch in hand and commit; the publisher
flushes; the inbox and the mediator close.

Example::

    async with Runtime(app, Settings.from_env(), gateway=GatewayConfig(port=50051),
                       consume=True) as runtime:
        await stop_signal.wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .app import App
from .brokers.memory import InMemoryBroker
from .consumer import ConsumerPort, ConsumerRunner, EventProcessor
from .errors import ConfigurationError
from .gateway import Gateway, GatewayConfig
from .inbox import InboxStore, InMemoryInbox
from .retry import Retry
from .settings import Settings

if TYPE_CHECKING:
    from .broker import EventPublisher
    from .mediator import Mediator

__all__ = ["Runtime"]

log = logging.getLogger(__name__)


class Runtime:
    """Gateway, publisher and consumers of one process (an async context manager)."""

    def __init__(
        self,
        app: App,
        settings: Settings,
        *,
        gateway: GatewayConfig | None = None,
        consume: bool = False,
        group: str | None = None,
        routers: frozenset[str] | None = None,
        broker: InMemoryBroker | None = None,
        retry: Retry | None = None,
        skip_unknown: bool = False,
    ) -> None:
        if routers is not None:
            known = {s.router for s in app.specs}
            unknown = sorted(routers - known)
            if unknown:
                raise ConfigurationError(
                    f"no router named {', '.join(unknown)}; the app has {', '.join(sorted(known))}"
                )
        self.app = app
        self.settings = settings
        self.gateway_config = gateway
        self.consume = consume
        self.group = group or app.name
        self.routers = routers
        self.retry = retry
        self.skip_unknown = skip_unknown
        self.broker = broker
        if broker is None and consume and settings.kafka_bootstrap is None:
            self.broker = InMemoryBroker()
        self.gateway: Gateway | None = None
        self.runner: ConsumerRunner | None = None
        self.mediator: Mediator | None = None
        self._publisher: Any = None
        self._inbox: InboxStore | None = None
        self._task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()

    @property
    def topics(self) -> list[str]:
        """Topics the consumers subscribe to: those of the selected event handlers."""
        registry = self.app.registry()
        topics = set()
        for spec in self.app.specs:
            if spec.kind != "event" or (self.routers and spec.router not in self.routers):
                continue
            kind = registry.by_type(spec.message_type)
            if kind is not None:
                topics.add(kind.topic)
        return sorted(topics)

    async def start(self) -> None:
        """Start the parts in dependency order."""
        publisher = await self._start_publisher()
        self.mediator = self.app.mediator(publisher=publisher)
        self._stack.push_async_callback(self.mediator.close)
        if self.consume and self.topics:
            await self._start_consumers(publisher)
        if self.gateway_config is not None:
            self.gateway = Gateway(self.app, self.gateway_config, mediator=self.mediator)
            await self.gateway.__aenter__()
            self._stack.push_async_callback(self.gateway.stop)

    async def _start_publisher(self) -> EventPublisher | None:
        bootstrap = self.settings.kafka_bootstrap
        if bootstrap is not None:
            from .kafka import KafkaEventPublisher

            kafka = KafkaEventPublisher(bootstrap, self.app.registry(), source=self.app.source)
            await kafka.start()
            self._stack.push_async_callback(kafka.stop)
            self._publisher = kafka
            return kafka
        if self.broker is not None:
            self._publisher = self.broker.publisher(self.app.registry(), source=self.app.source)
            return self._publisher  # type: ignore[no-any-return]
        return None

    async def _start_consumers(self, publisher: EventPublisher | None) -> None:
        assert self.mediator is not None
        assert publisher is not None
        port: ConsumerPort
        if self.settings.kafka_bootstrap is not None:
            from .inbox.sqlalchemy import SqlAlchemyInbox
            from .kafka import KafkaConsumer

            sql_inbox = SqlAlchemyInbox(self.settings.database_url)
            await sql_inbox.create_schema()
            self._inbox = sql_inbox
            port = KafkaConsumer(
                self.settings.kafka_bootstrap, group=self.group, topics=self.topics
            )
        else:
            assert self.broker is not None
            self._inbox = InMemoryInbox()
            port = self.broker.consumer(group=self.group, topics=self.topics)
        self._stack.push_async_callback(self._inbox.close)
        processor = EventProcessor(
            self.mediator,
            self.app.registry(),
            group=self.group,
            inbox=self._inbox,
            dead_letters=publisher,
            retry=self.retry,
            skip_unknown=self.skip_unknown,
            routers=self.routers,
        )
        self.runner = ConsumerRunner(port, processor)
        await self.runner.start()
        self._task = asyncio.create_task(self.runner.run(), name=f"wirebus consumer {self.group}")
        self._stack.push_async_callback(self._stop_consumers)
        log.info("consuming %s as group %s", ", ".join(self.topics), self.group)

    async def _stop_consumers(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        """Stop everything in reverse order (idempotent)."""
        await self._stack.aclose()

    async def wait(self) -> None:
        """Return when a consumer loop ends on its own (it failed); never otherwise."""
        if self._task is None:
            await asyncio.Event().wait()
        else:
            await asyncio.shield(self._task)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
