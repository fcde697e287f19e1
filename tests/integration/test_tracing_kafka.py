"""One trace across processes: a gRPC call, its outbox and Kafka, a consumer, and the next one.

Process A serves ``tests.integration.apps.traced`` (gateway + outbox +
relay); process B consumes with the same app: ``Placed`` (from A) makes its
handler emit ``Captured``, which B's relay sends and B consumes again. Each
process appends its finished spans to its own file as JSON lines, and the
test reads the records as any Kafka client would.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from tests.checkout import PYTHONPATH
from tests.integration.conftest import read_records
from tests.integration.test_shop_on_kafka import free_port, start, stop
from wirebus.testing import wait_until

pytestmark = pytest.mark.integration

APP = "tests.integration.apps.traced:app"
CLIENT_TRACE = uuid.uuid4().hex
CLIENT_SPAN = uuid.uuid4().hex[:16]
CORRELATION = uuid.uuid4().hex


def spans_in(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def header(record: Any, name: str) -> list[str]:
    return [v.decode() for k, v in record.headers if k == name]


def wait_for_log(log: Path, text: str, proc: Any) -> None:
    def logged() -> bool:
        assert proc.poll() is None, log.read_text(errors="replace")
        return text in log.read_text(errors="replace")

    asyncio.run(wait_until(logged, within=60, interval=0.1))


def wait_for_spans(path: Path, name: str) -> list[dict[str, Any]]:
    def exported() -> bool:
        return any(s["name"] == name for s in spans_in(path))

    asyncio.run(wait_until(exported, within=60, interval=0.1))
    return spans_in(path)


def descends_from(span: dict[str, Any], ancestor_id: str, spans: list[dict[str, Any]]) -> bool:
    by_id = {s["span_id"]: s for s in spans}
    current: dict[str, Any] | None = span
    while current is not None:
        if current["span_id"] == ancestor_id:
            return True
        current = by_id.get(current["parent_id"])
    return False


def test_one_trace_runs_from_a_grpc_call_through_kafka_to_consumers_in_another_process(
    bootstrap: str, fresh: str, tmp_path: Path
) -> None:
    a_spans, b_spans = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "WIREBUS_KAFKA_BOOTSTRAP": bootstrap,
           "TRACED_TOPICS": fresh}  # fmt: skip
    port = free_port()
    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a_env = {**env, "TRACED_SPANS": str(a_spans),
             "WIREBUS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/a.db"}  # fmt: skip
    b_env = {**env, "TRACED_SPANS": str(b_spans),
             "WIREBUS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/b.db"}  # fmt: skip
    a = start(["serve", APP, "--port", str(port)], a_env, a_log)
    b = start(["consume", APP, "--group", f"{fresh}-b"], b_env, b_log)
    try:
        wait_for_log(b_log, "partitions assigned: [", b)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            item = orders_pb2.LineItem(sku="book", quantity=2, price_cents=1250)
            stub.PlaceOrder(
                orders_pb2.PlaceOrderRequest(customer_id="alice", items=[item]),
                metadata=(
                    ("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"),
                    ("x-correlation-id", CORRELATION),
                ),
                timeout=30,
            )
        server_spans = wait_for_spans(a_spans, "shop.orders.v1.OrderService/PlaceOrder")
        consumer_spans = wait_for_spans(b_spans, f"{fresh}.captured process")
    finally:
        a_out, b_out = stop(a, a_log), stop(b, b_log)
    assert a.returncode == 0, a_out
    assert b.returncode == 0, b_out
    [placed] = asyncio.run(read_records(bootstrap, f"{fresh}.placed", 1, grace=0.5))
    [captured] = asyncio.run(read_records(bootstrap, f"{fresh}.captured", 1, grace=0.5))
    spans = server_spans + consumer_spans

    # one trace id, the client's, across every span of both processes
    assert {s["trace_id"] for s in spans} == {CLIENT_TRACE}
    assert {s["pid"] for s in server_spans} == {a.pid}
    assert {s["pid"] for s in consumer_spans} == {b.pid}

    # A's SERVER span continues the client's traceparent
    [server] = [s for s in server_spans if s["kind"] == "SERVER"]
    assert server["name"] == "shop.orders.v1.OrderService/PlaceOrder"
    assert server["parent_id"] == CLIENT_SPAN
    assert server["attributes"]["rpc.grpc.status_code"] == 0

    # each record: exactly one traceparent, in the trace, naming a span of the process that wrote it
    [placed_parent] = header(placed, "traceparent")
    [captured_parent] = header(captured, "traceparent")
    _, placed_trace, placed_span, _ = placed_parent.split("-")
    _, captured_trace, captured_span, _ = captured_parent.split("-")
    assert placed_trace == captured_trace == CLIENT_TRACE
    [stored_in_a] = [s for s in server_spans if s["span_id"] == placed_span]
    assert descends_from(stored_in_a, server["span_id"], server_spans)

    # B's CONSUMER span of Placed continues the record's context; its handler emits Captured
    [consume_placed] = [s for s in consumer_spans if s["name"] == f"{fresh}.placed process"]
    assert consume_placed["kind"] == "CONSUMER"
    assert consume_placed["parent_id"] == placed_span
    assert consume_placed["attributes"]["cloudevents.event_type"] == "shop.orders.v1.OrderPlaced"
    [stored_in_b] = [s for s in consumer_spans if s["span_id"] == captured_span]
    assert descends_from(stored_in_b, consume_placed["span_id"], consumer_spans)

    # the next consumer (B on the other topic) continues Captured's context
    [consume_captured] = [s for s in consumer_spans if s["name"] == f"{fresh}.captured process"]
    assert consume_captured["kind"] == "CONSUMER"
    assert consume_captured["parent_id"] == captured_span
    [handler] = [s for s in consumer_spans if s["name"] == "handler Captured"]
    assert descends_from(handler, consume_captured["span_id"], consumer_spans)

    # one correlation id on every record; causation ids chain
    assert (
        header(placed, "ce_correlationid") == header(captured, "ce_correlationid") == [CORRELATION]
    )
    assert header(placed, "ce_causationid") == [CORRELATION]  # the call's id
    assert header(captured, "ce_causationid") == header(placed, "ce_id")


def test_a_kafka_publisher_with_tracing_sends_exactly_one_traceparent(
    bootstrap: str, fresh: str
) -> None:
    import datetime as dt

    from opentelemetry.sdk.trace import TracerProvider

    from tests.integration.apps.traced import Placed
    from wirebus.codec import EventRegistry
    from wirebus.kafka import KafkaEventPublisher
    from wirebus.tracing import Tracing

    class Sent(Placed, topic=f"{fresh}.sent"):
        pass

    registry = EventRegistry()
    registry.add(Sent)
    tracing = Tracing(tracer_provider=TracerProvider())
    at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)

    async def publish() -> str:
        async with KafkaEventPublisher(
            bootstrap, registry, source="test", tracing=tracing
        ) as publisher:
            with tracing.tracer.start_as_current_span("work") as span:
                await publisher.publish(
                    Sent(order_id="o-1", customer_id="c", total_cents=1, placed_at=at)
                )
            context = span.get_span_context()
            flags = int(context.trace_flags)
            return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"

    expected = asyncio.run(publish())
    [record] = asyncio.run(read_records(bootstrap, f"{fresh}.sent", 1, grace=0.5))
    assert header(record, "traceparent") == [expected]
