"""Soak of the Connect port with hostile requests: the cost per request stays bounded.

``wirebus run`` of the shop (a subprocess; embedded: SQLite in a temporary
directory, the in-memory broker) with ``--connect-port``. 16 clients loop
for ``--soak-seconds`` over every kind of bad request the port refuses
(:data:`HOSTILE`): malformed protobuf, JSON that is no object or nested
50 000 deep, gzip bombs (Connect and gRPC-Web), lying envelopes, the
trailers flag from a client, a ``Content-Length`` of a terabyte, a 70 KiB
head, bad timeouts, unknown paths and compressions -- one connection
each, so connections churn too. The server's RSS is sampled every second.

What must hold:

- every answer is the one its kind gets (:data:`HOSTILE`), the server logs
  nothing at ERROR and exits 0 on SIGTERM;
- RSS flat: the median of the last third of the samples within
  :data:`RSS_GROWTH_BOUND_MB` of the median of the middle third (medians:
  the 1 MiB requests and bombs in flight make single samples swing by
  ~10 MiB). A gzip bomb inflated whole, a body kept past its request or a
  connection never freed costs a MiB or more per request and shows within
  seconds at these rates. The slope and the growth per request are
  reported for trend-watching.

The figures (requests, requests/s, answers by kind, RSS) go in the run's summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.checkout import PYTHONPATH
from tests.soak.test_soak import Server, _free_port, slope_kb_per_min
from tests.unit._connect import parse, request
from wirebus.testing import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.soak]

APP = "examples.shop.app:app"
CLIENTS = 16
GET = "/shop.orders.v1.OrderService/GetOrder"
LIST = "/shop.orders.v1.OrderService/ListOrders"

RSS_GROWTH_BOUND_MB = 8.0
"""Median of the last third minus median of the middle third: a few hundred
requests of a leaking kind (each a MiB: a body, an inflated bomb) exceed it."""


def _head(path: str, content_type: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def _post(path: str, content_type: str, body: bytes, extra: str = "") -> bytes:
    return _head(path, content_type, len(body), extra) + body


def _envelope(data: bytes, flags: int = 0) -> bytes:
    return struct.pack(">BI", flags, len(data)) + data


BOMB = gzip.compress(b"\x00" * (64 << 20))  # 64 KiB on the wire, 64 MiB inflated

HOSTILE: dict[str, tuple[bytes, frozenset[int]]] = {
    "malformed protobuf": (_post(GET, "application/proto", b"\xff\xff\xff"), frozenset({400})),
    "JSON null": (_post(GET, "application/json", b"null"), frozenset({400})),
    "deep JSON": (
        _post(GET, "application/json", b'{"orderId": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
        frozenset({400}),
    ),
    "gzip bomb": (
        _post(GET, "application/json", BOMB, "Content-Encoding: gzip\r\n"),
        frozenset({429}),
    ),
    "gRPC-Web gzip bomb": (
        _post(GET, "application/grpc-web", _envelope(BOMB, 1), "Grpc-Encoding: gzip\r\n"),
        frozenset({200}),  # gRPC-Web: the status is in the trailers
    ),
    "lying envelope": (
        _post(LIST, "application/connect+json", b"\x00\xff\xff\xff\xff{}"),
        frozenset({200}),
    ),
    "trailers flag": (
        _post(GET, "application/grpc-web", _envelope(b"grpc-status: 0\r\n", 0x80)),
        frozenset({200}),
    ),
    "terabyte Content-Length": (_head(GET, "application/json", 10**12), frozenset({429})),
    "70 KiB head": (
        _post(GET, "application/json", b"{}", f"X-Big: {'a' * 70_000}\r\n"),
        frozenset({431}),
    ),
    "bad timeout": (
        _post(GET, "application/json", b"{}", "Connect-Timeout-Ms: soon\r\n"),
        frozenset({400}),
    ),
    "unknown path": (_post("/no.such.v1.Svc/Nope", "application/json", b"{}"), frozenset({501})),
    "unknown compression": (
        _post(GET, "application/json", b"{}", "Content-Encoding: br\r\n"),
        frozenset({501}),
    ),
    "wrong content-type": (_post(GET, "text/plain", b"{}"), frozenset({415})),
    "1 MiB order id": (
        _post(GET, "application/json", b'{"orderId": "' + b"x" * (1 << 20) + b'"}'),
        frozenset({400, 404}),
    ),
}


@contextlib.contextmanager
def running_shop(tmp_path: Path) -> Iterator[tuple[Server, int]]:
    """``wirebus run`` of the embedded shop with a Connect port: (server, connect port)."""
    port, connect = _free_port(), _free_port()
    env = {
        **os.environ,
        # this checkout's wirebus first, whatever the environment has installed
        "PYTHONPATH": PYTHONPATH,
        "WIREBUS_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/shop.db",
    }
    env.pop("WIREBUS_KAFKA_BOOTSTRAP", None)  # embedded: the in-memory broker
    args = ["run", APP, "--port", str(port), "--connect-port", str(connect),
            "--log-level", "warning"]  # fmt: skip
    log = tmp_path / "shop.log"
    with log.open("wb") as err:
        popen = subprocess.Popen(
            [sys.executable, "-m", "wirebus", *args], cwd=tmp_path, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    server = Server(popen, port, log)
    try:
        yield server, connect
    finally:
        server.stop()


async def serving(server: Server, connect: int, within: float = 120.0) -> None:
    """Until the shop's Connect port answers its health check."""

    async def answers() -> bool:
        assert server.popen.poll() is None, f"the shop exited:\n{server.output()[-3000:]}"
        with contextlib.suppress(OSError):
            reply = await request(f"http://127.0.0.1:{connect}/healthz", method="GET")
            return reply.status == 200
        return False

    await wait_until(answers, within=within, interval=0.2)


async def send(connect: int, data: bytes) -> int | str:
    """The HTTP status answered to ``data`` (or ``"reset"`` / ``"closed"``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", connect)
    try:
        writer.write(data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30.0)
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "no answer"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return parse(raw).status if raw else "closed"


async def client(
    connect: int, number: int, until: float, answers: dict[str, dict[str, int]]
) -> None:
    kinds = list(HOSTILE)
    turn = number
    while time.monotonic() < until:
        kind = kinds[turn % len(kinds)]
        turn += 1
        status = await send(connect, HOSTILE[kind][0])
        key = str(status)
        answers[kind][key] = answers[kind].get(key, 0) + 1


async def sample(server: Server, rss: list[tuple[float, int]]) -> None:
    started = time.monotonic()
    while True:
        rss.append((time.monotonic() - started, server.rss_kb()))
        await asyncio.sleep(1.0)  # the sampling period, not a wait for a condition


async def test_hostile_requests_for_the_soak_length_get_their_answers_with_flat_rss(
    pytestconfig: pytest.Config, figures: list[str], tmp_path: Path
) -> None:
    seconds = float(pytestconfig.getoption("--soak-seconds"))
    answers: dict[str, dict[str, int]] = {kind: {} for kind in HOSTILE}
    rss: list[tuple[float, int]] = []
    with running_shop(tmp_path) as (server, connect):
        await serving(server, connect)
        sampler = asyncio.create_task(sample(server, rss))
        started = time.monotonic()
        until = started + seconds
        await asyncio.gather(*(client(connect, n, until, answers) for n in range(CLIENTS)))
        elapsed = time.monotonic() - started
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        healthy = await request(f"http://127.0.0.1:{connect}{GET}", b'{"orderId": "o"}')
        returncode = server.stop()
        log = server.output()

    total = sum(sum(a.values()) for a in answers.values())
    third = len(rss) // 3
    middle, last = _median(rss[third : 2 * third]), _median(rss[2 * third :])
    growth_mb = (last - middle) / 1024
    per_request = (last - middle) * 1024 / max(1, total // 3)
    slope = slope_kb_per_min(rss[third:])
    figures.append(
        f"connect soak {seconds:.0f}s x {CLIENTS} hostile clients: {total} requests,"
        f" {total / elapsed:.0f}/s; RSS {rss[0][1] / 1024:.1f} -> {rss[-1][1] / 1024:.1f} MiB,"
        f" median last third - middle third {growth_mb:+.1f} MiB"
        f" (bound {RSS_GROWTH_BOUND_MB:.0f}; {per_request:+.0f} B/request),"
        f" slope {slope:+.0f} KiB/min; answers {answers}"
    )
    wrong = {
        kind: got
        for kind, got in answers.items()
        if set(got) - {str(s) for s in HOSTILE[kind][1]} - ({"reset"} if "head" in kind else set())
    }
    errors_logged = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    assert wrong == {}, wrong
    assert errors_logged == [], "\n".join(errors_logged[:40])
    assert healthy.status == 404  # still serving: the order does not exist
    assert returncode == 0, log[-3000:]
    assert all(answers.values()), answers  # every kind was sent
    assert len(rss) >= 9, "too short a run to measure: --soak-seconds 10 at least"
    assert growth_mb < RSS_GROWTH_BOUND_MB, [kb // 1024 for _, kb in rss]


def _median(points: list[tuple[float, int]]) -> float:
    values = sorted(kb for _, kb in points)
    return float(values[len(values) // 2])
