"""The gateway: a grpc.aio server whose methods dispatch into the mediator.

Handlers are built at start-up from the app's service descriptors (see
``binding.py``); no servicer classes are written. Each method handler takes
the raw request bytes, so bytes that do not parse become INVALID_ARGUMENT
(a plain grpc.aio server answers UNKNOWN), and returns encoded bytes. Health
(``grpc.health.v1``, SERVING per service) and server reflection (``v1`` and
``v1alpha``, describing only the served services: ``reflection.py``) are
served alongside. ``max_concurrent_calls`` and the shutdown's refusals are
in ``limits.py``.

Example::

    async with Gateway(app, GatewayConfig(port=50051)) as gateway:
        await gateway.wait_for_termination()
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from .._lifecycle import AsyncLifecycle
from ..context import CallInfo, bind_call
from ..errors import ConfigurationError, ConversionError, LifecycleError
from ..messages import converter_of, proto_class_of
from .binding import DEFAULT_LIMITS, MethodRoute
from .errors import DETAILS_KEY, malformed_request, status_for
from .limits import CallLimiter
from .reflection import add_reflection
from .request_limits import RequestLimits
from .tls import TLSConfig

if TYPE_CHECKING:
    from ..app import App
    from ..mediator import Mediator

__all__ = ["Gateway", "GatewayConfig"]

log = logging.getLogger(__name__)

_Context = grpc.aio.ServicerContext[Any, Any]


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

    def __post_init__(self) -> None:
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
    a stopped gateway cannot be started again.
    """

    def __init__(
        self,
        app: App,
        config: GatewayConfig | None = None,
        *,
        mediator: Mediator | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
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
            *cfg.options,
        ]
        server = grpc.aio.server(interceptors=self._interceptors, options=options)
        self._server = server
        self._register(server, self._mediator)
        address = f"{cfg.host}:{cfg.port}"
        if cfg.tls is None:
            self._port = server.add_insecure_port(address)
        else:
            self._port = server.add_secure_port(address, cfg.tls.credentials())
        if self._port == 0:
            raise LifecycleError(f"could not bind {cfg.host}:{cfg.port}")
        await server.start()
        await self._set_serving()
        log.info("gateway serving %d methods on %s", len(self._routes), self.address)

    def _register(self, server: grpc.aio.Server, mediator: Mediator) -> None:
        domain = self.app.name
        by_service: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
        for route in self._routes:
            handler = _method_handler(route, mediator, domain, self._limiter, self.config.limits)
            by_service.setdefault(route.service, {})[route.method] = handler
        for service, handlers in by_service.items():
            server.add_registered_method_handlers(service, handlers)  # type: ignore[attr-defined]
        services = list(self.app.services)
        if self.config.health:
            self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            services.append(health_pb2.DESCRIPTOR.services_by_name["Health"])
        if self.config.reflection:
            add_reflection(server, services)

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


# ---------------------------------------------------------------- method handlers


async def _abort(context: _Context, status: tuple[grpc.StatusCode, str, bytes]) -> NoReturn:
    code, message, details = status
    await context.abort(code, message, trailing_metadata=((DETAILS_KEY, details),))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _method_handler(
    route: MethodRoute,
    mediator: Mediator,
    domain: str,
    limiter: CallLimiter,
    limits: RequestLimits = DEFAULT_LIMITS,
) -> grpc.RpcMethodHandler[Any, Any]:
    path = route.path
    if route.spec is None:

        async def unimplemented(request: bytes, context: _Context) -> bytes:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{path} is not implemented")
            raise AssertionError("unreachable")  # pragma: no cover

        return grpc.unary_unary_rpc_method_handler(unimplemented)
    decode = route.decoder(limits)
    encode = _encoder(route)
    full_name = route.request_proto.DESCRIPTOR.full_name
    fail = functools.partial(status_for, domain=domain, method=path)
    admit, release, refusal = limiter.admit, limiter.release, limiter.refusal

    async def reject(exc: Exception, context: _Context) -> NoReturn:
        if isinstance(exc, DecodeError):
            await _abort(context, malformed_request(full_name, domain=domain))
        await _abort(context, fail(exc))

    if route.arity == "unary_stream":
        open_stream = mediator.stream_runner(route.spec.message_type)

        async def unary_stream(request: bytes, context: _Context) -> AsyncIterator[bytes]:
            if not admit():
                await _abort(context, refusal())
            try:
                bind_call(functools.partial(CallInfo.from_grpc, path, context))
                try:
                    message = decode(request)
                except (DecodeError, ConversionError) as exc:
                    await reject(exc, context)
                try:
                    items: AsyncIterator[Any] = await open_stream(message)
                    async for item in items:
                        yield encode(item)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:
                    await _abort(context, fail(exc))
            finally:
                release()

        return grpc.unary_stream_rpc_method_handler(unary_stream)

    run: Callable[[Any], Awaitable[Any]] = mediator.runner(route.spec.message_type)

    async def unary_unary(request: bytes, context: _Context) -> bytes:
        if not admit():
            await _abort(context, refusal())
        try:
            bind_call(functools.partial(CallInfo.from_grpc, path, context))
            try:
                message = decode(request)
            except (DecodeError, ConversionError) as exc:
                await reject(exc, context)
            try:
                return encode(await run(message))
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await _abort(context, fail(exc))
        finally:
            release()

    return grpc.unary_unary_rpc_method_handler(unary_unary)


def _encoder(route: MethodRoute) -> Callable[[Any], bytes]:
    """``result -> bytes``: specialised for the handler's declared return type."""
    response = route.response_proto
    spec = route.spec
    declared: Any = spec.params.returns if spec else None
    if spec is not None and spec.kind == "stream":
        args = getattr(declared, "__args__", ())
        declared = args[0] if args else None
    fast: Callable[[Any], bytes] | None = None
    if declared is response:
        fast = response.SerializeToString
    elif isinstance(declared, type) and proto_class_of(declared) is response:
        conv = converter_of(declared)
        to_proto: Callable[[Any], ProtoMessage] = conv.to_proto if conv else declared.proto  # type: ignore[attr-defined]

        def fast(result: Any) -> bytes:
            return to_proto(result).SerializeToString()

    def generic(result: Any) -> bytes:
        if result is None:
            return b""  # the default instance of any message
        if isinstance(result, ProtoMessage):
            if type(result) is not response:
                raise _wrong_type(route, result)
            return result.SerializeToString()
        if proto_class_of(type(result)) is response:
            return result.proto().SerializeToString()  # type: ignore[no-any-return]
        raise _wrong_type(route, result)

    if fast is None:
        return generic
    declared_type = declared

    def encode(result: Any) -> bytes:
        if type(result) is declared_type:
            return fast(result)
        return generic(result)

    return encode


def _wrong_type(route: MethodRoute, result: object) -> TypeError:
    expected = route.response_proto.DESCRIPTOR.full_name
    return TypeError(f"{route.path} answers {expected}, got {type(result).__qualname__}")
