"""What the gateway and the Connect port say when they start: the method count, in English."""

from __future__ import annotations

import contextlib
import logging

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor
from shop.orders.v1 import orders_pb2  # noqa: F401  (the pool needs orders.proto)

from wirebus import App, Router
from wirebus.connect import ConnectConfig, ConnectServer
from wirebus.gateway import Gateway, GatewayConfig


def one_method_service() -> ServiceDescriptor:
    """``wirebus.testing.startlog.Lookup``: one unary method, ``Get``."""
    pool = descriptor_pool.Default()
    name = "wirebus/testing/startlog_lookup.proto"
    with contextlib.suppress(KeyError):
        return pool.FindFileByName(name).services_by_name["Lookup"]
    file = descriptor_pb2.FileDescriptorProto(
        name=name, package="wirebus.testing.startlog", syntax="proto3",
        dependency=["shop/orders/v1/orders.proto"],
    )  # fmt: skip
    file.service.add(name="Lookup").method.add(
        name="Get",
        input_type=".shop.orders.v1.GetOrderRequest",
        output_type=".shop.orders.v1.Order",
    )
    return pool.Add(file).services_by_name["Lookup"]


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
