"""``make demo``: start the shop with ``wirebus run``, drive it, stop it.

Starts ``wirebus run examples.shop.app:app`` on a free loopback port, waits
until gRPC health says SERVING, runs the scripted client, then sends SIGTERM
and checks the server shut down cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from examples.shop.client import drive


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _wait_serving(address: str, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1.0
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the shop did not become SERVING on {address} in {within:g}s")
        await asyncio.sleep(0.1)


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    port = _free_port()
    address = f"127.0.0.1:{port}"
    command = [sys.executable, "-m", "wirebus", "run", "examples.shop.app:app", "--port", str(port)]
    print(f"$ wirebus run examples.shop.app:app --port {port}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    scratch = tempfile.TemporaryDirectory(prefix="wirebus-demo-")
    # a fresh SQLite file per demo run, unless a database is configured
    env.setdefault("WIREBUS_DATABASE_URL", f"sqlite+aiosqlite:///{scratch.name}/shop.db")
    server = subprocess.Popen(command, env=env)
    try:
        asyncio.run(_wait_serving(address))
        print(f"--- driving the shop at {address}")
        failures = asyncio.run(drive(address))
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        scratch.cleanup()
    print(f"--- server stopped on SIGTERM with exit code {code}")
    if failures or code != 0:
        print(f"demo FAILED: {failures} unexpected outcome(s), server exit {code}")
        return 1
    print("demo OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
