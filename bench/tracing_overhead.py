"""Tracing overhead per call: off, installed but not sampled, sampled (issue 13).

Runs one request through the mediator's pipeline as a gRPC call would (a
call bound with metadata), ``--calls`` times per case, in one process:

- off: the correlation stage only (what every app with a database has);
- not sampled: tracing installed, the caller's ``traceparent`` not sampled;
- sampled: tracing installed, spans recorded (an SDK provider, no exporter).

Example::

    python bench/tracing_overhead.py --calls 20000
"""

from __future__ import annotations

import argparse
import asyncio
import time

from opentelemetry.sdk.trace import TracerProvider

from wirebus import App, Router
from wirebus.context import CallInfo, bind_call
from wirebus.messages import Query
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


async def per_call(tracing: Tracing | bool, flags: str, calls: int) -> float:
    metadata = {"traceparent": f"00-{TRACE}-{flags}"}
    info = CallInfo(method="/bench.Ping/Ping", peer="bench", metadata=metadata, deadline=None)
    async with app(tracing).mediator(publisher=_NoPublisher()) as mediator:  # type: ignore[arg-type]
        run = mediator.runner(Ping)
        message = Ping(n=1)

        async def one_call() -> None:
            bind_call(lambda: info)  # a transport binds each call in a task of its own
            await run(message)

        for _ in range(200):
            await asyncio.create_task(one_call())
        started = time.perf_counter()
        for _ in range(calls):
            await asyncio.create_task(one_call())
        return (time.perf_counter() - started) / calls * 1e6


class _NoPublisher:
    async def publish_many(self, events: object) -> None:
        return None


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000)
    calls = parser.parse_args().calls
    off = await per_call(False, "01", calls)
    unsampled = await per_call(Tracing(tracer_provider=TracerProvider()), "00", calls)
    sampled = await per_call(Tracing(tracer_provider=TracerProvider()), "01", calls)
    print(f"off           {off:7.2f} us/call")
    print(f"not sampled   {unsampled:7.2f} us/call  (+{unsampled - off:.2f})")
    print(f"sampled       {sampled:7.2f} us/call  (+{sampled - off:.2f}: server + handler spans)")


if __name__ == "__main__":
    asyncio.run(main())
