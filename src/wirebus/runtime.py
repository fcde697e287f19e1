"""``Runtime``: everything one process runs for an app, started and stopped in order.

- a gateway (``serve``, ``run``), and with it, optionally, the Connect and
  gRPC-Web port (``connect=ConnectConfig(...)``, ``--connect-port``: the same
  routes and mediator, ``wirebus.connect``), and/or
- consumers of the app's event handlers (``run``, ``consume``),
- the database (``WIREBUS_DATABASE_URL``, a SQLite file by default): the
  handlers' state, the outbox and the inbox; tables are created if missing,
- a relay publishing the outbox (unless ``relay=False``: run ``wirebus relay``
  separately), to Kafka when ``WIREBUS_KAFKA_BOOTSTRAP`` is set, otherwise to
  the embedded in-memory broker.

Shutdown order: the gateway stops taking calls (health NOT_SERVING, new
calls UNAVAILABLE) and lets in-flight ones finish within its grace, then the
Connect port does the same;
consumers finish the batch in hand and commit; on Kafka the relay then
publishes what is already committed in the outbox (at most the gateway's
grace more, ``drain_seconds`` without a gateway) and finishes its batch; the
publisher flushes; the mediator and the database close.

With ``metrics_port`` the gateway counts its calls (``grpc_server_*``),
dead-lettered records are counted by DLQ topic, and a Kafka consumer's lag
per partition is sampled every ``lag_interval`` seconds (``lag.py``).

**Embedded mode loses nothing it committed.** With the in-memory broker
(no ``WIREBUS_KAFKA_BOOTSTRAP``) a record exists only in this process, so
the relay publishes with ``acks="handled"``: an outbox row is deleted only
once the consumer group subscribed to its topic committed past its record,
that is, once its handlers ran and their transaction (with the inbox row)
committed. The group subscribes before the relay starts. On shutdown the
consumers stop first, and whatever they did not handle fails back to the
relay, whose rows stay pending: the next start on the same database file
publishes them again. This was chosen over draining the broker at shutdown
because it holds at any moment, not only within a grace period: after a
SIGKILL too the rows of unhandled records are still in the outbox, and a
record handled but not yet deleted is published again and skipped by the
inbox (same ``ce_id``). What a kill cannot keep is what SQLite itself had
not committed. Dead letters of the embedded broker stay in memory (its
``<topic>.dlq`` topics have no subscriber) and do go with the process.

Example::

    async with Runtime(app, Settings.from_env(), gateway=GatewayConfig(port=50051),
                       consume=True) as runtime:
        await stop_signal.wait()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ._lifecycle import AsyncLifecycle
from .app import App
from .broker import ConsumerPort
from .brokers.memory import InMemoryBroker
from .consumer import EventProcessor
from .consumer_runner import ConsumerRunner
from .errors import ConfigurationError
from .extras import require_extra
from .gateway import Gateway, GatewayConfig
from .retry import Retry
from .settings import Settings

if TYPE_CHECKING:
    from .broker import EventPublisher, Record
    from .connect import ConnectConfig, ConnectServer
    from .consumer import Outcome
    from .db import Database
    from .mediator import Mediator
    from .outbox.relay import Relay

__all__ = ["Runtime"]

log = logging.getLogger(__name__)


class Runtime(AsyncLifecycle):
    """Gateway, publisher and consumers of one process (an async context manager).

    ``relay_poll`` is how long the relay waits for new rows before it looks
    again when nothing wakes it (PostgreSQL's ``NOTIFY`` does; on SQLite,
    :meth:`~wirebus.outbox.relay.Relay.wake` of :attr:`relay_worker` does).
    ``on_outcome(record, outcome)`` is told of every record the consumers
    take to an outcome (see :class:`~wirebus.consumer.ConsumerRunner`).

    Example::

        seen = []
        async with Runtime(app, settings, consume=True, relay_poll=0.1,
                           on_outcome=lambda record, outcome: seen.append(outcome)):
            ...
    """

    def __init__(
        self,
        app: App,
        settings: Settings,
        *,
        gateway: GatewayConfig | None = None,
        connect: ConnectConfig | None = None,
        consume: bool = False,
        group: str | None = None,
        routers: frozenset[str] | None = None,
        broker: InMemoryBroker | None = None,
        retry: Retry | None = None,
        skip_unknown: bool = False,
        relay: bool = True,
        start_at: Literal["earliest", "latest"] = "earliest",
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        relay_poll: float = 1.0,
        on_outcome: Callable[[Record, Outcome], None] | None = None,
        lag_interval: float = 5.0,
        drain_seconds: float = 10.0,
        saga_poll: float | None = None,
    ) -> None:
        if relay_poll <= 0:
            raise ConfigurationError(f"relay_poll must be positive seconds, not {relay_poll}")
        if routers is not None:
            known = {s.router for s in app.specs}
            unknown = sorted(routers - known)
            if unknown:
                raise ConfigurationError(
                    f"no router named {', '.join(unknown)}; the app has {', '.join(sorted(known))}"
                )
        if settings.kafka_bootstrap is not None:
            require_extra("kafka", "WIREBUS_KAFKA_BOOTSTRAP")
        if metrics_port is not None:
            require_extra("metrics", "serving metrics (--metrics-port)")
        self.app = app
        self.settings = settings
        self.gateway_config = gateway
        self.connect_config = connect
        self.consume = consume
        self.group = group or app.name
        self.routers = routers
        self.retry = retry
        self.skip_unknown = skip_unknown
        self.relay = relay
        self.start_at = start_at
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host
        self.relay_poll = relay_poll
        self.on_outcome = on_outcome
        self.lag_interval = lag_interval
        self.drain_seconds = gateway.grace_seconds if gateway is not None else drain_seconds
        self.saga_poll = saga_poll or relay_poll
        """How often due saga timeouts are looked for (default: ``relay_poll``)."""
        self.saga_poller: Any = None
        self.metrics: Any = None
        self._metrics_task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self.broker = broker
        if broker is None and settings.kafka_bootstrap is None:
            self.broker = InMemoryBroker()
        self.gateway: Gateway | None = None
        self.connect: ConnectServer | None = None
        self.runner: ConsumerRunner | None = None
        self.mediator: Mediator | None = None
        self.database: Database | None = None
        self.relay_worker: Relay | None = None
        self._task: asyncio.Task[None] | None = None
        self._relay_task: asyncio.Task[None] | None = None
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
        """Start the parts in dependency order.

        Each part's stop is registered before it starts, so :meth:`stop`
        after a failed start releases a part that started half-way too.
        """
        from .db import Database
        from .outbox.relay import Relay, outbox_store_for

        extra = [self.app.metadata] if self.app.metadata is not None else []
        # The schema comes from the migrations (wirebus's, then the app's own,
        # or its metadata when it has none); the runtime owns the database.
        self.database = Database(
            self.settings.database_url,
            schema="migrate",
            extra_metadata=extra,
            migrations=self.app.migrations,
        )
        self._stack.push_async_callback(self.database.close)
        await self.database.start()
        if self.metrics_port is not None:
            await self._start_metrics()
        publisher = await self._start_publisher()
        self.mediator = self.app.mediator(database=self.database, owns_database=False)
        if self.metrics is not None:
            self.metrics.breakers.watch(self.mediator.circuits)
        self._stack.push_async_callback(self.mediator.close)
        await self.mediator.start()
        # Built before the relay runs: an in-memory group subscribes as its
        # port is made, so no record is acked as handled before it is.
        port = self._consumer_port() if self.consume and self.topics else None
        if self.relay:
            store = outbox_store_for(self.database)
            self.relay_worker = Relay(
                store, publisher, poll_interval=self.relay_poll, metrics=self.metrics
            )
            self._stack.push_async_callback(self._stop_relay)
            await self.relay_worker.start()
            if not self.database.is_postgres:  # PostgreSQL's NOTIFY wakes the relay already
                _wake_after_outbox_commits(self.database, self.relay_worker)
            self._relay_task = asyncio.create_task(self.relay_worker.run(), name="wirebus relay")
        if port is not None:
            await self._start_consumers(port, publisher)
        if self.connect_config is not None:  # the Connect port: same routes, same mediator
            from .connect import ConnectServer

            # Started first: once the gRPC port answers, the Connect port does too.
            rpc = self.metrics.rpc if self.metrics is not None else None
            self.connect = ConnectServer(
                self.app, self.connect_config, mediator=self.mediator, metrics=rpc
            )
            self._stack.push_async_callback(self.connect.stop)
            await self.connect.start()
        if self.app.sagas and (self.relay or port is not None):  # recovery, then the timeouts
            from .saga.poller import SagaPoller

            engine = self.app.saga_engine(self.mediator)
            engine.metrics = self.metrics
            self.saga_poller = SagaPoller(engine, interval=self.saga_poll)
            self._stack.push_async_callback(self.saga_poller.stop)
            await self.saga_poller.start()
        if self.gateway_config is not None:
            rpc = self.metrics.rpc if self.metrics is not None else None
            self.gateway = Gateway(
                self.app, self.gateway_config, mediator=self.mediator, metrics=rpc
            )
            self._stack.push_async_callback(self.gateway.stop)
            await self.gateway.start()

    async def _start_metrics(self) -> None:
        from .metrics import Metrics
        from .outbox.relay import outbox_stats

        assert self.database is not None
        assert self.metrics_port is not None
        database = self.database
        self.metrics = Metrics()
        self.metrics.serve(self.metrics_port, host=self.metrics_host)
        self._stack.callback(self.metrics.close)
        self._metrics_task = asyncio.create_task(
            self.metrics.refresh_forever(lambda: outbox_stats(database))
        )
        self._stack.push_async_callback(self._stop_metrics)
        log.info("metrics on http://%s:%d/metrics", self.metrics_host, self.metrics_port)

    async def _stop_metrics(self) -> None:
        for task in (self._metrics_task, self._lag_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _stop_relay(self) -> None:
        if self.relay_worker is not None:
            if self._relay_task is not None and self.settings.kafka_bootstrap is not None:
                await self._flush_outbox(self.relay_worker)
            await self.relay_worker.stop()
        if self._relay_task is not None:
            await self._relay_task  # run() closes the relay as it leaves
        elif self.relay_worker is not None:
            await self.relay_worker.close()  # its start failed: release what it took

    async def _flush_outbox(self, relay: Relay) -> None:
        """Let the running relay publish the rows already committed, for ``drain_seconds`` at most.

        Only on Kafka: the embedded broker's rows stay pending on purpose
        (see the module docstring). Rows of other relays (sharded on
        PostgreSQL) are counted too, so with several relays this may take
        the whole bound; rows marked failed are not waited for.
        """
        from .outbox.relay import outbox_stats

        assert self.database is not None
        deadline = asyncio.get_running_loop().time() + self.drain_seconds
        while asyncio.get_running_loop().time() < deadline:
            try:
                pending = (await outbox_stats(self.database)).pending
            except Exception as exc:  # the database is away: nothing to flush from
                log.warning("outbox flush on stop: %s: %s", type(exc).__name__, exc)
                return
            if not pending or self._relay_task is None or self._relay_task.done():
                return
            relay.wake()
            await asyncio.sleep(0.05)
        log.warning("stopping with outbox rows pending after %.1fs", self.drain_seconds)

    async def _start_publisher(self) -> EventPublisher:
        bootstrap = self.settings.kafka_bootstrap
        if bootstrap is not None:
            from .kafka import KafkaEventPublisher

            # No linger: this publisher sends what the relay claimed (and dead
            # letters), in batches already; a linger only delays the acks the
            # relay waits for, on every pass (e2e latency).
            kafka = KafkaEventPublisher(
                bootstrap,
                self.app.registry(),
                source=self.app.source,
                linger_ms=0,
                security=self.settings.kafka_security,
                tracing=self.app.tracing(),
            )
            self._stack.push_async_callback(kafka.stop)  # before start: a failed start too
            await kafka.start()
            configs = self.app.registry().topic_configs
            if configs:  # a compacted topic is made so before the first record lands in it
                from .kafka import ensure_topics

                security = self.settings.kafka_security
                await ensure_topics(bootstrap, configs, configs=configs, security=security)
            return kafka
        assert self.broker is not None
        # The broker's records die with the process: a row goes only once handled.
        return self.broker.publisher(
            self.app.registry(), source=self.app.source, acks="handled", tracing=self.app.tracing()
        )

    def _consumer_port(self) -> ConsumerPort:
        if self.settings.kafka_bootstrap is not None:
            from .kafka import KafkaConsumer

            return KafkaConsumer(
                self.settings.kafka_bootstrap,
                group=self.group,
                topics=self.topics,
                start_at=self.start_at,
                security=self.settings.kafka_security,
                topic_configs=self.app.registry().topic_configs,  # compacted topics
            )
        assert self.broker is not None
        return self.broker.consumer(group=self.group, topics=self.topics)

    async def _start_consumers(self, port: ConsumerPort, publisher: EventPublisher) -> None:
        assert self.mediator is not None
        assert self.database is not None
        from .inbox.sqlalchemy import SqlAlchemyInbox

        inbox = SqlAlchemyInbox(self.database.engine)  # the handlers' database: one transaction
        processor = EventProcessor(
            self.mediator,
            self.app.registry(),
            group=self.group,
            inbox=inbox,
            dead_letters=publisher,
            retry=self.retry,
            skip_unknown=self.skip_unknown,
            routers=self.routers,
            claim_inbox=True,
            database=self.database,  # a partition's batch commits once
            tracing=self.app.tracing(),
        )
        self.runner = ConsumerRunner(
            port, processor, metrics=self.metrics, on_outcome=self._outcome_hook()
        )
        self._stack.push_async_callback(self._stop_consumers)  # before start: a failed start too
        await self.runner.start()
        self._task = asyncio.create_task(self.runner.run(), name=f"wirebus consumer {self.group}")
        lag = getattr(port, "lag", None)
        if self.metrics is not None and lag is not None:
            from .lag import sample_lag

            gauge = self.metrics.consumer_lag
            sampler = sample_lag(lag, gauge, group=self.group, interval=self.lag_interval)
            self._lag_task = asyncio.create_task(sampler, name=f"wirebus lag {self.group}")
        log.info("consuming %s as group %s", ", ".join(self.topics), self.group)

    def _outcome_hook(self) -> Callable[[Record, Outcome], None] | None:
        """``on_outcome``, and the DLQ counter of the metrics when there are metrics."""
        observer = self.on_outcome
        if self.metrics is None:
            return observer
        count = self.metrics.count_outcome
        if observer is None:
            return count  # type: ignore[no-any-return]

        def both(record: Record, outcome: Outcome) -> None:
            count(record, outcome)
            observer(record, outcome)

        return both

    async def _stop_consumers(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            if self._task is None:  # never ran (its start failed or was cancelled)
                await self.runner.port.stop()
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


_OUTBOX_WRITTEN = "wirebus.outbox_written"


def _wake_after_outbox_commits(database: Database, relay: Relay) -> None:
    """Wake ``relay`` each time a connection that inserted outbox rows goes back to the pool.

    SQLite has no notifications: without this, a committed event waits for
    the relay's poll. A connection returns to the pool only after its
    transaction ended, so the relay's next pass sees the rows (a rolled-back
    one costs one empty pass). The flag is one identity test per statement.
    """
    from sqlalchemy import event

    from .db import outbox_table

    engine = database.engine.sync_engine

    def executed(conn: Any, clause: Any, *_: Any) -> None:
        if getattr(clause, "table", None) is outbox_table and getattr(clause, "is_insert", False):
            conn.info[_OUTBOX_WRITTEN] = True

    def checked_in(_dbapi: Any, record: Any) -> None:
        if record.info.pop(_OUTBOX_WRITTEN, False):
            relay.wake()

    event.listen(engine, "after_execute", executed)
    event.listen(engine, "checkin", checked_in)  # the engine's pool, also once it is recreated
