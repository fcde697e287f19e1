"""The gateway's production surface through a real server on 127.0.0.1.

RPC metrics with the gRPC Prometheus middleware's names move as calls are
made (scraped over HTTP), one ``wirebus.access`` line is written per call
(without payloads; as JSON with ``JsonFormatter``), keepalive settings reach
grpc, and ``wirebus serve --help`` documents every flag.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import click
import grpc
import grpc.aio
import pytest
from click.testing import CliRunner
from shop.orders.v1 import orders_pb2, orders_pb2_grpc

from examples.shop.app import app as shop_app
from tests.unit.test_gateway_deadlines import Observed, place, slow_app
from tests.unit.test_metrics import free_port, scrape
from wirebus import cli
from wirebus.access_log import ACCESS_LOGGER, JsonFormatter
from wirebus.gateway import Gateway, GatewayConfig
from wirebus.runtime import Runtime
from wirebus.settings import Settings
from wirebus.testing import wait_until

SERVICE = "shop.orders.v1.OrderService"
ITEM = orders_pb2.LineItem(sku="sku-1", quantity=2, price_cents=150)


def labels(method: str, **more: str) -> str:
    pairs = {"grpc_method": method, "grpc_service": SERVICE, "grpc_type": "unary", **more}
    return ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[tuple[Runtime, int]]:
    port = free_port()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/shop.db")
    config = GatewayConfig(port=0)
    async with Runtime(
        shop_app, settings, gateway=config, consume=True, metrics_port=port
    ) as runtime:
        yield runtime, port


async def test_rpc_metrics_count_calls_by_method_and_code_with_the_middlewares_names(
    shop: tuple[Runtime, int],
) -> None:
    runtime, port = shop
    assert runtime.gateway is not None
    async with grpc.aio.insecure_channel(runtime.gateway.address) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        for _ in range(2):
            await stub.PlaceOrder(orders_pb2.PlaceOrderRequest(customer_id="c", items=[ITEM]))
        for request in (orders_pb2.PlaceOrderRequest(customer_id="c"),):  # no items
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.PlaceOrder(request)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="missing"))
    values = await asyncio.to_thread(scrape, port)
    place_order, get_order = labels("PlaceOrder"), labels("GetOrder")
    assert values[f"grpc_server_started_total{{{place_order}}}"] == 3
    assert values[f"grpc_server_msg_received_total{{{place_order}}}"] == 3
    assert values[f"grpc_server_msg_sent_total{{{place_order}}}"] == 2
    handled = "grpc_server_handled_total{%s}"
    assert values[handled % labels("PlaceOrder", grpc_code="OK")] == 2
    assert values[handled % labels("PlaceOrder", grpc_code="InvalidArgument")] == 1
    assert values[handled % labels("GetOrder", grpc_code="NotFound")] == 1
    assert values[handled % labels("GetOrder", grpc_code="OK")] == 0
    assert values[f"grpc_server_handling_seconds_count{{{place_order}}}"] == 3
    assert values[f'grpc_server_handling_seconds_bucket{{{place_order},le="10.0"}}'] == 3
    assert values[f"grpc_server_handling_seconds_count{{{get_order}}}"] == 1
    assert values["wirebus_gateway_calls_in_flight"] == 0


async def test_a_passed_deadline_is_counted_as_deadline_exceeded_not_cancelled(
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/deadlines.db")
    observed = Observed()
    app, config = slow_app(observed), GatewayConfig(port=0)
    async with Runtime(app, settings, gateway=config, relay=False, metrics_port=port) as runtime:
        assert runtime.gateway is not None
        async with grpc.aio.insecure_channel(runtime.gateway.address) as channel:
            stub = orders_pb2_grpc.OrderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.PlaceOrder(place(30), timeout=0.5)
        gateway = runtime.gateway
        await wait_until(lambda: not gateway.calls_in_flight)
        values = await asyncio.to_thread(scrape, port)
    handled = "grpc_server_handled_total{%s}"
    assert values[handled % labels("PlaceOrder", grpc_code="DeadlineExceeded")] == 1
    assert values[handled % labels("PlaceOrder", grpc_code="Canceled")] == 0


async def test_each_call_writes_one_access_line_with_its_code_duration_and_correlation_id(
    shop: tuple[Runtime, int], caplog: pytest.LogCaptureFixture
) -> None:
    runtime, _ = shop
    assert runtime.gateway is not None
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    secret = "customer-with-a-secret-name"
    async with grpc.aio.insecure_channel(runtime.gateway.address) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        metadata = (("x-correlation-id", "corr-42"),)
        request = orders_pb2.PlaceOrderRequest(customer_id=secret, items=[ITEM])
        await stub.PlaceOrder(request, metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="missing"))
    lines = [r for r in caplog.records if r.name == ACCESS_LOGGER]
    assert [(r.grpc_method, r.grpc_code) for r in lines] == [  # type: ignore[attr-defined]
        (f"/{SERVICE}/PlaceOrder", "OK"),
        (f"/{SERVICE}/GetOrder", "NOT_FOUND"),
    ]
    placed, missing = lines
    assert placed.correlation_id == "corr-42"  # type: ignore[attr-defined]
    # no x-correlation-id: the id the pipeline made for the call (its events carry it too)
    assert re.fullmatch("[0-9a-f]{32}", missing.correlation_id)  # type: ignore[attr-defined]
    assert placed.duration_ms > 0  # type: ignore[attr-defined]
    assert placed.peer.startswith("ipv4:127.0.0.1:")  # type: ignore[attr-defined]
    assert "corr-42" in placed.getMessage()
    assert all(secret not in r.getMessage() for r in caplog.records)  # no payloads


def test_the_json_formatter_writes_one_object_with_the_access_fields() -> None:
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, "x", 1, "%s done", ("call",), None)
    record.grpc_code = "OK"
    record.duration_ms = 1.5
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "call done"
    assert entry["logger"] == ACCESS_LOGGER
    assert entry["level"] == "INFO"
    assert entry["grpc_code"] == "OK"
    assert entry["duration_ms"] == 1.5


async def test_a_connection_idle_past_max_connection_idle_is_closed_by_the_server() -> None:
    config = GatewayConfig(port=0, max_connection_idle_ms=300)
    gateway = Gateway(shop_app, config)
    async with gateway, grpc.aio.insecure_channel(gateway.address) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetOrder(orders_pb2.GetOrderRequest(order_id="missing"))
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        # the server's GOAWAY after 300 ms without calls turns the channel IDLE
        await wait_until(lambda: channel.get_state() == grpc.ChannelConnectivity.IDLE, within=10)


def test_keepalive_settings_must_be_positive() -> None:
    from wirebus.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="keepalive_time_ms"):
        GatewayConfig(keepalive_time_ms=0)
    with pytest.raises(ConfigurationError, match="max_connection_idle_ms"):
        GatewayConfig(max_connection_idle_ms=0)


def leaf_commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every command under ``group`` (``("dlq", "replay")``, ...)."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*path, name))
        else:
            yield (*path, name)


def command_at(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli.main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", list(leaf_commands(cli.main)), ids=" ".join)
def test_help_documents_every_flag(path: tuple[str, ...]) -> None:
    command = command_at(path)
    result = CliRunner().invoke(cli.main, [*path, "--help"])

    assert result.exit_code == 0, result.output
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help text"
            for flag in (*param.opts, *param.secondary_opts):  # --reflection / --no-reflection
                assert flag in result.output, f"{' '.join(path)} --help does not show {flag}"


@pytest.mark.parametrize("command", ["serve", "run"])
def test_serve_and_run_help_shows_the_production_and_connect_flags(command: str) -> None:
    result = CliRunner().invoke(cli.main, [command, "--help"])

    assert result.exit_code == 0, result.output
    for flag in (
        "--tls-cert", "--tls-key", "--client-ca", "--max-concurrent-calls", "--grace",
        "--metrics-port", "--log-format", "--keepalive-time", "--keepalive-timeout",
        "--no-reflection", "--connect-port", "--cors-origin",
    ):  # fmt: skip
        assert flag in result.output, flag


def test_consume_help_shows_its_logging_and_metrics_flags() -> None:
    result = CliRunner().invoke(cli.main, ["consume", "--help"])

    assert result.exit_code == 0, result.output
    for flag in ("--group", "--log-format", "--metrics-port", "--start-at", "--no-relay"):
        assert flag in result.output, flag
