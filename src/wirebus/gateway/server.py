"""The gateway: a grpc.aio server whose methods dispatch into the mediator.

Handlers are built at start-up from the app's service descriptors (see
``binding.py``); no servicer classes are written. Each method handler takes
the raw request bytes, so bytes that do not parse become INVALID_ARGUMENT
(a plain grpc.aio server answers UNKNOWN), and returns encoded bytes. Health
(``grpc.health.v1``, SERVING per service) and server reflection (``v1`` and
``v1alpha``, describing only the served services: ``reflection.py``) are
served alongside. ``max_concurrent_calls`` and the shutdown's refusals are
in ``limits.py``; deadlines, cancellation, the ``grpc_server_*`` metrics and
the access line of each call in ``methods.py``.

Example::

    async with Gateway(app, GatewayConfig(port=50051)) as gateway:
        await gateway.wait_for_termination()
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .._lifecycle import AsyncLifecycle
from ..errors import ConfigurationError, LifecycleError
from .binding import DEFAULT_LIMITS, MethodRoute
from .guard import GuardedServer
from .limits import CallLimiter
from .methods import method_handler
from .reflection import add_reflection
from .request_limits import RequestLimits
from .tls import TLSConfig

if TYPE_CHECKING:
    from ..app import App
    from ..mediator import Mediator
    from ..metrics import RpcMetrics

__all__ = ["Gateway", "GatewayConfig"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """Where and how the gateway listens.

    ``port=0`` picks a free port (read it from ``Gateway.port``).
    ``max_message_bytes`` bounds requests and responses; larger ones get
    RESOURCE_EXHAUSTED from gRPC itself. ``max_concurrent_calls`` bounds the
    app's calls in flight (streams included; health and reflection not):
    one more gets RESOURCE_EXHAUSTED at once (``None``: no bound, see
    ``limits.py``). ``grace_seconds`` is how long in-flight calls may
    finish on stop; calls that were not running get UNAVAILABLE at once.
    ``reflection=False`` turns server reflection off (UNIMPLEMENTED).
    ``max_pending_calls`` bounds the calls that wait in grpc core's own queue
    before the process takes them (a flood arriving faster than it does):
    grpc core's default (1,000) cancels the calls over it that waited more than
    a moment, so a burst of 2,000 calls saw ~10 % CANCELLED; past this bound
    grpc core still cancels (see ``_pending_queue_options``).

    Keepalive (grpc's server channel arguments, see ``keepalive_options``):
    the server pings a connection idle for ``keepalive_time_ms`` (60 s; grpc's
    own default is 2 h, longer than most load balancers and NATs keep an
    idle TCP flow) and closes it when no answer comes within
    ``keepalive_timeout_ms`` (20 s). Clients may ping every
    ``min_client_ping_interval_ms`` (10 s; grpc's 5 min makes a client
    with a 30 s keepalive get GOAWAY ``too_many_pings``), with or without
    calls in flight. ``max_connection_idle_ms`` closes a connection without
    calls for that long (GOAWAY; the client reconnects when needed), and
    ``max_connection_age_ms`` any connection that old, letting its calls
    finish for ``max_connection_age_grace_ms`` (both help clients rebalance
    across replicas); ``None`` is grpc's "never".

    Example::

        GatewayConfig(port=50051, max_concurrent_calls=256, grace_seconds=20)
    """

    host: str = "127.0.0.1"
    port: int = 50051
    max_message_bytes: int = 4 * 1024 * 1024
    grace_seconds: float = 10.0
    max_concurrent_calls: int | None = None
    max_pending_calls: int = 20_000
    tls: TLSConfig | None = None
    """Serve TLS (and mutual TLS with a client CA) instead of plaintext."""
    limits: RequestLimits = DEFAULT_LIMITS
    """Repeated elements one request may hold (bounded decode cost): see ``RequestLimits``."""
    reflection: bool = True
    health: bool = True
    options: Sequence[tuple[str, Any]] = ()
    keepalive_time_ms: int = 60_000
    keepalive_timeout_ms: int = 20_000
    min_client_ping_interval_ms: int = 10_000
    max_connection_idle_ms: int | None = None
    max_connection_age_ms: int | None = None
    max_connection_age_grace_ms: int | None = None

    def __post_init__(self) -> None:
        for name in ("keepalive_time_ms", "keepalive_timeout_ms", "min_client_ping_interval_ms"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be positive, not {getattr(self, name)}")
        for name in (
            "max_connection_idle_ms",
            "max_connection_age_ms",
            "max_connection_age_grace_ms",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigurationError(f"{name} must be positive or None, not {value}")
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"port must be 0..65535, not {self.port}")
        if self.max_message_bytes < 1:
            raise ConfigurationError(
                f"max_message_bytes must be positive, not {self.max_message_bytes}"
            )
        if self.grace_seconds < 0:
            raise ConfigurationError(f"grace_seconds must be >= 0, not {self.grace_seconds}")
        if self.max_pending_calls < 1:
            raise ConfigurationError(
                f"max_pending_calls must be positive, not {self.max_pending_calls}"
            )
        if self.max_concurrent_calls is not None and self.max_concurrent_calls < 1:
            raise ConfigurationError(
                f"max_concurrent_calls must be >= 1 (or None for no bound),"
                f" not {self.max_concurrent_calls}"
            )


def keepalive_options(config: GatewayConfig) -> list[tuple[str, int]]:
    """grpc's server channel arguments for ``config``'s keepalive settings.

    Example::

        keepalive_options(GatewayConfig(max_connection_idle_ms=300_000))
    """
    options = [
        ("grpc.keepalive_time_ms", config.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", config.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", config.min_client_ping_interval_ms),
        ("grpc.http2.max_ping_strikes", 2),
    ]
    optional = (
        ("grpc.max_connection_idle_ms", config.max_connection_idle_ms),
        ("grpc.max_connection_age_ms", config.max_connection_age_ms),
        ("grpc.max_connection_age_grace_ms", config.max_connection_age_grace_ms),
    )
    options += [(name, value) for name, value in optional if value is not None]
    return options


def _pending_queue_options(bound: int) -> list[tuple[str, int]]:
    """grpc core's bound on calls waiting for the application to take them.

    These channel arguments are grpc core's (``GRPC_ARG_SERVER_MAX_PENDING_REQUESTS``
    and its hard limit, defined in ``src/core/server/server.h``, not in the public
    headers: kept as an escape hatch by grpc). They are set here only, and
    ``tests/unit/test_gateway_limits.py`` proves on every run that a burst
    over grpc's default is served, not CANCELLED, so a grpcio that drops them
    fails the suite instead of silently cancelling calls again.
    """
    return [
        ("grpc.server.max_pending_requests", bound),
        ("grpc.server.max_pending_requests_hard_limit", bound),
    ]


class Gateway(AsyncLifecycle):
    """Serves an :class:`~wirebus.App`'s services over gRPC.

    ``start()``/``stop()`` or ``async with``; ``stop`` is idempotent and
    a stopped gateway cannot be started again. ``metrics`` (a
    :class:`~wirebus.metrics.RpcMetrics`) counts every call of the app's
    methods; without it nothing is counted.
    """

    def __init__(
        self,
        app: App,
        config: GatewayConfig | None = None,
        *,
        mediator: Mediator | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
        metrics: RpcMetrics | None = None,
    ) -> None:
        self.app = app
        self.config = config or GatewayConfig()
        self._routes = app.check()
        self._mediator = mediator
        self._owns_mediator = mediator is None
        self._interceptors = tuple(interceptors)
        self._server: grpc.aio.Server | None = None
        self._health: Any = None  # grpc_health ships no type information
        self._port: int | None = None
        self._limiter = CallLimiter(limit=self.config.max_concurrent_calls, domain=app.name)
        self._metrics = metrics
        if metrics is not None:
            limiter = self._limiter
            metrics.track_in_flight(lambda: limiter.active)
        self._state = "new"

    @property
    def port(self) -> int:
        """The port the gateway listens on (after start)."""
        if self._port is None:
            raise LifecycleError("the gateway has not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` for a client channel."""
        return f"{self.config.host}:{self.port}"

    @property
    def calls_in_flight(self) -> int:
        """The app's calls running now (what ``max_concurrent_calls`` bounds)."""
        return self._limiter.active

    @property
    def routes(self) -> tuple[MethodRoute, ...]:
        """The method bindings this gateway serves."""
        return tuple(self._routes)

    async def start(self) -> None:
        """Bind the port and start serving."""
        if self._state != "new":
            raise LifecycleError(
                f"a {self._state} gateway cannot be started again; build a new one"
            )
        self._state = "started"
        if self._mediator is None:
            self._mediator = self.app.mediator()
        await self._mediator.start()
        cfg = self.config
        limit = cfg.max_message_bytes
        options = [
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
            *_pending_queue_options(cfg.max_pending_calls),
            *keepalive_options(cfg),
            *cfg.options,
        ]
        server = grpc.aio.server(interceptors=self._interceptors, options=options)
        self._server = server
        self._register(server, self._mediator)
        address = f"{cfg.host}:{cfg.port}"
        try:
            if cfg.tls is None:
                self._port = server.add_insecure_port(address)
            else:
                self._port = server.add_secure_port(address, cfg.tls.credentials())
        except RuntimeError:  # grpc: "Failed to bind to address ..."
            self._port = 0
        if self._port == 0:
            raise LifecycleError(
                f"cannot listen on {cfg.host}:{cfg.port}: the port is in use by another"
                " process, or the address is not this machine's (choose another with --port)"
            )
        await server.start()
        await self._set_serving()
        count = len(self._routes)
        methods = "method" if count == 1 else "methods"
        log.info("gateway serving %d %s on %s", count, methods, self.address)

    def _register(self, server: grpc.aio.Server, mediator: Mediator) -> None:
        domain = self.app.name
        by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
        for route in self._routes:
            handler = method_handler(
                route, mediator, domain, self._limiter, self.config.limits, rpc=self._metrics
            )
            by_service.setdefault(route.service, {})[route.method] = handler
        for service, handlers in by_service.items():
            server.add_registered_method_handlers(service, handlers)  # type: ignore[attr-defined]
        services = list(self.app.services)
        # grpc's own services are public unless the app's authentication protects
        # them; then their handlers (only theirs) check credentials first
        auth = self.app.authentication
        guarded = GuardedServer(server, auth, domain=domain) if auth is not None else None
        if self.config.health:
            self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
            protect = guarded is not None and guarded.authentication.protect_health
            target = guarded if protect and guarded is not None else server
            health_pb2_grpc.add_HealthServicer_to_server(self._health, target)
            services.append(health_pb2.DESCRIPTOR.services_by_name["Health"])
        if self.config.reflection:
            protect = guarded is not None and guarded.authentication.protect_reflection
            add_reflection(guarded if protect and guarded is not None else server, services)

    async def _set_serving(self) -> None:
        if self._health is None:
            return
        serving = health_pb2.HealthCheckResponse.SERVING
        await self._health.set("", serving)
        for service in self.app.services:
            await self._health.set(service.full_name, serving)

    async def stop(self, grace: float | None = None) -> None:
        """Stop: refuse new calls, let running ones finish for ``grace`` seconds, close.

        From the first moment every call that is not running yet, new or
        queued in grpc core, gets UNAVAILABLE at once (health turns
        NOT_SERVING); the server itself shuts down once the running calls
        are done (or the grace has passed, which cancels them).
        """
        if self._state != "started":
            self._state = "stopped"
            return
        self._state = "stopped"
        grace = self.config.grace_seconds if grace is None else grace
        deadline = time.monotonic() + grace
        self._limiter.drain()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            if not await self._limiter.wait_drained(grace):
                log.warning(
                    "gateway: %d call(s) still running after the grace", self.calls_in_flight
                )
            await self._server.stop(max(0.0, deadline - time.monotonic()))
        if self._owns_mediator and self._mediator is not None:
            await self._mediator.close()
        log.info("gateway stopped")

    async def wait_for_termination(self) -> None:
        """Wait until the server terminates (after ``stop``)."""
        if self._server is not None:
            await self._server.wait_for_termination()
