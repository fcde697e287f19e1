"""The gateway's handlers of the two shapes with a stream of requests: client streaming, bidi.

Built once per route at start-up, as ``methods.py`` builds the others, with
the same admission, deadline, cancellation and error mapping:

- **Incoming messages**: the handler gets a
  :class:`~wirebus.pipeline.MessageStream` that reads the next message from
  grpc only when the handler asks for it. grpc.aio reads from the
  transport only when asked, so HTTP/2 flow control holds the client's
  further messages back: a slow handler slows its client, and the server
  holds at most a flow-control window of unread messages, never an
  unbounded queue. Each message is parsed (upb), checked against the
  gateway's :class:`~wirebus.gateway.request_limits.RequestLimits`,
  converted and counted (``grpc_server_msg_received_total``) as it is read;
  one that does not parse, or breaks a limit, fails the call with
  INVALID_ARGUMENT (the messages before it were handled, but a unit of work
  that did not commit yet rolls back).
- **Outgoing messages** (bidi): one at a time, as the server stream's do --
  the handler is at most one item ahead of what grpc has sent.
- **Deadline and cancellation**: the whole call runs under the caller's
  deadline (DEADLINE_EXCEEDED when it passes); a client that cancels, or a
  deadline that passes, cancels the handler: its generator is closed, its
  unit of work rolls back what it did not commit yet.

Example::

    read = reader(route, RequestLimits(), received=None)
    handler = client_stream(route, mediator, "shop", CallLimiter(), read)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from ..context import CallInfo, bind_call
from ..errors import WirebusError
from ..pipeline import MessageStream
from .binding import MethodRoute
from .callpath import (
    ServicerContext,
    abort_with,
    deadline_passed,
    encoder_of,
    run_bounded,
    time_remaining,
)
from .errors import malformed_request, status_for
from .limits import CallLimiter
from .request_limits import RequestLimits

if TYPE_CHECKING:
    from ..mediator import Mediator

__all__ = ["bidi", "client_stream", "reader"]

_Context = ServicerContext
_Requests = AsyncIterator[bytes]
_Read = Callable[[_Requests], MessageStream[Any]]
ClientStream = Callable[[_Requests, _Context], Awaitable[bytes]]
Bidi = Callable[[_Requests, _Context], AsyncIterator[bytes]]


class _Malformed(WirebusError):
    """A message of the stream does not parse as the method's input type."""

    code = grpc.StatusCode.INVALID_ARGUMENT


def reader(route: MethodRoute, limits: RequestLimits, received: Callable[[], None] | None) -> _Read:
    """``read(requests) -> MessageStream``: decode, check and count each message as it is read."""
    assert route.spec is not None
    decode = route.decoder(limits)
    message_type = route.spec.message_type

    async def decoded(requests: _Requests) -> AsyncIterator[Any]:
        async for data in requests:  # grpc reads the next message only now
            if received is not None:
                received()
            try:
                message = decode(data)
            except DecodeError:
                raise _Malformed("a message of the stream does not parse") from None
            yield message

    def read(requests: _Requests) -> MessageStream[Any]:
        return MessageStream(message_type, decoded(requests))

    return read


def _failing(route: MethodRoute, domain: str) -> Callable[[Exception], Any]:
    """``exc -> (code, message, details)``: the status a failed stream-in call ends with."""
    full_name = route.request_proto.DESCRIPTOR.full_name
    fail = functools.partial(status_for, domain=domain, method=route.path)

    def status(exc: Exception) -> Any:
        if isinstance(exc, _Malformed):
            return malformed_request(full_name, domain=domain)
        return fail(exc)

    return status


def client_stream(
    route: MethodRoute, mediator: Mediator, domain: str, limiter: CallLimiter, read: _Read
) -> ClientStream:
    """The handler of a client-streaming route: many messages in, one answer out."""
    assert route.spec is not None
    path = route.path
    encode, status = encoder_of(route), _failing(route, domain)
    admit, release, refusal = limiter.admit, limiter.release, limiter.refusal
    run: Callable[[Any], Awaitable[Any]] = mediator.client_stream_runner(route.spec.message_type)

    # the shape of methods.py's handlers, spelled out per shape: no indirection per call
    async def stream_unary(requests: _Requests, context: _Context) -> bytes:
        if not admit():
            await abort_with(context, refusal())
        try:
            bind_call(functools.partial(CallInfo.from_grpc, path, context))
            messages = read(requests)
            try:
                remaining = time_remaining(context)
                if remaining is None:
                    return encode(await run(messages))
                return encode(await run_bounded(run, messages, remaining))
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await abort_with(context, status(exc))
            finally:
                await messages.aclose()
        finally:
            release()

    return stream_unary


def bidi(
    route: MethodRoute, mediator: Mediator, domain: str, limiter: CallLimiter, read: _Read
) -> Bidi:
    """The handler of a bidirectional route: messages in and out, one at a time each way."""
    assert route.spec is not None
    path = route.path
    encode, status = encoder_of(route), _failing(route, domain)
    admit, release, refusal = limiter.admit, limiter.release, limiter.refusal
    open_stream = mediator.bidi_runner(route.spec.message_type)

    # the shape of methods.py's handlers, spelled out per shape: no indirection per call
    async def stream_stream(requests: _Requests, context: _Context) -> AsyncIterator[bytes]:
        if not admit():
            await abort_with(context, refusal())
        try:
            bind_call(functools.partial(CallInfo.from_grpc, path, context))
            messages = read(requests)
            scope = asyncio.timeout(time_remaining(context))  # None: no deadline
            try:
                # aclosing: a call that ends while an item is being sent still
                # cancels the handler now (generator closed, work rolled back)
                async with scope, contextlib.aclosing(await open_stream(messages)) as items:
                    async for item in items:
                        yield encode(item)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await abort_with(context, status(deadline_passed(exc, scope)))
            finally:
                await messages.aclose()
        finally:
            release()

    return stream_stream
