"""The Connect port's HTTP/1.1 connections, bounded against slow and greedy clients.

uvicorn's httptools protocol bounds nothing before a request reaches the
app: a connection that sends nothing, or its headers one byte a second,
stays open for ever; a request head can grow without limit; any number of
connections may be open. :func:`bounded_protocol` makes a subclass of it
that holds the port's :class:`ReadBounds`:

- ``max_connections``: a connection past it gets one ``503`` (Connect's
  ``unavailable`` JSON) and is closed at once, before anything is read;
- ``max_header_bytes``: a request head (request line and headers) larger
  than that gets ``431`` (``resource_exhausted``) and the connection closes;
- a request asking to upgrade (``curl --http2`` sends ``Upgrade: h2c``)
  with a body gets ``501`` (``unimplemented``): the parser would switch
  protocols after the head and the app would run on an empty body;
- a request that is not HTTP/1.1 at all (a bad request line, both
  ``Content-Length`` and chunked) gets ``400`` as Connect's
  ``invalid_argument`` JSON rather than uvicorn's text, and one DEBUG line
  rather than a WARNING each (an attacker's flood stays out of the logs);
- ``header_timeout``: from the connection's first byte (or its opening) to
  the end of the head; ``body_timeout``: from the end of the head to the
  end of the body. A connection past either is closed by
  :class:`Sweeper`, one task per server that looks at every connection a
  few times a second -- no timer per request, a timestamp stored instead.

Idle keep-alive connections close after uvicorn's ``timeout_keep_alive``.
A connection lost while a unary call runs cancels the call (the task the
app left in the scope under :data:`CALL_TASK`), as the gRPC port does: a
client that sends slow calls and leaves at once holds no call slot.

Example::

    bounds = ReadBounds(max_connections=1024, max_header_bytes=65536,
                        header_timeout=10.0, body_timeout=30.0)
    config = uvicorn.Config(asgi, http=bounded_protocol(bounds))
    sweeper = Sweeper(bounds, server.server_state.connections)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterable
from typing import Any, cast

__all__ = ["CALL_TASK", "CLIENT_GONE", "ReadBounds", "Sweeper", "bounded_protocol"]

log = logging.getLogger(__name__)

CALL_TASK = "wirebus.connect.call_task"
"""The scope key where a unary call leaves its task, to be cancelled if its client leaves."""
CLIENT_GONE = "wirebus.connect.client_gone"
"""The scope key set before that cancellation: the call ends quietly, nobody to answer."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReadBounds:
    """What one connection may cost before its request reaches the app (see the module doc)."""

    max_connections: int
    max_header_bytes: int
    header_timeout: float
    body_timeout: float

    @property
    def tick(self) -> float:
        """How often the sweeper looks: a quarter of the shorter timeout, at most 1 s."""
        return min(1.0, self.header_timeout / 4, self.body_timeout / 4)


def _refusal(status: bytes, code: str, message: str) -> bytes:
    body = b'{"code": "%s", "message": "%s"}' % (code.encode(), message.encode())
    head = (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    )
    return head + body


def bounded_protocol(bounds: ReadBounds) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, holding ``bounds`` (a class of its own per server)."""
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    too_many = _refusal(
        b"503 Service Unavailable",
        "unavailable",
        f"the Connect port has {bounds.max_connections} connections open: retry later",
    )
    too_large = _refusal(
        b"431 Request Header Fields Too Large",
        "resource_exhausted",
        f"the request head is larger than {bounds.max_header_bytes} bytes",
    )
    upgrade = _refusal(
        b"501 Not Implemented",
        "unimplemented",
        "the Connect port does not upgrade (h2c, websocket): send the request without"
        " Connection: upgrade",
    )
    not_http = _refusal(b"400 Bad Request", "invalid_argument", "not a valid HTTP/1.1 request")
    max_head = bounds.max_header_bytes

    class BoundedHttpProtocol(HttpToolsProtocol):
        """See :mod:`wirebus.connect.transport`."""

        read_deadline: float | None = None
        """When the request being read must have been read whole (``None``: not reading)."""

        _head_bytes = 0
        _in_head = True
        _refused = False

        refused = 0
        """Connections refused past ``max_connections`` (every 1000th is logged)."""

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > bounds.max_connections:
                cls = type(self)
                if cls.refused % 1000 == 0:
                    log.warning(
                        "connect: %d connections open (max_connections), refusing new ones"
                        " (%d refused so far)",
                        bounds.max_connections,
                        cls.refused + 1,
                    )
                cls.refused += 1
                self._refuse(too_many)
                return
            self.read_deadline = self.loop.time() + bounds.header_timeout

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._in_head:
                self._head_bytes += len(data)
                if self._head_bytes > max_head and not self._head_ends_in(data):
                    self._refuse(too_large)
                    return
            # uvicorn's own, less its WARNING per bad request (and upgrades are not served)
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.send_400_response("invalid HTTP request")
            except httptools.HttpParserUpgrade:
                log.debug("connect: an upgrade request (not served) went on as HTTP/1.1")

        def _head_ends_in(self, data: bytes) -> bool:
            end = data.find(b"\r\n\r\n")
            return end != -1 and self._head_bytes - len(data) + end <= max_head

        def _refuse(self, response: bytes) -> None:
            self.read_deadline = None
            self._in_head, self._refused = False, True
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            cycle = self.cycle
            super().connection_lost(exc)
            if cycle is not None and not cycle.response_complete:
                scope = cast("dict[str, Any]", cycle.scope)  # ASGI: any extension key
                task: asyncio.Task[Any] | None = scope.get(CALL_TASK)
                if task is not None and not task.done():
                    scope[CLIENT_GONE] = True
                    task.cancel()

        def send_400_response(self, msg: str) -> None:
            log.debug("connect: %s", msg)
            self._refuse(not_http)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.read_deadline = self.loop.time() + bounds.header_timeout

        def on_headers_complete(self) -> None:
            self._in_head = False
            if self.parser.should_upgrade() and _has_body(self.headers):
                self._refuse(upgrade)
                return
            running = self.cycle is not None and not self.cycle.response_complete
            # a pipelined request waits (unread) for the one before it, however long that runs
            self.read_deadline = None if running else self.loop.time() + bounds.body_timeout
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()  # starts a pipelined request, if one waits
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and cycle.more_body:
                self.read_deadline = self.loop.time() + bounds.body_timeout  # its turn now

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self._refused:
                return
            self.read_deadline = None
            self._in_head, self._head_bytes = True, 0
            super().on_message_complete()

    return BoundedHttpProtocol


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class Sweeper:
    """Closes the connections of ``connections`` whose request is read too slowly.

    ``start()`` once the server runs, ``await stop()`` when it stops.
    """

    def __init__(self, bounds: ReadBounds, connections: Iterable[Any]) -> None:
        self._tick = bounds.tick
        self._connections = connections
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start looking (on the running loop)."""
        self._task = asyncio.create_task(self._run(), name="wirebus connect sweeper")

    async def stop(self) -> None:
        """Stop looking (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def sweep(self, now: float) -> int:
        """Close the connections past their read deadline at ``now``; how many."""
        late = [
            c
            for c in self._connections
            if (deadline := getattr(c, "read_deadline", None)) is not None and now > deadline
        ]
        for connection in late:
            connection.read_deadline = None
            connection.transport.close()
        return len(late)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tick)
            closed = self.sweep(loop.time())
            if closed:
                log.info("connect: closed %d connection(s) reading a request too slowly", closed)
