"""The ASGI app of the Connect port: Connect (binary and JSON) and gRPC-Web, one pipeline.

Routes are the gateway's (``App.check()``), each an :class:`~.endpoints.Endpoint`
over the same decoder, mediator runner, encoder and error mapping as the
gRPC port; this module only speaks the protocols (the shapes of their
answers are ``replies.py``'s):

- **Connect unary**: ``POST /pkg.Service/Method`` with ``application/proto``
  or ``application/json``; errors as Connect's JSON with the spec's HTTP
  status. ``curl -H 'content-type: application/json' -d '{...}'`` works.
- **Connect streaming** (``application/connect+proto|json``): a
  server-streaming method's items as enveloped messages, then the
  end-of-stream message (``{}`` or ``{"error": ...}``).
- **Client streaming** (Connect streaming and gRPC-Web): the request body is
  enveloped messages ended by the body's end, each fed to the handler as it
  arrives (``framing.request_frames``); the answer is one enveloped message
  and the end of the stream (or its error). A client gone mid-body cancels
  the call: nothing is committed.
- **gRPC-Web** (``application/grpc-web[+proto|+json]``): unary, server and
  client streaming, the status in a trailers frame.
- Bidi streaming gets ``unimplemented``: it needs HTTP/2 full duplex (the gRPC port).
- ``GET /healthz`` (``{"status": "SERVING"}``, 503 once draining) and
  ``grpc.health.v1.Health/Check`` over Connect; CORS preflight (``cors.py``).

A unary call whose client goes away is cancelled, as on the gRPC port (its
unit of work rolls back, its call slot frees): ``transport.py`` cancels the
task the call left in its scope; a stream's own watcher does the same.

Each call binds a :class:`~wirebus.context.CallInfo` built (lazily) from the
HTTP headers -- keys lower case, ``-bin`` values base64-decoded, the peer as
``ipv4:host:port``, the deadline from ``connect-timeout-ms`` or
``grpc-timeout`` -- so authentication, correlation and tracing read the same
fields as on the gRPC port. Calls pass the same kind of
:class:`~wirebus.gateway.limits.CallLimiter`.

Example::

    app = ConnectApp(gateway_app.check(), mediator, domain="shop", limiter=CallLimiter())
    # hand ``app`` to any ASGI server; ``ConnectServer`` runs it on uvicorn
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any

import grpc

from ..context import bind_call, unbind_call
from ..gateway.binding import DEFAULT_LIMITS, MethodRoute
from ..gateway.errors import status_of
from ..gateway.limits import CallLimiter
from ..gateway.request_limits import RequestLimits
from .call import call_info_factory, timeout_of
from .codec import Codec, content_type, response_type
from .cors import Cors
from .endpoints import Endpoint, Failed, HealthEndpoint
from .framing import (
    Disconnected,
    check_length,
    encoding,
    read_body,
    request_frames,
    single_message,
)
from .observe import Observer
from .replies import JSON, AnyEndpoint, ConnectUnary, Enveloped, Reply, respond
from .transport import CALL_TASK, CLIENT_GONE

if TYPE_CHECKING:
    from ..mediator import Mediator
    from ..metrics import MethodMetrics, RpcMetrics

__all__ = ["ConnectApp"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED
_ACCEPT_POST = (
    b"accept-post",
    b"application/proto, application/json, application/connect+proto,"
    b" application/connect+json, application/grpc-web, application/grpc-web+proto,"
    b" application/grpc-web+json",
)


class ConnectApp:
    """An ASGI application serving ``routes`` over Connect and gRPC-Web (see the module doc).

    ``max_message_bytes`` bounds a request body (``resource_exhausted`` past
    it); ``cors`` (a :class:`~.cors.Cors`) lets browser pages of other
    origins call; ``health=False`` leaves out both health endpoints.
    """

    def __init__(
        self,
        routes: Iterable[MethodRoute],
        mediator: Mediator,
        *,
        domain: str,
        limiter: CallLimiter,
        limits: RequestLimits = DEFAULT_LIMITS,
        max_message_bytes: int = 4 * 1024 * 1024,
        cors: Cors | None = None,
        health: bool = True,
        rpc: RpcMetrics | None = None,
    ) -> None:
        self.limiter = limiter
        self.max_message_bytes = max_message_bytes
        self.cors = cors
        routes = list(routes)
        self._observer = Observer(routes, rpc)
        self._endpoints: dict[str, AnyEndpoint] = {
            r.path: Endpoint(r, mediator, domain=domain, limits=limits) for r in routes
        }
        self._health = health
        if health:
            services = frozenset(r.service for r in routes)
            checker = HealthEndpoint(services, limiter)
            self._endpoints[checker.path] = checker

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        cors = self.cors.headers(headers.get(b"origin")) if self.cors is not None else []
        method = scope["method"]
        if method == "POST":
            endpoint = self._endpoints.get(scope["path"])
            await self._post(endpoint, scope, headers, cors, receive, send)
        elif method == "OPTIONS":
            await self._preflight(headers, send)
        elif method == "GET" and scope["path"] == "/healthz" and self._health:
            await self._healthz(cors, send)
        else:
            body = b'{"code": "unimplemented", "message": "the Connect port takes POST"}'
            await respond(send, 405, [JSON, (b"allow", b"POST, OPTIONS"), *cors], body)

    async def _preflight(self, headers: dict[bytes, bytes], send: Send) -> None:
        allowed = self.cors.preflight(headers.get(b"origin")) if self.cors is not None else None
        await respond(send, 403 if allowed is None else 204, allowed or [], b"")

    async def _healthz(self, cors: Headers, send: Send) -> None:
        draining = self.limiter.draining
        body = b'{"status": "NOT_SERVING"}' if draining else b'{"status": "SERVING"}'
        await respond(send, 503 if draining else 200, [JSON, *cors], body)

    async def _post(
        self,
        endpoint: AnyEndpoint | None,
        scope: Scope,
        headers: dict[bytes, bytes],
        cors: Headers,
        receive: Receive,
        send: Send,
    ) -> None:
        kind = content_type(headers.get(b"content-type"))
        if kind is None:
            body = b'{"code": "unimplemented", "message": "unsupported content-type"}'
            await respond(send, 415, [JSON, _ACCEPT_POST, *cors], body)
            return
        protocol, codec = kind
        if protocol == "connect":
            reply: Reply = ConnectUnary(send, codec, cors)
        elif protocol == "connect-stream":
            reply = Enveloped(send, response_type(protocol, codec), cors, connect=True)
        else:
            reply = Enveloped(send, response_type(protocol, codec), cors, connect=False)
        path = str(scope["path"])[:200]
        began, metrics = self._observer.begin(path)
        code = _OK
        token = None
        try:
            if endpoint is None:
                raise Failed(
                    status_of(grpc.StatusCode.UNIMPLEMENTED, f"{path} is not a method here")
                )
            if endpoint.refusal is not None:
                raise Failed(endpoint.refusal)
            if protocol == "connect" and (endpoint.streaming or endpoint.client_streaming):
                raise Failed(status_of(grpc.StatusCode.UNIMPLEMENTED, _STREAM_TYPES))
            version = headers.get(b"connect-protocol-version")
            if version is not None and version != b"1" and protocol != "grpc-web":
                raise Failed(status_of(grpc.StatusCode.INVALID_ARGUMENT, _VERSION))
            timeout = timeout_of(headers, protocol)
            # bound until the access line is written: it reads the call's correlation
            token = bind_call(call_info_factory(path, scope, headers, timeout))
            code = await self._call(
                endpoint, scope, headers, protocol, codec, reply, receive, timeout, metrics
            )
        except Failed as failed:
            code = failed.status[0]
            await reply.error(failed.status, close=failed.close)
        except Disconnected:
            code = _CANCELLED  # nobody to answer
        except asyncio.CancelledError:
            code = _CANCELLED
            if CLIENT_GONE not in scope:
                raise
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()  # the client left (transport.py cancelled): nothing to answer
        finally:
            self._observer.end(path, metrics, code, began, scope, headers)
            if token is not None:
                unbind_call(token)

    async def _call(
        self,
        endpoint: AnyEndpoint,
        scope: Scope,
        headers: dict[bytes, bytes],
        protocol: str,
        codec: Codec,
        reply: Reply,
        receive: Receive,
        seconds: float | None,
        metrics: MethodMetrics | None,
    ) -> grpc.StatusCode:
        """Run the call and answer it; the code it ended with."""
        if endpoint.client_streaming:
            gzip = encoding(headers, protocol) == b"gzip"
            frames = request_frames(receive, gzip=gzip, limit=self.max_message_bytes)
            return await self._client_stream(
                endpoint, scope, codec, frames, reply, seconds, metrics
            )
        sent = metrics.sent.inc if metrics is not None else None
        check_length(headers, self.max_message_bytes)  # before reading any of it
        encoding(headers, protocol)  # an unknown compression: before reading too
        body = await read_body(receive, headers, protocol, self.max_message_bytes)
        if protocol != "connect":
            body = single_message(body, headers, protocol, self.max_message_bytes)
        data = endpoint.decode_json(body) if codec == "json" else body
        limiter = self.limiter
        if not limiter.admit():
            raise Failed(limiter.refusal())
        try:
            if endpoint.streaming:
                return await _stream(endpoint.stream(data, seconds), reply, endpoint, receive, sent)
            scope[CALL_TASK] = asyncio.current_task()  # cancelled if the client leaves
            await reply.unary(await endpoint.unary(data, seconds), endpoint)
            if sent is not None:
                sent()
            return _OK
        finally:
            limiter.release()

    async def _client_stream(
        self,
        endpoint: AnyEndpoint,
        scope: Scope,
        codec: Codec,
        frames: AsyncIterator[bytes],
        reply: Reply,
        seconds: float | None,
        metrics: MethodMetrics | None,
    ) -> grpc.StatusCode:
        """Feed the body's messages to the handler as they arrive; answer its one reply.

        The call is admitted before its body is read (its messages are the
        handler's to read), as on the gRPC port; the body timeout bounds how
        long a slow client holds its slot.
        """
        limiter = self.limiter
        if not limiter.admit():
            raise Failed(limiter.refusal(), close=True)  # the body is left unread
        try:
            scope[CALL_TASK] = asyncio.current_task()  # cancelled if the client leaves
            received = self._observer.received(metrics)
            json = codec == "json"
            data = await endpoint.client_stream(frames, seconds, json=json, received=received)
            await reply.unary(data, endpoint)
            if metrics is not None:
                metrics.sent.inc()
            return _OK
        finally:
            limiter.release()


_VERSION = "connect-protocol-version must be 1 (the version of the Connect protocol served)"
_STREAM_TYPES = (
    "a streaming method takes application/connect+proto or application/connect+json"
    " (or gRPC-Web), not a unary content-type"
)


async def _stream(
    items: AsyncIterator[bytes],
    reply: Reply,
    endpoint: AnyEndpoint,
    receive: Receive,
    sent: Callable[[], None] | None,
) -> grpc.StatusCode:
    """Send the stream's items; a client that goes away cancels the handler."""
    task = asyncio.current_task()
    assert task is not None
    gone = asyncio.Event()
    watcher = asyncio.create_task(_wait_disconnect(receive, gone, task))
    try:
        await reply.begin()
        async for item in items:
            await reply.item(item, endpoint)
            if sent is not None:
                sent()
        await reply.end(None)
        return _OK
    except Failed as failed:
        await reply.end(failed.status)
        return failed.status[0]
    except asyncio.CancelledError:
        if not gone.is_set():
            raise
        task.uncancel()  # the client left: nothing to answer
        return _CANCELLED
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


async def _wait_disconnect(receive: Receive, gone: asyncio.Event, task: asyncio.Task[Any]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()
    task.cancel()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
