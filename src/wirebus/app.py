"""``App``: the one object a user builds.

It owns its routers, services, dependency providers and behaviours (no
globals: two apps in one process share nothing) and validates the whole
wiring at start-up, raising one error that lists every problem.

Example::

    from wirebus import App
    from shop.orders.v1 import orders_pb2

    app = App(
        name="shop",
        services=[orders_pb2],               # served over gRPC by `wirebus serve`
        routers=[orders.router, payments.router],
        providers=[ShopProvider()],          # dishka providers
        behaviours=[log_with_correlation_id],
    )

    async with app.mediator() as mediator:
        await mediator.send(PlaceOrder(...))
"""

from __future__ import annotations

import typing
import weakref
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from dishka import Provider
from google.protobuf.descriptor import ServiceDescriptor

from .broker import EventPublisher
from .codec import EventRegistry
from .di import build_container
from .errors import ConfigurationError
from .gateway.binding import MethodRoute, resolve_routes, service_descriptors
from .mediator import EventDispatch, Mediator, declares_events
from .messages import proto_class_of
from .pipeline import Behaviour, Pipeline, Stage
from .router import HandlerSpec, Router
from .sink import EventSink

if TYPE_CHECKING:
    from .auth import Authentication
    from .db import Database
    from .saga.definition import Saga
    from .saga.engine import SagaEngine
    from .tracing import Tracing
    from .validation import Validation

__all__ = ["App"]


class App:
    """Handlers, services and settings of one service; builds mediators and gateways.

    ``event_dispatch`` is ``"sequential"`` (default) or ``"concurrent"``
    (bounded by ``max_concurrency``). ``allow_unbound=True`` lets a served
    method without a handler answer UNIMPLEMENTED instead of failing start-up.
    """

    def __init__(
        self,
        *,
        name: str = "wirebus",
        services: Iterable[ModuleType | ServiceDescriptor] = (),
        routers: Iterable[Router] = (),
        providers: Iterable[Provider] = (),
        behaviours: Iterable[Behaviour] = (),
        event_dispatch: EventDispatch = "sequential",
        max_concurrency: int = 16,
        allow_unbound: bool = False,
        events: Iterable[type] = (),
        source: str | None = None,
        metadata: Any = None,
        migrations: str | None = None,
        authentication: Authentication | None = None,
        validation: Validation | None = None,
        tracing: Tracing | bool | None = None,
        sagas: Iterable[Saga[Any]] = (),
    ) -> None:
        if event_dispatch not in ("sequential", "concurrent"):
            raise ConfigurationError(
                f"event_dispatch must be 'sequential' or 'concurrent', not {event_dispatch!r}"
            )
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be at least 1, not {max_concurrency}")
        self.name = name
        self.source = source or name
        self.metadata = metadata
        """The app's own SQLAlchemy ``MetaData``: it keeps state in a database."""
        self.migrations = migrations
        """The app's own Alembic script directory, run by ``wirebus db upgrade``."""
        self._published_events = list(events)
        self.event_dispatch: EventDispatch = event_dispatch
        self.max_concurrency = max_concurrency
        self.allow_unbound = allow_unbound
        self._services = service_descriptors(services)
        self._routers: list[Router] = []
        self._providers = list(providers)
        self._behaviours = list(behaviours)
        self.authentication = authentication
        """The authentication stage (outermost), if calls must prove who they are."""
        self.validation = validation
        """The validation stage (after authentication): the protos' ``buf.validate`` rules."""
        self._tracing_choice = tracing
        """``None``: trace if a tracer provider is configured (checked once); a bool; a Tracing."""
        self._registry: EventRegistry | None = None
        for router in routers:
            self.include_router(router)
        self.sagas: tuple[Saga[Any], ...] = tuple(sagas)
        """The app's sagas (``wirebus.saga``): their handlers are generated routers."""
        self._saga_engines: weakref.WeakKeyDictionary[Mediator, SagaEngine] = (
            weakref.WeakKeyDictionary()
        )
        if self.sagas:
            from .saga.wiring import saga_routers

            for router in saga_routers(self.sagas):
                self.include_router(router)

    # ------------------------------------------------------------ building

    def include_router(self, router: Router) -> None:
        """Add a slice's handlers."""
        if any(r is router for r in self._routers):
            raise ConfigurationError(f"router {router.name!r} is included twice")
        self._routers.append(router)
        self._registry = None  # rebuilt, with this router's events, when next asked for

    def add_behaviour(self, behaviour: Behaviour) -> None:
        """Append a pipeline behaviour; the first added is the outermost."""
        self._behaviours.append(behaviour)

    @property
    def services(self) -> tuple[ServiceDescriptor, ...]:
        """The gRPC services this app serves."""
        return tuple(self._services)

    @property
    def specs(self) -> tuple[HandlerSpec, ...]:
        """Every handler of every included router."""
        return tuple(s for r in self._routers for s in r.specs)

    def check(self) -> list[MethodRoute]:
        """Validate the wiring; return the method routes. Raises ``ConfigurationError``."""
        problems: list[str] = []
        seen: dict[tuple[str, type], HandlerSpec] = {}
        for spec in self.specs:
            if spec.kind == "event":
                continue
            # one handler of one message (request or stream), and one of a stream of it per shape
            key = (spec.kind if spec.params.streams_in else "one", spec.message_type)
            other = seen.get(key)
            if other is not None:
                problems.append(_two_handlers(spec.message_type, other, spec))
            seen[key] = spec
        if problems:
            raise ConfigurationError("invalid wiring:\n  - " + "\n  - ".join(problems))
        return resolve_routes(self._services, self.specs, allow_unbound=self.allow_unbound)

    def registry(self) -> EventRegistry:
        """Every event that travels as protobuf, built once and read-only.

        The events of ``events=``, the handled ones, and those a handler's
        return annotation declares. Event dataclasses not bound to a
        protobuf class stay in-process.
        """
        if self._registry is None:
            registry = EventRegistry()
            for tp in self._published_events:
                registry.add(tp)
            for spec in self.specs:
                if spec.kind == "event" and proto_class_of(spec.message_type) is not None:
                    registry.add(spec.message_type)
                for tp in _declared_events(spec.params.returns):
                    if proto_class_of(tp) is not None:
                        registry.add(tp)
            registry.freeze()
            self._registry = registry
        return self._registry

    def mediator(
        self,
        *,
        publisher: EventPublisher | None = None,
        database: Database | None = None,
        owns_database: bool = True,
    ) -> Mediator:
        """Validate the wiring and build a mediator with a fresh dependency container.

        With a ``database``, the pipeline gets a unit of work: the call's
        ``AsyncSession`` and the outbox rows of the events it emits commit
        together, for a relay to publish. An app with ``metadata=`` and no
        ``database`` gets a private in-memory SQLite one for its state, with
        no outbox. Without an outbox, travelling events go to the
        ``publisher`` if given; all others are handled in-process.
        A ``database`` given here is started and closed with the mediator
        unless ``owns_database=False`` (the runtime owns its database and
        passes that); the private one is always the mediator's own.
        """
        self.check()
        specs = self.specs
        registry = self.registry()
        sink = EventSink(registry, publisher=publisher)
        owns: list[Any] = []
        uses: list[Any] = []
        outbox = database is not None
        if database is not None:
            (owns if owns_database else uses).append(database)
        elif self.metadata is not None:
            from .db import Database as _Database

            database = _Database.in_memory(extra_metadata=[self.metadata])
            owns.append(database)
        if self.validation is not None:
            self.validation.prepare(
                s.message_type for s in specs if s.kind in self.validation.kinds
            )
        tracing = self.tracing()
        stages: list[Behaviour | Stage] = self._outer_stages()
        providers = list(self._providers)
        if database is not None:
            from .broker import EventEncoder
            from .outbox.uow import DatabaseProvider, UnitOfWorkStage

            encoder = EventEncoder(registry, source=self.source, tracing=tracing)
            stages.append(UnitOfWorkStage(database, encoder, sink, outbox=outbox))
            providers.append(DatabaseProvider(database))
        stages = _observed(stages, tracing, publisher is not None or database is not None)
        holder: list[Mediator] = []
        engine = None
        if self.sagas:
            from .saga.wiring import SagaProvider, build_engine

            engine = build_engine(self.sagas, database=database, mediator=lambda: holder[0])
            providers.append(SagaProvider(engine))
        container = build_container(providers, specs, lambda: holder[0])
        mediator = Mediator(
            specs,
            container=container,
            pipeline=Pipeline(stages),
            sink=sink,
            event_dispatch=self.event_dispatch,
            max_concurrency=self.max_concurrency,
            owns=owns,
            uses=uses,
        )
        holder.append(mediator)
        if engine is not None:
            self._saga_engines[mediator] = engine
        return mediator

    def saga_engine(self, mediator: Mediator) -> SagaEngine:
        """The saga engine of a mediator this app built (its poller and recovery run it).

        Example::

            await app.saga_engine(mediator).fire_due()
        """
        try:
            return self._saga_engines[mediator]
        except KeyError:
            raise ConfigurationError(
                "this mediator runs no sagas: build it with app.mediator() of an App(sagas=[...])"
            ) from None

    def tracing(self) -> Tracing | None:
        """The app's :class:`~wirebus.tracing.Tracing`, decided once (``None``: off).

        ``App(tracing=None)`` (the default) traces when a global tracer
        provider is configured by the time the first mediator is built.
        """
        choice = self._tracing_choice
        if choice is None or choice is True:
            from .tracing import Tracing

            configured = Tracing.configured()
            if configured is None and choice is True:
                configured = Tracing()
            self._tracing_choice = configured if configured is not None else False
            return configured
        return None if choice is False else choice

    def _outer_stages(self) -> list[Behaviour | Stage]:
        """Authentication and validation (if any), then the app's behaviours, outermost first."""
        outer: list[Behaviour | Stage] = []
        if self.authentication is not None:
            outer.append(self.authentication)
        if self.validation is not None:
            outer.append(self.validation)
        return [*outer, *self._behaviours]

    def describe(self, *, database: bool = False) -> str:
        """The pipeline, each RPC method with its handler, each event with its handlers.

        ``database=True`` describes the app as it runs with a database (the
        runtime always has one): with the unit-of-work stage.
        """
        routes = self.check()
        stages = [Stage.of(b).name for b in self._outer_stages()]
        if database:
            stages.append("unit of work")
        if self.tracing() is not None:
            stages.insert(0, "tracing")
        elif database:
            stages.insert(0, "correlation")
        lines = [f"app {self.name}", "pipeline (outermost first):"]
        lines.append("  " + " -> ".join([*stages, "handler"]))
        lines.append("methods:")
        for route in routes:
            handler = _label(route.spec) if route.spec else "(unbound: UNIMPLEMENTED)"
            lines.append(f"  {route.path} [{route.arity}] -> {handler}")
        lines.append("events:")
        events: dict[type, list[str]] = {}
        for spec in self.specs:
            if spec.kind == "event":
                events.setdefault(spec.message_type, []).append(spec.name)
        if not events:
            lines.append("  (none)")
        registry = self.registry()
        for event_type, names in events.items():
            kind = registry.by_type(event_type)
            label = (
                f"{kind.full_name} on topic {kind.topic}"
                if kind
                else f"{event_type.__qualname__} (in-process only)"
            )
            lines.append(f"  {label} -> {', '.join(names)}")
        lines.append("topics:")
        for kind in sorted(registry, key=lambda k: (k.topic, k.full_name)):
            key = f"key {kind.key_field}" if kind.key_field else "no key"
            source = "declared" if kind.topic_declared else "from the proto package"
            compacted = ", compacted" if kind.compacted else ""
            lines.append(
                f"  {kind.topic}: {kind.full_name} (dlq {kind.topic}.dlq), {key},"
                f" topic {source}{compacted}"
            )
        requests = [s for s in self.specs if s.kind != "event"]
        lines.append("in-process requests:")
        for spec in requests:
            lines.append(f"  {spec.message_type.__qualname__} [{spec.kind}] -> {_label(spec)}")
        if self.sagas:
            from .saga.describe import describe_sagas

            lines.extend(describe_sagas(self.sagas))
        return "\n".join(lines)


def _two_handlers(message_type: type, first: HandlerSpec, second: HandlerSpec) -> str:
    """The problem of a request type registered twice (a chain counts as its handler)."""
    name = message_type.__qualname__
    chains = [s for s in (first, second) if s.composite is not None and s.composite.chain]
    if len(chains) == 1:
        handler = second if chains[0] is first else first
        return (
            f"{name} has both a handler ({handler.name}) and a chain ({chains[0].name}):"
            " make the handler the chain's last link, or drop one"
        )
    return f"{name} has two handlers: {first.name} and {second.name}"


def _label(spec: HandlerSpec) -> str:
    """A handler as ``describe`` prints it: a chain's links in order, its fallback, breaker."""
    return spec.name if spec.composite is None else spec.composite.describe()


def _observed(
    stages: list[Behaviour | Stage], tracing: Tracing | None, events_leave: bool
) -> list[Behaviour | Stage]:
    """``stages`` with tracing outermost (and a span around each), or correlation.

    Without tracing, the correlation stage is added only when events leave
    the process (a database or a publisher): a bare mediator keeps its
    direct calls.
    """
    if tracing is None:
        if not events_leave:
            return stages
        from .correlation import CorrelationStage

        return [CorrelationStage(), *stages]
    plain = [Stage.of(s) for s in stages]
    if not plain:
        return [*tracing.stages(), tracing.handler_stage()]
    traced = [tracing.traced(s, innermost=i == len(plain) - 1) for i, s in enumerate(plain)]
    return [*tracing.stages(), *traced]


def _declared_events(annotation: Any) -> list[type]:
    """Event classes a handler's return annotation names."""
    if not declares_events(annotation):
        return []
    candidates = typing.get_args(annotation) or (annotation,)
    return [c for c in candidates if isinstance(c, type)]
