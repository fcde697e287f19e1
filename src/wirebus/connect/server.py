"""``ConnectServer``: the Connect/gRPC-Web port on uvicorn, with the gateway's lifecycle.

uvicorn (``httptools`` parser, on the running event loop -- uvloop under the
CLI) measured cheapest per call here for Connect (see ``bench/README.md``).
The server binds its own socket (a taken port is one ``LifecycleError``
line), runs in the process's event loop beside the grpc.aio gateway and
installs no signal handlers and no logging configuration (both are the
application's). ``stop`` drains as the gateway does: health turns
NOT_SERVING and new calls get ``unavailable`` at once, running calls have
``grace_seconds`` to finish, then connections close.

uvicorn and httptools come with the ``connect`` extra
(``pip install 'wirebus[connect]'``).

Example::

    async with ConnectServer(app, ConnectConfig(port=8080, cors_origins=("http://localhost:5173",))):
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .._lifecycle import AsyncLifecycle
from ..errors import ConfigurationError, LifecycleError
from ..gateway.binding import DEFAULT_LIMITS
from ..gateway.limits import CallLimiter
from ..gateway.request_limits import RequestLimits
from .app import ConnectApp
from .cors import Cors
from .transport import ReadBounds, Sweeper, bounded_protocol

if TYPE_CHECKING:
    from ..app import App
    from ..mediator import Mediator
    from ..metrics import RpcMetrics

__all__ = ["ConnectConfig", "ConnectServer", "MISSING_EXTRA"]

log = logging.getLogger(__name__)

MISSING_EXTRA = "the Connect port needs uvicorn and httptools: pip install 'wirebus[connect]'"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConnectConfig:
    """Where and how the Connect port listens (``port=0``: a free one, read ``ConnectServer.port``).

    ``cors_origins``: browser origins allowed to call (``"*"``: any; none:
    no CORS headers at all). ``max_concurrent_calls`` bounds this port's
    calls in flight as the gateway's bounds its own (``resource_exhausted``
    at once past it).

    What a client may cost before its call runs (``transport.py``):

    - ``max_message_bytes``: a request body, compressed or inflated; a
      ``Content-Length`` above it is refused before the body is read (a
      client-streaming call: each of its messages, refused once its
      envelope's prefix says more);
    - ``max_connections`` (1024): open connections; one more gets ``503``;
    - ``max_header_bytes`` (64 KiB): a request's line and headers (``431``);
    - ``header_timeout_seconds`` (10): from a connection's opening (or a
      request's first byte) to the end of its headers, and
      ``body_timeout_seconds`` (30): from there to the end of the body; a
      connection past either is closed (a slowloris holds no call slot: a
      call is admitted only once its body is read -- but a client-streaming
      call, admitted at once as on the gRPC port, holds one until its body
      ends or ``body_timeout_seconds`` passes);
    - ``keep_alive_seconds`` (5): an idle connection between requests.

    Example::

        ConnectConfig(port=8080, cors_origins=("https://shop.example",))
    """

    host: str = "127.0.0.1"
    port: int = 8080
    max_message_bytes: int = 4 * 1024 * 1024
    grace_seconds: float = 10.0
    max_concurrent_calls: int | None = None
    cors_origins: Sequence[str] = ()
    limits: RequestLimits = DEFAULT_LIMITS
    health: bool = True
    max_connections: int = 1024
    max_header_bytes: int = 64 * 1024
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    keep_alive_seconds: int = 5

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigurationError(f"connect port must be 0..65535, not {self.port}")
        for name in ("max_message_bytes", "max_connections", "max_header_bytes"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be positive, not {getattr(self, name)}")
        for name in ("header_timeout_seconds", "body_timeout_seconds", "keep_alive_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be > 0 seconds, not {getattr(self, name)}")
        if self.grace_seconds < 0:
            raise ConfigurationError(f"grace_seconds must be >= 0, not {self.grace_seconds}")
        if isinstance(self.cors_origins, str):
            raise ConfigurationError("cors_origins is a sequence of origins, not one string")
        if self.cors_origins:
            Cors(origins=tuple(self.cors_origins))  # validates them now


class ConnectServer(AsyncLifecycle):
    """Serves an :class:`~wirebus.App`'s services over Connect and gRPC-Web.

    Pass the gateway's ``mediator`` to share it (the runtime does); without
    one the server builds and owns its own. ``metrics`` counts the calls
    in the same ``grpc_server_*`` series as the gateway's (``observe.py``).
    ``start``/``stop`` or ``async with``; ``stop`` is idempotent and a
    stopped server cannot start again.
    """

    def __init__(
        self,
        app: App,
        config: ConnectConfig | None = None,
        *,
        mediator: Mediator | None = None,
        metrics: RpcMetrics | None = None,
    ) -> None:
        self.app = app
        self._metrics = metrics
        self.config = config or ConnectConfig()
        self._routes = app.check()
        self._mediator = mediator
        self._owns_mediator = mediator is None
        self._limiter = CallLimiter(limit=self.config.max_concurrent_calls, domain=app.name)
        self._server: Any = None
        self._sweeper: Sweeper | None = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None
        self._state = "new"

    @property
    def port(self) -> int:
        """The port the server listens on (after start)."""
        if self._port is None:
            raise LifecycleError("the Connect server has not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` for a Connect client's base URL."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def calls_in_flight(self) -> int:
        """The app's calls running now on this port."""
        return self._limiter.active

    async def start(self) -> None:
        """Bind the port and start serving."""
        if self._state != "new":
            raise LifecycleError(f"a {self._state} Connect server cannot be started again")
        self._state = "started"
        try:
            import uvicorn
        except ImportError:
            raise ConfigurationError(MISSING_EXTRA) from None
        if self._mediator is None:
            self._mediator = self.app.mediator()
            await self._mediator.start()
        cfg = self.config
        cors = Cors(origins=tuple(cfg.cors_origins)) if cfg.cors_origins else None
        asgi = ConnectApp(
            self._routes,
            self._mediator,
            domain=self.app.name,
            limiter=self._limiter,
            limits=cfg.limits,
            max_message_bytes=cfg.max_message_bytes,
            cors=cors,
            health=cfg.health,
            rpc=self._metrics,
        )
        sock = _bind(cfg.host, cfg.port)
        self._port = sock.getsockname()[1]
        bounds = ReadBounds(
            max_connections=cfg.max_connections,
            max_header_bytes=cfg.max_header_bytes,
            header_timeout=cfg.header_timeout_seconds,
            body_timeout=cfg.body_timeout_seconds,
        )
        uv_config = uvicorn.Config(
            asgi,
            http=_http_impl(bounds),
            lifespan="off",
            timeout_keep_alive=cfg.keep_alive_seconds,
            ws="none",  # Connect and gRPC-Web only: an upgrade request stays HTTP/1.1
            h11_max_incomplete_event_size=cfg.max_header_bytes,
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=max(1, round(cfg.grace_seconds)),
        )
        self._server = _quiet_server(uvicorn, uv_config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="wirebus connect")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what uvicorn raised
                raise LifecycleError("the Connect server stopped while starting")
            await asyncio.sleep(0.005)
        self._sweeper = Sweeper(bounds, self._server.server_state.connections)
        self._sweeper.start()
        count = len(self._routes)
        methods = "method" if count == 1 else "methods"
        log.info("Connect and gRPC-Web on %s (%d %s)", self.url, count, methods)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let running ones finish for ``grace`` seconds, close."""
        if self._state != "started":
            self._state = "stopped"
            return
        self._state = "stopped"
        grace = self.config.grace_seconds if grace is None else grace
        self._limiter.drain()
        if not await self._limiter.wait_drained(grace):
            log.warning("connect: %d call(s) still running after the grace", self.calls_in_flight)
        if self._sweeper is not None:
            await self._sweeper.stop()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            self._server.force_exit = grace == 0
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._owns_mediator and self._mediator is not None:
            await self._mediator.close()
        log.info("Connect server stopped")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise LifecycleError(
            f"cannot listen on {host}:{port} ({exc.strerror}): the port is in use by another"
            " process, or the address is not this machine's (choose another with --connect-port)"
        ) from None
    sock.set_inheritable(True)
    return sock


def _http_impl(bounds: ReadBounds) -> type[asyncio.Protocol] | str:
    """httptools, bounded (``transport.py``); h11 bounds only the head's size."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return bounded_protocol(bounds)


def _quiet_server(uvicorn: Any, config: Any) -> Any:
    """uvicorn's server without its signal handlers (the application's own stop runs)."""

    class QuietServer(uvicorn.Server):  # type: ignore[misc]
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer(config)
