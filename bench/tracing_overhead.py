"""Tracing overhead per call: off, installed but not sampled, sampled (issue 13).

Runs one request through the mediator's pipeline as a gRPC call would (a
call bound with metadata), ``--calls`` times per case, in one process:

- off: the correlation stage only (what every app with a database has);
- not sampled: tracing installed, the caller's ``traceparent`` not sampled;
- root dropped: no ``traceparent``, a sampler that drops every root
  (``ParentBased(ALWAYS_OFF)``, the SDK's ``parentbased_always_off``);
- sampled: tracing installed, spans recorded (an SDK provider, no exporter).

Times are the process's CPU time (``time.process_time``), so the
machine's other load counts only through caches. ``--direct``: each call's coroutine is driven to its end in a context of its
own, without a task per call or an event loop pass (~5 µs of noise each),
so only the pipeline's cost is left. The cases take turns, ``--rounds`` times; each prints its median (and the
median of its per-round difference from off), so a noisy machine moves
all cases of a round together.

``--encode N``: instead, the cost of encoding one event into a record
(``EventEncoder``), N encodes per timing: ``record(event)`` alone (what a
publisher's ``publish`` does: its context read per event) and
``record(event, context=)`` (the outbox's: context read once per
transaction). Runs on any wirebus version (for a before/after from the same
run, put an older ``src`` first on PYTHONPATH).

Example::

    python bench/tracing_overhead.py --calls 5000 --rounds 7
    python bench/tracing_overhead.py --encode 20000 --rounds 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import statistics
import time
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

from wirebus import App, Router
from wirebus.context import CallInfo, bind_call
from wirebus.messages import Query

if TYPE_CHECKING:
    from wirebus.tracing import Tracing

TRACE = "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331"


class Ping(Query[int]):
    n: int


def app(tracing: Tracing | bool) -> App:
    router = Router("ping")

    @router.handler
    async def ping(query: Ping) -> int:
        return query.n

    return App(name="bench", routers=[router], tracing=tracing)


async def per_call(
    tracing: Tracing | bool, flags: str | None, calls: int, *, direct: bool = False
) -> float:
    metadata = {"traceparent": f"00-{TRACE}-{flags}"} if flags is not None else {}
    info = CallInfo(method="/bench.Ping/Ping", peer="bench", metadata=metadata, deadline=None)
    async with app(tracing).mediator(publisher=_NoPublisher()) as mediator:  # type: ignore[arg-type]
        run = mediator.runner(Ping)
        message = Ping(n=1)

        async def one_call() -> None:
            bind_call(lambda: info)  # a transport binds each call in a task of its own
            await run(message)

        if direct:
            return _direct(lambda: run(message), info, calls)
        for _ in range(200):
            await asyncio.create_task(one_call())
        started = time.process_time()  # CPU time: the machine's other load does not count
        for _ in range(calls):
            await asyncio.create_task(one_call())
        return (time.process_time() - started) / calls * 1e6


def _direct(call: Any, info: CallInfo, calls: int) -> float:
    """Each call run to its end in a context of its own, with no task and no event loop pass.

    The handler never waits, so one ``send`` completes the coroutine: what is
    left is the pipeline's own cost per call.
    """

    def one_call() -> None:
        bind_call(lambda: info)
        coroutine = call()
        try:
            coroutine.send(None)
        except StopIteration:
            return
        raise RuntimeError("the call waited: --direct needs a handler that never waits")

    for _ in range(200):
        contextvars.copy_context().run(one_call)
    started = time.process_time()
    for _ in range(calls):
        contextvars.copy_context().run(one_call)
    return (time.process_time() - started) / calls * 1e6


class _NoPublisher:
    async def publish_many(self, events: object) -> None:
        return None


CASES = ("off", "not sampled", "root dropped", "sampled")


async def one_round(calls: int, direct: bool) -> dict[str, float]:
    from wirebus.tracing import Tracing

    def sdk() -> Tracing:
        return Tracing(tracer_provider=TracerProvider())

    dropping = Tracing(tracer_provider=TracerProvider(sampler=ParentBased(ALWAYS_OFF)))
    return {
        "off": await per_call(False, "01", calls, direct=direct),
        "not sampled": await per_call(sdk(), "00", calls, direct=direct),
        "root dropped": await per_call(dropping, None, calls, direct=direct),
        "sampled": await per_call(sdk(), "01", calls, direct=direct),
    }


def encode_round(count: int) -> dict[str, float]:
    """µs per event (the best of 9 timings of ``count`` encodes, CPU time)."""
    import datetime as dt
    import inspect
    import timeit

    from examples.shop.orders.messages import LineItem, OrderPlaced
    from wirebus.broker import now_rfc3339
    from wirebus.codec import EventRegistry
    from wirebus.encoding import EventEncoder

    registry = EventRegistry()
    registry.add(OrderPlaced)
    encoder = EventEncoder(registry, source="bench")
    at = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    items = (LineItem(sku="book", quantity=2, price_cents=1250),)
    event = OrderPlaced(
        order_id="o-1", customer_id="c-1", items=items, total_cents=2500, placed_at=at
    )
    record, stamp = encoder.record, now_rfc3339()
    cases = {"record(event)": lambda: record(event, time=stamp)}
    if "context" in inspect.signature(record).parameters:  # the outbox's: context read per batch
        context = encoder.context_headers()
        cases["record(event, context=)"] = lambda: record(event, time=stamp, context=context)
    else:  # before correlation headers: the same call
        cases["record(event, context=)"] = cases["record(event)"]
    timer = timeit.Timer
    return {
        name: min(timer(call, timer=time.process_time).repeat(9, count)) / count * 1e6
        for name, call in cases.items()
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--encode", type=int, default=0, metavar="N")
    parser.add_argument("--direct", action="store_true", help="no task per call (see _direct)")
    options = parser.parse_args()
    if options.encode:
        results = [encode_round(options.encode) for _ in range(options.rounds)]
        for case in results[0]:
            median = statistics.median(r[case] for r in results)
            print(f"{case:24} {median:6.2f} us/event")
        return
    rounds = [await one_round(options.calls, options.direct) for _ in range(options.rounds)]
    for case in CASES:
        median = statistics.median(r[case] for r in rounds)
        over = statistics.median(r[case] - r["off"] for r in rounds)
        extra = "" if case == "off" else f"  (+{over:.2f} over off)"
        print(f"{case:13} {median:7.2f} us/call{extra}")


if __name__ == "__main__":
    asyncio.run(main())
