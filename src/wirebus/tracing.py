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

A parent that is not sampled (``traceparent`` flags ``00``) is continued
without spans: its context is passed on as it came (to the outbox rows and
on), at the cost of a header lookup. Only ``opentelemetry-api`` is needed;
an SDK (exporters, samplers) is the application's choice.

Example::

    from opentelemetry.sdk.trace import TracerProvider

    app = App(name="shop", ..., tracing=Tracing(tracer_provider=TracerProvider()))
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .context import current_call, current_call_binding, in_transport_call
from .correlation import Correlation, CorrelationStage, _bound
from .errors import ConfigurationError
from .pipeline import ALL_KINDS, Behaviour, CallNext, Pipeline, Stage

if TYPE_CHECKING:
    from opentelemetry.trace import Span, SpanContext, Tracer, TracerProvider

__all__ = ["RecordObserver", "Tracing", "aiokafka_instrumented"]

Headers = tuple[tuple[str, bytes], ...]

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_NO_HEADERS: Headers = ()

# The context of a parent that is not sampled, passed on as it came (no span is made).
_passthrough: contextvars.ContextVar[Headers] = contextvars.ContextVar(
    "wirebus_trace_passthrough", default=_NO_HEADERS
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
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        self.tracer: Tracer = provider.get_tracer("wirebus")
        self._trace = trace
        self._get_span = trace.get_current_span
        self._use_span = trace.use_span
        self._span_names: dict[str, tuple[str, dict[str, Any]]] = {}
        self._correlation = CorrelationStage()

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
            Stage("tracing", self._call_stage, frozenset(("request", "stream"))),
            Stage("tracing", self._event_stage, frozenset(("event",))),
        ]

    def traced(self, stage: Stage, *, innermost: bool = False) -> Stage:
        """``stage`` inside a child span named after it (``innermost``: and the handler's)."""
        return Stage(stage.name, _Traced(self, stage.name, stage.behaviour, innermost), stage.kinds)

    def handler_stage(self) -> Stage:
        """A stage whose only work is the handler's span (when no other stage is traced)."""
        return Stage("tracing", _Traced(self, "", None, True), ALL_KINDS)

    async def _call_stage(self, message: Any, call_next: CallNext) -> Any:
        parent = self._get_span().get_span_context()
        if parent.is_valid or _passthrough.get():  # a nested call: a child span, if sampled
            if not parent.trace_flags.sampled:
                return await call_next(message)
            with self.tracer.start_as_current_span(f"send {type(message).__name__}"):
                return await call_next(message)
        if not in_transport_call():
            return await self._correlation(message, self._local_span(call_next))
        call = current_call()
        bound = _bound.get()
        owner = current_call_binding()
        if bound is None or (bound.owner is not None and bound.owner is not owner):
            _bound.set(Correlation.of_call(call, owner=owner))
        metadata = call.metadata
        traceparent = _text(metadata.get("traceparent"))
        tracestate = _text(metadata.get("tracestate"))
        remote = _parse(traceparent) if traceparent else None
        if remote is not None and remote[2] == "00":  # not sampled upstream: pass it on
            token = _passthrough.set(_headers_of(traceparent, tracestate))
            try:
                return await call_next(message)
            finally:
                _passthrough.reset(token)
        return await self._server_span(call.method, remote, tracestate, message, call_next)

    async def _server_span(
        self,
        method: str,
        remote: tuple[str, str, str] | None,
        tracestate: str | None,
        message: Any,
        call_next: CallNext,
    ) -> Any:
        name, attributes = self._span_name(method)
        context = self._remote_context(remote, tracestate) if remote is not None else None
        span = self.tracer.start_span(
            name, context=context, kind=self._trace.SpanKind.SERVER, attributes=attributes
        )
        with self._use_span(span, end_on_exit=True, record_exception=False):
            try:
                result = await call_next(message)
            except BaseException as exc:
                _fail(span, exc)
                raise
            span.set_attribute("rpc.grpc.status_code", 0)
            return result

    def _local_span(self, call_next: CallNext) -> CallNext:
        async def in_span(message: Any) -> Any:
            with self.tracer.start_as_current_span(f"send {type(message).__name__}"):
                return await call_next(message)

        return in_span

    async def _event_stage(self, message: Any, call_next: CallNext) -> Any:
        parent = self._get_span().get_span_context()
        if parent.is_valid or _passthrough.get():
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
        with self.tracer.start_as_current_span(f"handle {type(message).__name__}", context=context):
            return await call_next(message)

    def _span_name(self, method: str) -> tuple[str, dict[str, Any]]:
        known = self._span_names.get(method)
        if known is None:
            name = method.lstrip("/")
            service, _, rpc = name.rpartition("/")
            attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
            known = (name or "rpc", attributes)
            if len(self._span_names) < 4096:
                self._span_names[method] = known
        return known

    def _remote_context(self, remote: tuple[str, str, str], tracestate: str | None) -> Any:
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
            return _passthrough.get()
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
        found = dict(headers)
        traceparent = _text(found.get("traceparent"))
        tracestate = _text(found.get("tracestate"))
        remote = _parse(traceparent) if traceparent else None
        if remote is not None and remote[2] == "00":
            token = _passthrough.set(_headers_of(traceparent, tracestate))
            try:
                yield
            finally:
                _passthrough.reset(token)
            return
        context = self._remote_context(remote, tracestate) if remote is not None else None
        span = self.tracer.start_span(
            f"{topic} process",
            context=context,
            kind=self._trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation": "process",
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": str(partition),
                "messaging.kafka.message.offset": offset,
                "cloudevents.event_type": event_type,
            },
        )
        with self._use_span(span, end_on_exit=True, record_exception=False):
            try:
                yield
            except BaseException as exc:
                _fail(span, exc)
                raise


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

    async def __call__(self, message: Any, call_next: CallNext) -> Any:
        tracing = self.tracing
        if not tracing._get_span().get_span_context().trace_flags.sampled:
            if self.behaviour is None:
                return await call_next(message)
            return await self.behaviour(message, call_next)
        inner = call_next
        if self.innermost:
            inner = _HandlerSpan(tracing.tracer, call_next)
        if self.behaviour is None:
            return await inner(message)
        with tracing.tracer.start_as_current_span(self.name):
            return await self.behaviour(message, inner)


class _HandlerSpan:
    __slots__ = ("call_next", "tracer")

    def __init__(self, tracer: Tracer, call_next: CallNext) -> None:
        self.tracer = tracer
        self.call_next = call_next

    async def __call__(self, message: Any) -> Any:
        with self.tracer.start_as_current_span(f"handler {type(message).__name__}"):
            return await self.call_next(message)


def _fail(span: Span, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    code = getattr(exc, "code", None)
    value = getattr(code, "value", None)
    status = value[0] if isinstance(value, tuple) else 2  # UNKNOWN
    span.set_attribute("rpc.grpc.status_code", status)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))


def _text(value: str | bytes | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _parse(traceparent: str) -> tuple[str, str, str] | None:
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    trace_id, span_id, flags = match.groups()
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id, flags


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
    __slots__ = ("event_type", "record", "span", "token", "tracing")

    def __init__(self, tracing: Tracing | None, record: Any, event_type: str) -> None:
        self.tracing = tracing
        self.record = record
        self.event_type = event_type
        self.span: contextlib.AbstractContextManager[None] | None = None

    def __enter__(self) -> None:
        record = self.record
        self.token = _bound.set(Correlation.of_event(record.headers))
        tracing = self.tracing
        if tracing is not None:
            span = tracing.consuming(
                record.headers,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                event_type=self.event_type,
            )
            span.__enter__()
            self.span = span

    def __exit__(self, *exc_info: Any) -> None:
        try:
            if self.span is not None:
                self.span.__exit__(*exc_info)
        finally:
            _bound.reset(self.token)
