"""OpenTelemetry tracing: one trace from a gRPC client, through the outbox and Kafka, to consumers.

:class:`Tracing` is built once at start-up (``App(tracing=...)``; by default
when a tracer provider is configured, see :meth:`Tracing.configured`) and
adds, only then, as the outermost pipeline stage:

- a SERVER span per RPC, ``pkg.Service/Method`` (``rpc.system=grpc``,
  ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``), continuing
  the ``traceparent``/``tracestate`` of the call's metadata -- a pipeline
  stage, not the grpc instrumentation, so the gateway's status details
  (``grpc-status-details-bin``) are untouched;
- a child span per behaviour and one for the handler;
- the trace context of the span current when an outbox row is written,
  stored with the row's headers (``traceparent``/``tracestate``): the relay
  sends the stored headers, never a context of its own;
- a CONSUMER span per consumed record (:meth:`Tracing.consuming`),
  continuing the record's stored context, around its handlers.

wirebus alone writes ``traceparent`` on records. The aiokafka
instrumentation (``opentelemetry-instrumentation-aiokafka``) must not be
enabled: it appends a second ``traceparent`` and ends its consumer span
before processing starts. :class:`Tracing` refuses to start when it is.

A parent that is not sampled (``traceparent`` flags without the sampled
bit: ``00``, ``02``) is continued without spans: its context is passed on as
it came (to the outbox rows and on), at the cost of a header lookup. With a
sampler that drops every root (``AlwaysOffSampler``, or ``ParentBased`` on
it: seen once, from its description), a call or record with no parent makes
no SDK span either and passes on a new unsampled context. Only ``opentelemetry-api`` is needed;
an SDK (exporters, samplers) is the application's choice.

Example::

    from opentelemetry.sdk.trace import TracerProvider

    app = App(name="shop", ..., tracing=Tracing(tracer_provider=TracerProvider()))
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .context import current_call, current_call_binding, in_transport_call
from .correlation import CURRENT_CORRELATION, Correlation, CorrelationStage
from .errors import ConfigurationError
from .pipeline import ALL_KINDS, CALL_KINDS, Behaviour, CallNext, MessageStream, Pipeline, Stage

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanContext, Tracer, TracerProvider

__all__ = ["RecordObserver", "Tracing", "aiokafka_instrumented"]

Headers = tuple[tuple[str, bytes], ...]

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_NO_HEADERS: Headers = ()
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_SAMPLED_DIGITS = frozenset("13579bdf")  # the low digit of flags with the sampled bit set
_Remote = tuple[str, str, str, bool]
# traceparent (or a new root's, made when first needed), tracestate: encoded only if a
# record needs them
_Passed = tuple["str | _NewRoot", str | None]

# The context of a parent that is not sampled, passed on as it came (no span is made).
_passthrough: contextvars.ContextVar[_Passed | None] = contextvars.ContextVar(
    "wirebus_trace_passthrough", default=None
)


def aiokafka_instrumented() -> bool:
    """Whether the aiokafka OpenTelemetry instrumentation wrapped aiokafka's producer."""
    try:
        from aiokafka import AIOKafkaProducer
    except ImportError:  # pragma: no cover - the kafka extra is not installed
        return False
    return hasattr(AIOKafkaProducer.send, "__wrapped__")


class Tracing:
    """The tracing of one app: its tracer, its pipeline stages and the context of its records.

    ``tracer_provider`` defaults to the global one. Build it once, at
    start-up; every decision per call is then a context lookup.

    Example::

        tracing = Tracing(tracer_provider=provider)
        app = App(name="shop", routers=[...], tracing=tracing)
    """

    def __init__(self, *, tracer_provider: TracerProvider | None = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError as exc:  # pragma: no cover - the tracing extra is not installed
            raise ConfigurationError(
                "tracing needs opentelemetry-api: pip install 'wirebus[tracing]'"
            ) from exc
        if aiokafka_instrumented():
            raise ConfigurationError(
                "the aiokafka OpenTelemetry instrumentation is enabled: wirebus propagates"
                " the trace context on records itself (two traceparent headers would be"
                " sent); uninstrument aiokafka (AIOKafkaInstrumentor().uninstrument())"
            )
        from opentelemetry import context

        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.tracer: Tracer = provider.get_tracer("wirebus")
        self._trace = trace
        self._get_span = trace.get_current_span
        self._current = context.get_current
        self._no_parent = trace.INVALID_SPAN_CONTEXT
        self._attach = context.attach
        self._detach = context.detach
        self._set_span = trace.set_span_in_context
        self._span_names: dict[str, tuple[str, dict[str, Any]]] = {}
        self._type_names: dict[tuple[str, type], str] = {}
        self._topic_names: dict[str, str] = {}
        self._consumer_attributes: dict[tuple[str, int, str], dict[str, Any]] = {}
        self._correlation = CorrelationStage()
        self._unsampled_root = _unsampled_root(provider)

    @classmethod
    def configured(cls) -> Tracing | None:
        """A :class:`Tracing` on the global tracer provider, or ``None`` if none is configured.

        Checked once (at start-up): without opentelemetry, or with its
        default no-op provider, tracing costs nothing per call.
        """
        try:
            from opentelemetry import trace
        except ImportError:
            return None
        provider = trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return None
        return cls(tracer_provider=provider)

    @staticmethod
    def of_pipeline(pipeline: Pipeline) -> Tracing | None:
        """The :class:`Tracing` whose stages ``pipeline`` has (a mediator's), if any.

        Example::

            tracing = Tracing.of_pipeline(mediator.pipeline)
        """
        for stage in pipeline.stages:
            owner = getattr(stage.behaviour, "__self__", None)
            if isinstance(owner, Tracing):
                return owner
        return None

    # ------------------------------------------------------------ pipeline

    def stages(self) -> list[Stage]:
        """The outermost stages: calls (server spans) and events (handler spans).

        They also bind the call's correlation (``wirebus.correlation``), so
        the call's info is read once.
        """
        return [
            Stage("tracing", self._call_stage, CALL_KINDS),
            Stage("tracing", self._event_stage, frozenset(("event",))),
        ]

    def traced(self, stage: Stage, *, innermost: bool = False) -> Stage:
        """``stage`` inside a child span named after it (``innermost``: and the handler's)."""
        return Stage(stage.name, _Traced(self, stage.name, stage.behaviour, innermost), stage.kinds)

    def handler_stage(self) -> Stage:
        """A stage whose only work is the handler's span (when no other stage is traced)."""
        return Stage("tracing", _Traced(self, "", None, True), ALL_KINDS)

    async def _call_stage(self, message: Any, call_next: CallNext) -> Any:
        if _passthrough.get():  # nested in a call or record that is not sampled
            return await call_next(message)
        # an empty context (a transport's new call) has no span: no span lookup
        parent = self._get_span().get_span_context() if self._current() else self._no_parent
        if parent.is_valid:  # a nested call: a child span, if sampled
            if not parent.trace_flags.sampled:
                return await call_next(message)
            span = self.tracer.start_span(self._type_name("send", message))
            return await self._in_span(span, message, call_next)
        if not in_transport_call():
            return await self._correlation(message, self._local_span(call_next))
        call = current_call()
        bound = CURRENT_CORRELATION.get()
        owner = current_call_binding()
        if bound is None or (bound.owner is not None and bound.owner is not owner):
            CURRENT_CORRELATION.set(Correlation.of_call(call, owner=owner))
        metadata = call.metadata
        traceparent = _text(metadata.get("traceparent"))
        tracestate = _text(metadata.get("tracestate"))
        remote = _parse(traceparent) if traceparent else None
        if remote is None:
            if self._unsampled_root is None:
                return await self._server_span(call.method, None, tracestate, message, call_next)
            passed = self._unsampled_root()  # the sampler drops every root: no SDK span
        elif remote[3]:
            return await self._server_span(call.method, remote, tracestate, message, call_next)
        else:  # not sampled upstream: pass it on
            passed = (traceparent or "", tracestate)
        token = _passthrough.set(passed)
        try:
            return await call_next(message)
        finally:
            _passthrough.reset(token)

    async def _in_span(self, span: Span, message: Any, call_next: CallNext) -> Any:
        """``call_next(message)`` with ``span`` current; ended after (as ``use_span`` does)."""
        token = self._attach(self._set_span(span))
        try:
            return await call_next(message)
        except Exception as exc:
            span.record_exception(exc)
            _error_status(span, exc)
            raise
        finally:
            self._detach(token)
            span.end()

    def _type_name(self, prefix: str, message: Any) -> str:
        """``"<prefix> <type name>"``, made once per message type."""
        # a stream-in call is named after its messages' type, not MessageStream
        tp = message.message_type if isinstance(message, MessageStream) else type(message)
        key = (prefix, tp)
        name = self._type_names.get(key)
        if name is None:
            name = f"{prefix} {key[1].__name__}"
            if len(self._type_names) < 4096:
                self._type_names[key] = name
        return name

    async def _server_span(
        self,
        method: str,
        remote: _Remote | None,
        tracestate: str | None,
        message: Any,
        call_next: CallNext,
    ) -> Any:
        name, attributes = self._span_name(method)
        context = self._remote_context(remote, tracestate) if remote is not None else None
        span = self.tracer.start_span(
            name, context=context, kind=self._trace.SpanKind.SERVER, attributes=attributes
        )  # attributes say status 0 (OK): a failure overwrites it
        token = self._attach(self._set_span(span))
        try:
            return await call_next(message)
        except BaseException as exc:
            _fail(span, exc)
            if isinstance(exc, Exception):
                _error_status(span, exc)
            raise
        finally:
            self._detach(token)
            span.end()

    def _local_span(self, call_next: CallNext) -> CallNext:
        async def in_span(message: Any) -> Any:
            span = self.tracer.start_span(self._type_name("send", message))
            return await self._in_span(span, message, call_next)

        return in_span

    async def _event_stage(self, message: Any, call_next: CallNext) -> Any:
        if _passthrough.get() or self._get_span().get_span_context().is_valid:
            # the consumer's span, or a call's: the handler's own span is the innermost one
            return await self._correlation(message, call_next)
        return await self._correlation(message, self._event_span(call_next))

    def _event_span(self, call_next: CallNext) -> CallNext:
        async def in_span(message: Any) -> Any:
            return await self._new_event_span(message, call_next)

        return in_span

    async def _new_event_span(self, message: Any, call_next: CallNext) -> Any:
        context = None
        if in_transport_call():  # a call's in-process handlers, after its span ended
            metadata = current_call().metadata
            traceparent = _text(metadata.get("traceparent"))
            remote = _parse(traceparent) if traceparent else None
            if remote is not None:
                context = self._remote_context(remote, _text(metadata.get("tracestate")))
        span = self.tracer.start_span(self._type_name("handle", message), context=context)
        return await self._in_span(span, message, call_next)

    def _span_name(self, method: str) -> tuple[str, dict[str, Any]]:
        known = self._span_names.get(method)
        if known is None:
            name = method.lstrip("/")
            service, _, rpc = name.rpartition("/")
            attributes = {
                "rpc.system": "grpc",
                "rpc.service": service,
                "rpc.method": rpc,
                "rpc.grpc.status_code": 0,
            }
            known = (name or "rpc", attributes)
            if len(self._span_names) < 4096:
                self._span_names[method] = known
        return known

    def _remote_context(self, remote: _Remote, tracestate: str | None) -> Any:
        trace = self._trace
        state = trace.TraceState.from_header([tracestate]) if tracestate else None
        span_context = trace.SpanContext(
            trace_id=int(remote[0], 16),
            span_id=int(remote[1], 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(int(remote[2], 16)),
            trace_state=state,
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(span_context))

    # ------------------------------------------------------------ records

    def headers(self) -> Headers:
        """``traceparent``/``tracestate`` of the current span (what an outbox row stores)."""
        span_context = self._get_span().get_span_context()
        if not span_context.is_valid:
            passed = _passthrough.get()
            if passed is None:
                return _NO_HEADERS
            traceparent, tracestate = passed
            if not isinstance(traceparent, str):
                traceparent = traceparent.traceparent()
            return _headers_of(traceparent, tracestate)
        return _format(span_context)

    @contextlib.contextmanager
    def consuming(
        self,
        headers: Headers | list[tuple[str, bytes]],
        *,
        topic: str,
        partition: int,
        offset: int,
        event_type: str,
    ) -> Iterator[None]:
        """The CONSUMER span of one record, continuing its stored trace context.

        Example (a consumer, around a record's handlers)::

            with tracing.consuming(record.headers, topic=t, partition=p, offset=o, event_type=k):
                await run_handlers(record)
        """
        scope = self._enter_record(
            headers, topic=topic, partition=partition, offset=offset, event_type=event_type
        )
        try:
            yield
        except BaseException as exc:
            self._exit_record(scope, exc)
            raise
        self._exit_record(scope, None)

    def _enter_record(
        self,
        headers: Headers | list[tuple[str, bytes]],
        *,
        topic: str,
        partition: int,
        offset: int,
        event_type: str,
    ) -> tuple[Span | None, Any]:
        """Start a record's scope: ``(span, context token)``, or ``(None, passthrough token)``."""
        traceparent = tracestate = None
        for header, value in headers:
            if header == "traceparent" and traceparent is None:
                traceparent = _text(value)
            elif header == "tracestate" and tracestate is None:
                tracestate = _text(value)
        remote = _parse(traceparent) if traceparent else None
        if remote is None:
            if self._unsampled_root is not None:  # the sampler drops every root: no SDK span
                return None, _passthrough.set(self._unsampled_root())
        elif not remote[3]:  # not sampled upstream: pass it on
            return None, _passthrough.set((traceparent or "", tracestate))
        context = self._remote_context(remote, tracestate) if remote is not None else None
        key = (topic, partition, event_type)
        base = self._consumer_attributes.get(key)
        if base is None:
            base = {
                "messaging.system": "kafka",
                "messaging.operation": "process",
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(partition),
                "cloudevents.event_type": event_type,
            }
            if len(self._consumer_attributes) < 4096:
                self._consumer_attributes[key] = base
        span = self.tracer.start_span(
            self._consumer_name(topic),
            context=context,
            kind=self._trace.SpanKind.CONSUMER,
            attributes={**base, "messaging.kafka.message.offset": offset},
        )
        return span, self._attach(self._set_span(span))

    def _exit_record(self, scope: tuple[Span | None, Any], exc: BaseException | None) -> None:
        span, token = scope
        if span is None:
            _passthrough.reset(token)
            return
        try:
            if exc is not None:
                _fail(span, exc)
                if isinstance(exc, Exception):
                    _error_status(span, exc)
        finally:
            self._detach(token)
            span.end()

    def _consumer_name(self, topic: str) -> str:
        name = self._topic_names.get(topic)
        if name is None:
            name = f"{topic} process"
            if len(self._topic_names) < 4096:
                self._topic_names[topic] = name
        return name


class _Traced:
    """A behaviour inside a child span; ``innermost``: the handler inside one too."""

    __slots__ = ("behaviour", "innermost", "name", "stage_name", "tracing")

    def __init__(
        self, tracing: Tracing, name: str, behaviour: Behaviour | None, innermost: bool
    ) -> None:
        self.tracing = tracing
        self.name = name
        self.stage_name = name
        self.behaviour = behaviour
        self.innermost = innermost

    def __call__(self, message: Any, call_next: CallNext) -> Awaitable[Any]:
        # Not async: when not sampled, the behaviour (or what follows) is awaited directly.
        tracing = self.tracing
        # a passed-on context is never sampled: no span lookup needed
        if _passthrough.get() or not tracing._get_span().get_span_context().trace_flags.sampled:
            if self.behaviour is None:
                return call_next(message)
            return self.behaviour(message, call_next)
        return self._sampled(message, call_next)

    async def _sampled(self, message: Any, call_next: CallNext) -> Any:
        tracing = self.tracing
        inner = call_next
        if self.innermost:
            inner = _HandlerSpan(tracing, call_next)
        if self.behaviour is None:
            return await inner(message)
        span = tracing.tracer.start_span(self.name)
        return await tracing._in_span(span, message, _Behaving(self.behaviour, inner))


class _Behaving:
    """``behaviour`` bound to what it calls next, as a ``CallNext``."""

    __slots__ = ("behaviour", "call_next")

    def __init__(self, behaviour: Behaviour, call_next: CallNext) -> None:
        self.behaviour = behaviour
        self.call_next = call_next

    async def __call__(self, message: Any) -> Any:
        return await self.behaviour(message, self.call_next)


class _HandlerSpan:
    __slots__ = ("call_next", "tracing")

    def __init__(self, tracing: Tracing, call_next: CallNext) -> None:
        self.tracing = tracing
        self.call_next = call_next

    async def __call__(self, message: Any) -> Any:
        tracing = self.tracing
        span = tracing.tracer.start_span(tracing._type_name("handler", message))
        return await tracing._in_span(span, message, self.call_next)


def _fail(span: Span, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    code = getattr(exc, "code", None)
    value = getattr(code, "value", None)
    status = value[0] if isinstance(value, tuple) else 2  # UNKNOWN
    span.set_attribute("rpc.grpc.status_code", status)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def _error_status(span: Span, exc: Exception) -> None:
    """What ``use_span`` sets on a span an exception leaves."""
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _unsampled_root(provider: Any) -> Callable[[], _Passed] | None:
    """With a sampler that drops every root span: a maker of new unsampled trace contexts.

    Decided once from the sampler's description (``AlwaysOffSampler``, or
    ``ParentBased`` on it: the SDK's ``parentbased_always_off``), so a call
    or record with no parent context makes no SDK span at all; the context
    it passes on (flags ``00``) keeps its consumers from sampling it.
    """
    sampler = getattr(provider, "sampler", None)
    describe = getattr(sampler, "get_description", None)
    text = describe() if callable(describe) else ""
    if text != "AlwaysOffSampler" and not text.startswith("ParentBased{root:AlwaysOffSampler,"):
        return None
    ids = getattr(provider, "id_generator", None)
    trace_id = getattr(ids, "generate_trace_id", None) or (lambda: random.getrandbits(128) or 1)
    span_id = getattr(ids, "generate_span_id", None) or (lambda: random.getrandbits(64) or 1)

    def traceparent() -> str:
        return f"00-{trace_id():032x}-{span_id():016x}-00"

    def new_context() -> _Passed:
        return _NewRoot(traceparent), None

    return new_context


class _NewRoot:
    """A new unsampled trace context whose ids are made when a record first needs them.

    Most calls publish nothing: they need no ids, no formatting. One
    object per call or record, so all its events share one trace.
    """

    __slots__ = ("_make", "_text")

    def __init__(self, make: Callable[[], str]) -> None:
        self._make = make
        self._text: str | None = None

    def traceparent(self) -> str:
        if self._text is None:
            self._text = self._make()
        return self._text


def _text(value: str | bytes | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _parse(traceparent: str) -> _Remote | None:
    """``(trace id, span id, flags, sampled)`` of a valid ``traceparent``, else ``None``."""
    match = _TRACEPARENT.fullmatch(traceparent)
    if match is None:
        match = _TRACEPARENT.fullmatch(traceparent.strip())
        if match is None:
            return None
    trace_id, span_id, flags = match.groups()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return trace_id, span_id, flags, flags[1] in _SAMPLED_DIGITS


def _headers_of(traceparent: str | None, tracestate: str | None) -> Headers:
    if traceparent is None:
        return _NO_HEADERS
    if tracestate:
        return (("traceparent", traceparent.encode()), ("tracestate", tracestate.encode()))
    return (("traceparent", traceparent.encode()),)


def _format(span_context: SpanContext) -> Headers:
    parent = (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
        f"-{int(span_context.trace_flags):02x}"
    ).encode()
    state = span_context.trace_state
    if state:
        return (("traceparent", parent), ("tracestate", state.to_header().encode()))
    return (("traceparent", parent),)


class RecordObserver:
    """The scope of one consumed record: its correlation bound and, with tracing, its span.

    Built once per consumer; ``observer(record, event_type)`` is a context
    manager around the record's handlers (and the delivery of what they
    emit), so what they log and emit carries the record's correlation and
    continues its trace.

    Example::

        observe = RecordObserver(Tracing.of_pipeline(mediator.pipeline))
        with observe(record, "shop.orders.v1.OrderPlaced"):
            await run_handlers(record)
    """

    __slots__ = ("tracing",)

    def __init__(self, tracing: Tracing | None) -> None:
        self.tracing = tracing

    def __call__(self, record: Any, event_type: str) -> _RecordScope:
        return _RecordScope(self.tracing, record, event_type)


class _RecordScope:
    __slots__ = ("event_type", "record", "scope", "token", "tracing")

    def __init__(self, tracing: Tracing | None, record: Any, event_type: str) -> None:
        self.tracing = tracing
        self.record = record
        self.event_type = event_type
        self.scope: tuple[Span | None, Any] | None = None

    def __enter__(self) -> None:
        record = self.record
        self.token = CURRENT_CORRELATION.set(Correlation.of_event(record.headers))
        tracing = self.tracing
        if tracing is not None:
            self.scope = tracing._enter_record(
                record.headers,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                event_type=self.event_type,
            )

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self.tracing is not None and self.scope is not None:
                self.tracing._exit_record(self.scope, exc_info[1])
        finally:
            CURRENT_CORRELATION.reset(self.token)
