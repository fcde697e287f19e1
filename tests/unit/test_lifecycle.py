"""``AsyncLifecycle``: ``async with`` starts, stops on exit, and stops a failed start."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from examples.shop.app import app as shop_app
from wirebus import LifecycleError
from wirebus._lifecycle import AsyncLifecycle
from wirebus.gateway import GatewayConfig
from wirebus.runtime import Runtime
from wirebus.settings import Settings


class Pump(AsyncLifecycle):
    """Opens two things in turn; the second may fail; stop closes what is open."""

    def __init__(self, *, fail_second: bool = False, fail_stop: bool = False) -> None:
        self.fail_second = fail_second
        self.fail_stop = fail_stop
        self.open: list[str] = []
        self.stops = 0

    async def start(self) -> None:
        self.open.append("first")
        if self.fail_second:
            raise OSError("second refused")
        self.open.append("second")

    async def stop(self) -> None:
        self.stops += 1
        self.open.clear()
        if self.fail_stop:
            raise RuntimeError("stop failed too")


async def test_async_with_starts_and_stops_on_exit() -> None:
    pump = Pump()
    async with pump as same:
        assert same is pump
        assert pump.open == ["first", "second"]
    assert pump.open == []
    assert pump.stops == 1


async def test_async_with_stops_on_an_exception_in_the_block() -> None:
    pump = Pump()
    with pytest.raises(ValueError, match="in the block"):
        async with pump:
            raise ValueError("in the block")
    assert pump.open == []


async def test_a_failed_start_is_stopped_before_its_error_is_raised() -> None:
    pump = Pump(fail_second=True)
    with pytest.raises(OSError, match="second refused"):
        async with pump:
            pytest.fail("the block must not run")
    assert pump.open == []  # "first" was released
    assert pump.stops == 1


async def test_when_stopping_a_failed_start_fails_too_the_starts_error_is_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pump = Pump(fail_second=True, fail_stop=True)
    with (
        caplog.at_level(logging.ERROR, logger="wirebus._lifecycle"),
        pytest.raises(OSError, match="second refused"),
    ):
        async with pump:
            pytest.fail("the block must not run")
    assert "stopping Pump after its failed start failed" in caplog.text


def taken_port() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


async def test_a_runtime_whose_gateway_cannot_bind_stops_its_consumers_and_database(
    tmp_path: Path,
) -> None:
    sock, port = taken_port()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/shop.db")
    runtime = Runtime(
        shop_app, settings, consume=True, gateway=GatewayConfig(host="127.0.0.1", port=port)
    )
    try:
        with pytest.raises((LifecycleError, RuntimeError), match="cannot listen on"):
            async with runtime:
                pytest.fail("the block must not run")
    finally:
        sock.close()

    await asyncio.wait_for(runtime.wait(), 1)  # the consumer loop ended
    assert runtime.database is not None
    with pytest.raises(LifecycleError, match="was closed"):
        await runtime.database.start()
