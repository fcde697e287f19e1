"""One error tree: every error wirebus raises derives from ``WirebusError``, drawn in one place."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import time

import pytest

import wirebus
from wirebus import errors
from wirebus.errors import ConsumeError, UnknownEventType, WirebusError

SKIPPED = ("wirebus.__main__", "wirebus.migrations")  # run the CLI / alembic when imported


def wirebus_modules() -> list[object]:
    names = [
        info.name
        for info in pkgutil.walk_packages(wirebus.__path__, "wirebus.")
        if not info.name.startswith(SKIPPED)
    ]
    return [importlib.import_module(name) for name in names]


def exceptions_defined_in_wirebus() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for module in wirebus_modules():
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("wirebus"):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def test_every_exception_class_of_wirebus_is_a_wirebus_error() -> None:
    classes = exceptions_defined_in_wirebus()

    assert len(classes) > 20
    assert [c for c in classes if not issubclass(c, WirebusError)] == []


def test_the_errors_docstring_draws_every_error_of_the_errors_module() -> None:
    doc = errors.__doc__ or ""
    drawn = [name for name in errors.__all__ if isinstance(getattr(errors, name), type)]

    for name in drawn:
        if issubclass(getattr(errors, name), WirebusError):
            assert f" {name} " in doc, f"{name} is missing from the tree in errors.py"


def test_the_broker_and_codec_errors_are_the_ones_in_errors() -> None:
    from wirebus import broker, cloudevents

    assert broker.UnknownEventType is UnknownEventType
    assert broker.PublishError is errors.PublishError
    assert broker.HeldBack is errors.HeldBack
    assert cloudevents.MalformedEvent is errors.MalformedEvent


def test_there_is_one_unknown_event_type() -> None:
    from wirebus import consumer

    assert consumer.UnknownEventType is UnknownEventType


def test_publish_errors_map_to_unavailable_and_are_retriable_by_default() -> None:
    import grpc

    error = errors.PublishError("shop.orders.v1", "KafkaConnectionError")

    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.retriable
    assert isinstance(errors.HeldBack("t", "order"), errors.PublishError)


async def test_a_kafka_consumer_that_cannot_reach_the_broker_raises_consume_error() -> None:
    from wirebus.kafka import KafkaConsumer

    port = KafkaConsumer("127.0.0.1:1", group="g", topics=["t"], create_topics=False)
    started = time.monotonic()
    with pytest.raises(ConsumeError, match=r"cannot join 'g' at 127\.0\.0\.1:1"):
        await port.start()
    await port.stop()
    assert time.monotonic() - started < 30
