"""``wirebus serve`` on SIGTERM with calls queued: running calls finish, the rest get UNAVAILABLE.

A test app whose ``GetOrder`` takes one second is flooded with calls; once
some run, the process gets SIGTERM while more calls keep coming. The calls
that were running finish OK within the grace; every other call ends at once
with UNAVAILABLE (or RESOURCE_EXHAUSTED, past the limit, before the signal);
none is CANCELLED.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from tests.unit.test_cli import ENV, ROOT, free_port
from wirebus.testing import wait_until

SLOW_APP = """
    import asyncio
    import os

    from shop.orders.v1 import orders_pb2

    from wirebus import App, Router

    router = Router()


    @router.handler
    async def get_order(query: orders_pb2.GetOrderRequest) -> orders_pb2.Order:
        with open(os.environ["SLOW_APP_STARTED"], "a") as started:
            started.write(query.order_id + "\\n")
        await asyncio.sleep(1.0)
        return orders_pb2.Order(order_id=query.order_id)


    app = App(name="slow", services=[orders_pb2], routers=[router], allow_unbound=True)
"""


def started_calls(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.mark.parametrize("limit", [None, 4])
async def test_sigterm_lets_running_calls_finish_and_answers_the_rest_unavailable(tmp_path, limit):
    (tmp_path / "slow_app.py").write_text(textwrap.dedent(SLOW_APP))
    started = tmp_path / "started.txt"
    port = free_port()
    args = ["serve", "slow_app:app", "--app-dir", str(tmp_path), "--no-relay"]
    args += ["--port", str(port), "--grace", "20"]
    if limit is not None:
        args += ["--max-concurrent-calls", str(limit)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wirebus", *args,
        cwd=ROOT, env={**ENV, "SLOW_APP_STARTED": str(started)}, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            stub = orders_pb2_grpc.OrderServiceStub(channel)

            async def call(order_id: str) -> tuple[str, grpc.StatusCode, float]:
                began = time.monotonic()
                try:
                    await stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id), timeout=60)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    code = exc.code()
                return order_id, code, time.monotonic() - began

            flood = [asyncio.ensure_future(call(f"before-{i}")) for i in range(600)]
            await wait_until(lambda: len(started_calls(started)) >= (limit or 50), within=30)
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            late = [asyncio.ensure_future(call(f"after-{i}")) for i in range(100)]
            results = await asyncio.gather(*flood, *late)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    stderr = err.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    codes = collections.Counter(code for _, code, _ in results)
    assert set(codes) <= {
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }, codes
    ran = set(started_calls(started))
    ok = {order_id for order_id, code, _ in results if code == grpc.StatusCode.OK}
    assert ok == ran  # every call that started finished, within the grace
    if limit is not None:
        assert len(ran) == limit
    refused_late = [t for _, code, t in results if code == grpc.StatusCode.UNAVAILABLE]
    assert refused_late, codes
    assert time.monotonic() - signalled < 20
