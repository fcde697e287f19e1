"""Consumer rows of ``kafka_throughput`` beside the raw loop: generated-class handler, FastStream.

Both read the same pre-filled topic as ``con_a`` / ``con_b`` / ``con_h`` with a
fresh consumer group, and time from the first handled record to the N-th:

  con_g   wirebus ``ConsumerRunner`` + ``EventProcessor``, the no-op handler takes the
          generated ``orders_pb2.OrderPlaced`` (registered with
          ``EventRegistry.add(orders_pb2.OrderPlaced, topic=...)``): no ``from_proto``,
          the peer of ``con_a`` (the raw ``FromString`` loop)
  con_f   FastStream ``KafkaBroker`` (aiokafka) subscriber, ``decoder`` =
          ``orders_pb2.OrderPlaced.FromString`` of the body, a no-op async handler of
          the generated class, ``apply_types=False`` (no fast_depends injection: its
          leanest set-up), FastStream's default ack policy (``ACK_FIRST``: aiokafka
          auto-commit), ``logger=None`` (else it logs two lines per message)
  con_fd  context: the same with dependency injection on and the parameter typed
          ``NoCast[orders_pb2.OrderPlaced]``, as FastStream's protobuf docs show it
          (``NoCast``'s resolver is synchronous, so FastStream runs it in a worker
          thread for every message: ~5x slower than con_f in a smoke run)

Example (from ``kafka_throughput.py``)::

    ROW_FUNCS |= PEER_FUNCS   # {"con_g": con_g, "con_f": con_f, "con_fd": con_fd}
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from _common import Window
from shop.orders.v1 import orders_pb2

from wirebus import App, Router
from wirebus.codec import EventRegistry
from wirebus.consumer import EventProcessor

try:  # a baseline checkout (bench/compare.py) may predate the module
    from wirebus.consumer_runner import ConsumerRunner
except ImportError:  # pragma: no cover
    from wirebus.consumer import ConsumerRunner  # type: ignore[attr-defined,no-redef]
from wirebus.inbox import InMemoryInbox
from wirebus.kafka import KafkaConsumer, KafkaEventPublisher

try:  # the bench extra; module-level so that FastStream resolves the handler's annotation
    from faststream import NoCast
except ImportError:  # pragma: no cover - con_f then fails with a clear message
    NoCast = None

__all__ = ["PEER_FUNCS", "PEER_ROWS"]

ROW_TIMEOUT_S = 180.0
POLL_S = 0.002
SOURCE = "bench"

PEER_ROWS = {
    "con_g": "wirebus runner, handler takes the generated class",
    "con_f": "FastStream subscriber, FromString decoder, no-op (apply_types=False)",
    "con_fd": "FastStream subscriber as documented (NoCast[...] parameter, DI on)",
}

proto_router = Router("bench-proto")


@proto_router.handler(event=True)
async def on_order_placed_proto(event: orders_pb2.OrderPlaced) -> None:
    return None


async def con_g(bootstrap: str, topic: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """The wirebus runner with a handler of the generated class (no dataclass conversion)."""
    n = ctx["n"]
    group = f"bench-proto-{uuid.uuid4().hex[:12]}"
    registry = EventRegistry()
    registry.add(orders_pb2.OrderPlaced, topic=topic)
    mediator = App(name="bench", routers=[proto_router]).mediator()
    dead_letters = KafkaEventPublisher(bootstrap, registry, source=SOURCE)
    await dead_letters.start()
    port = KafkaConsumer(bootstrap, group=group, topics=[topic], create_topics=False)
    processor = EventProcessor(
        mediator, registry, group=group, inbox=InMemoryInbox(), dead_letters=dead_letters
    )
    runner = ConsumerRunner(port, processor)
    started = time.perf_counter()
    try:
        await runner.start()
        task = asyncio.create_task(runner.run())
        try:
            w, first = await _until_handled(runner.outcomes, n, task, started)
        finally:
            await runner.stop()
            await asyncio.wait_for(task, 30)
    finally:
        await dead_letters.stop()
        await mediator.close()
    if set(runner.outcomes) != {"handled"}:
        raise RuntimeError(f"unexpected outcomes: {runner.outcomes}")
    total = runner.outcomes["handled"]
    return w.result(total - first, total=total, wall_from_start_s=w.t1 - started)


async def _until_handled(
    outcomes: dict[str, int], n: int, task: asyncio.Task[Any], started: float
) -> tuple[Window, int]:
    """Poll ``outcomes`` until ``n`` records were handled: the window and its first count."""
    w: Window | None = None
    first = 0
    while True:
        handled = outcomes.get("handled", 0)
        if handled and w is None:
            w, first = Window().__enter__(), handled
        if handled >= n:
            assert w is not None
            w.stop()
            return w, first
        if task.done():
            task.result()
            raise RuntimeError("the consumer runner stopped early")
        if time.perf_counter() > started + ROW_TIMEOUT_S:
            raise TimeoutError(f"the wirebus consumer did not finish in time: {outcomes}")
        await asyncio.sleep(POLL_S)


async def _faststream(bootstrap: str, topic: str, n: int, *, apply_types: bool) -> dict[str, Any]:
    """FastStream's aiokafka subscriber: protobuf decoder, no-op handler, N records."""
    if NoCast is None:
        raise RuntimeError("the FastStream rows need FastStream: pip install -e '.[bench]'")
    from faststream.kafka import KafkaBroker

    parse = orders_pb2.OrderPlaced.FromString
    broker = KafkaBroker(bootstrap, logger=None, apply_types=apply_types)
    state: dict[str, Any] = {"count": 0, "window": None}
    done = asyncio.Event()

    async def decoder(msg: Any) -> Any:
        return parse(msg.body)

    def seen() -> None:
        state["count"] += 1
        if state["window"] is None:
            state["window"] = Window().__enter__()
        if state["count"] >= n:
            state["window"].stop()
            done.set()

    async def lean(event: orders_pb2.OrderPlaced) -> None:
        seen()

    async def documented(event: NoCast[orders_pb2.OrderPlaced]) -> None:
        seen()

    broker.subscriber(
        topic,
        group_id=f"bench-faststream-{uuid.uuid4().hex[:12]}",
        auto_offset_reset="earliest",
        decoder=decoder,
    )(documented if apply_types else lean)
    started = time.perf_counter()
    await broker.start()
    try:
        await asyncio.wait_for(done.wait(), ROW_TIMEOUT_S)
    finally:
        await broker.stop()
    w: Window = state["window"]
    return w.result(n - 1, total=state["count"], wall_from_start_s=w.t1 - started)


async def con_f(bootstrap: str, topic: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """FastStream at its leanest: ``apply_types=False`` (no dependency injection)."""
    return await _faststream(bootstrap, topic, ctx["n"], apply_types=False)


async def con_fd(bootstrap: str, topic: str, ctx: dict[str, Any]) -> dict[str, Any]:
    """FastStream as its protobuf docs show it: DI on, ``NoCast[...]`` parameter."""
    return await _faststream(bootstrap, topic, ctx["n"], apply_types=True)


PEER_FUNCS = {"con_g": con_g, "con_f": con_f, "con_fd": con_fd}
