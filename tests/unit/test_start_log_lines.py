"""What the gateway and the Connect port say when they start: the method count, in English."""

from __future__ import annotations

import logging

import pytest
from google.protobuf.descriptor import ServiceDescriptor

from tests.unit._protos import shop_service
from wirebus import App, Router
from wirebus.connect import ConnectConfig, ConnectServer
from wirebus.gateway import Gateway, GatewayConfig


def one_method_service() -> ServiceDescriptor:
    """``wirebus.testing.startlog_lookup.Lookup``: one unary method, ``Get``."""
    return shop_service(
        "wirebus/testing/startlog_lookup.proto",
        "Lookup",
        [("Get", "GetOrderRequest", "Order", False, False)],
    )


def one_method_app() -> App:
    return App(
        name="lookup", services=[one_method_service()], routers=[Router()], allow_unbound=True
    )


async def test_a_gateway_with_one_method_says_it_serves_1_method(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wirebus.gateway.server")
    async with Gateway(one_method_app(), GatewayConfig(port=0, grace_seconds=1)) as gateway:
        assert f"gateway serving 1 method on {gateway.address}" in caplog.messages


async def test_a_connect_port_with_one_method_says_1_method(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wirebus.connect.server")
    config = ConnectConfig(port=0, grace_seconds=1.0)
    async with ConnectServer(one_method_app(), config) as server:
        assert f"Connect and gRPC-Web on {server.url} (1 method)" in caplog.messages
