"""The gateway's method handlers: bytes in, mediator, bytes out; deadline, metrics, access line.

One grpc.aio method handler per route, built at start-up (``method_handler``):

- **Limits**: :class:`~wirebus.gateway.limits.CallLimiter` admits the call
  before the request is decoded, or refuses it at once.
- **Deadline**: when the caller set one, the handler runs under
  ``asyncio.timeout(time_remaining)``; when it passes, the handler is
  cancelled (its unit of work rolls back: nothing it wrote is committed, no
  outbox row) and the caller gets DEADLINE_EXCEEDED. A call with no deadline
  (grpc reports a huge remaining time) runs unbounded. Whatever the handler
  does through wirebus on the call path runs inside that bound: an
  in-process ``mediator.send`` (same task, same ``current_call()``, so the
  same ``CallInfo.deadline``), the unit of work's database statements and
  commit, and, without a database, the publisher's send to Kafka. Not
  bounded by it: what happens after the call (the relay publishing the
  outbox, consumers of the events).
- **Cancellation**: a client that cancels makes grpc.aio cancel the handler's
  task; ``CancelledError`` unwinds through the unit of work, which rolls back.
- **Observation**: ``grpc_server_*`` metrics (when the gateway has
  :class:`~wirebus.metrics.RpcMetrics`: labelled children made here, the hot
  path calls ``inc``/``observe``) and one ``wirebus.access`` line per call
  (``access_log.py``; one ``isEnabledFor`` check when disabled).

Example::

    handler = method_handler(route, mediator, "shop", CallLimiter(), rpc=None)
    server.add_registered_method_handlers(route.service, {route.method: handler})
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from .. import access_log
from ..context import CallInfo, bind_call
from ..errors import ConversionError
from .binding import DEFAULT_LIMITS, MethodRoute
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
    from ..metrics import MethodMetrics, RpcMetrics

__all__ = ["method_handler"]

_Context = ServicerContext
_Unary = Callable[[Any, _Context], Awaitable[bytes]]
_Stream = Callable[[Any, _Context], AsyncIterator[bytes]]
"""A handler taking the request's bytes (or, for a stream of requests, grpc's iterator of them)."""

_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED
_UNKNOWN = grpc.StatusCode.UNKNOWN
_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED


def method_handler(
    route: MethodRoute,
    mediator: Mediator,
    domain: str,
    limiter: CallLimiter,
    limits: RequestLimits = DEFAULT_LIMITS,
    *,
    rpc: RpcMetrics | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """The grpc.aio handler of ``route`` (see the module docstring)."""
    observed = rpc.method(route.grpc_type, route.service, route.method) if rpc is not None else None
    if route.arity in ("stream_unary", "stream_stream") and route.spec is not None:
        return _stream_in_handler(route, mediator, domain, limiter, limits, observed)
    if route.arity == "unary_stream" and route.spec is not None:
        stream = _unary_stream(route, mediator, domain, limiter, limits)
        return grpc.unary_stream_rpc_method_handler(_observe_stream(route.path, stream, observed))
    unary = _unary_unary(route, mediator, domain, limiter, limits)
    return grpc.unary_unary_rpc_method_handler(_observe_unary(route.path, unary, observed))


def _stream_in_handler(
    route: MethodRoute,
    mediator: Mediator,
    domain: str,
    limiter: CallLimiter,
    limits: RequestLimits,
    observed: MethodMetrics | None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """A client-streaming or bidi route's handler (``streaming.py``), observed as the others."""
    from . import streaming  # it builds on this module's helpers

    read = streaming.reader(route, limits, observed.received.inc if observed else None)
    if route.arity == "stream_unary":
        unary = streaming.client_stream(route, mediator, domain, limiter, read)
        return grpc.stream_unary_rpc_method_handler(
            _observe_unary(route.path, unary, observed, one_request=False)
        )
    stream = streaming.bidi(route, mediator, domain, limiter, read)
    return grpc.stream_stream_rpc_method_handler(
        _observe_stream(route.path, stream, observed, one_request=False)
    )


def _unimplemented(path: str) -> _Unary:
    async def unimplemented(request: bytes, context: _Context) -> bytes:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{path} is not implemented")
        raise AssertionError("unreachable")  # pragma: no cover

    return unimplemented


def _rejecting(
    route: MethodRoute, domain: str
) -> Callable[[Exception, _Context], Awaitable[NoReturn]]:
    """Abort a call whose request did not decode: INVALID_ARGUMENT with the reason."""
    full_name = route.request_proto.DESCRIPTOR.full_name
    fail = functools.partial(status_for, domain=domain, method=route.path)

    async def reject(exc: Exception, context: _Context) -> NoReturn:
        if isinstance(exc, DecodeError):
            await abort_with(context, malformed_request(full_name, domain=domain))
        await abort_with(context, fail(exc))

    return reject


def _unary_unary(
    route: MethodRoute,
    mediator: Mediator,
    domain: str,
    limiter: CallLimiter,
    limits: RequestLimits,
) -> _Unary:
    path = route.path
    if route.spec is None:
        return _unimplemented(path)
    decode, reject = route.decoder(limits), _rejecting(route, domain)
    encode = encoder_of(route)
    fail = functools.partial(status_for, domain=domain, method=path)
    admit, release, refusal = limiter.admit, limiter.release, limiter.refusal
    run: Callable[[Any], Awaitable[Any]] = mediator.runner(route.spec.message_type)

    # per-call closures of each shape spelled out, not shared: one frame per call, no indirection
    async def unary_unary(request: bytes, context: _Context) -> bytes:
        if not admit():
            await abort_with(context, refusal())
        try:
            bind_call(functools.partial(CallInfo.from_grpc, path, context))
            try:
                message = decode(request)
            except (DecodeError, ConversionError) as exc:
                await reject(exc, context)
            try:
                remaining = time_remaining(context)
                if remaining is None:
                    return encode(await run(message))
                return encode(await run_bounded(run, message, remaining))
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await abort_with(context, fail(exc))
        finally:
            release()

    return unary_unary


def _unary_stream(
    route: MethodRoute,
    mediator: Mediator,
    domain: str,
    limiter: CallLimiter,
    limits: RequestLimits,
) -> _Stream:
    assert route.spec is not None
    path = route.path
    decode, reject = route.decoder(limits), _rejecting(route, domain)
    encode = encoder_of(route)
    fail = functools.partial(status_for, domain=domain, method=path)
    admit, release, refusal = limiter.admit, limiter.release, limiter.refusal
    open_stream = mediator.stream_runner(route.spec.message_type)

    # per-call closures of each shape spelled out, not shared: one frame per call, no indirection
    async def unary_stream(request: bytes, context: _Context) -> AsyncIterator[bytes]:
        if not admit():
            await abort_with(context, refusal())
        try:
            bind_call(functools.partial(CallInfo.from_grpc, path, context))
            try:
                message = decode(request)
            except (DecodeError, ConversionError) as exc:
                await reject(exc, context)
            scope = asyncio.timeout(time_remaining(context))  # None: no deadline
            try:
                async with scope:
                    items: AsyncIterator[Any] = await open_stream(message)
                    async for item in items:
                        yield encode(item)
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception as exc:
                await abort_with(context, fail(deadline_passed(exc, scope)))
        finally:
            release()

    return unary_stream


def _cancelled_code(context: _Context) -> grpc.StatusCode:
    """CANCELLED, or DEADLINE_EXCEEDED when grpc cancelled the call because its deadline passed."""
    remaining = context.time_remaining()
    return _CANCELLED if remaining is None or remaining > 0.001 else _DEADLINE_EXCEEDED


def _code_of(context: _Context) -> grpc.StatusCode:
    """The code a call that raised ended with (its abort's), ``UNKNOWN`` if none was set."""
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else _UNKNOWN


def _observe_unary(
    path: str, unary: _Unary, metrics: MethodMetrics | None, *, one_request: bool = True
) -> _Unary:
    """``unary`` counted in ``metrics`` (if any) and written to the access log.

    ``one_request=False``: a stream of requests, each counted as it is read.
    """
    clock, logger, info = time.perf_counter, access_log.access, logging.INFO
    log_call, correlation_id = access_log.log_call, access_log.correlation_id
    received = metrics.received.inc if metrics is not None and one_request else None

    # the same bookkeeping as the other observer, inline: a shared helper is a call per RPC
    async def observed(request: Any, context: _Context) -> bytes:
        began = clock()
        if metrics is not None:
            metrics.started.inc()
        if received is not None:
            received()
        code = _OK
        try:
            response = await unary(request, context)
            if metrics is not None:
                metrics.sent.inc()
            return response
        except asyncio.CancelledError:
            code = _cancelled_code(context)
            raise
        except BaseException:
            code = _code_of(context)
            raise
        finally:
            seconds = clock() - began
            if metrics is not None:
                metrics.finished(code, seconds)
            if logger.isEnabledFor(info):
                log_call(path, code, seconds, context.peer(), correlation_id(context))

    return observed


def _observe_stream(
    path: str, stream: _Stream, metrics: MethodMetrics | None, *, one_request: bool = True
) -> _Stream:
    """``stream`` counted in ``metrics`` (if any; each item sent too) and in the access log.

    ``one_request=False``: a stream of requests, each counted as it is read.
    """
    clock, logger, info = time.perf_counter, access_log.access, logging.INFO
    log_call, correlation_id = access_log.log_call, access_log.correlation_id
    sent = metrics.sent.inc if metrics is not None else None
    received = metrics.received.inc if metrics is not None and one_request else None

    # the same bookkeeping as the other observer, inline: a shared helper is a call per RPC
    async def observed(request: Any, context: _Context) -> AsyncIterator[bytes]:
        began = clock()
        if metrics is not None:
            metrics.started.inc()
        if received is not None:
            received()
        code = _OK
        try:
            async for item in stream(request, context):
                yield item
                if sent is not None:
                    sent()
        except (asyncio.CancelledError, GeneratorExit):
            code = _cancelled_code(context)
            raise
        except BaseException:
            code = _code_of(context)
            raise
        finally:
            seconds = clock() - began
            if metrics is not None:
                metrics.finished(code, seconds)
            if logger.isEnabledFor(info):
                log_call(path, code, seconds, context.peer(), correlation_id(context))

    return observed
