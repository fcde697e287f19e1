"""Fuzz fixtures: the shop running in a thread of its own, and what its loggers said.

Hypothesis drives plain (synchronous) test functions, one example after
another; the shop must outlive every example, so it runs in an
:class:`~wirebus.testing.AppHarness` on an event loop in a background thread,
and the examples talk to its gateway over a real socket, as an outsider does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest

from examples.shop.app import app as shop_app
from wirebus.testing import AppHarness

T = TypeVar("T")


class Logged(logging.Handler):
    """Keeps every record at ERROR or above, from any logger and thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def take(self) -> list[str]:
        """The records kept since the last ``take``, formatted (traceback included)."""
        with self._lock_records:
            records, self.records = self.records, []
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
        return [formatter.format(r) for r in records]


class ThreadedShop:
    """The shop's :class:`AppHarness` on an event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="shop", daemon=True)
        self.harness = AppHarness(shop_app, gateway=True, within=30.0)

    def start(self) -> None:
        self._thread.start()
        self.run(self.harness.start)

    def stop(self) -> None:
        try:
            self.run(self.harness.stop)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            self.loop.close()

    def run(self, work: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
        """Run ``work()`` on the shop's loop; its result (or its exception)."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(work(), self.loop)
        return future.result(timeout)

    @property
    def address(self) -> str:
        return self.harness.address


@pytest.fixture(scope="module")
def logged() -> Iterator[Logged]:
    """Records at ERROR or above while the module's tests run (the root logger's)."""
    handler = Logged()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def shop(logged: Logged) -> Iterator[ThreadedShop]:
    """The shop (gateway, outbox, relay, consumers) running for the whole module."""
    running = ThreadedShop()
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def fuzz_examples(pytestconfig: pytest.Config) -> int:
    """``--fuzz-examples``: how many examples each fuzz target runs."""
    return int(pytestconfig.getoption("--fuzz-examples"))
