"""``wait_until``: the one bounded wait of wirebus' tests (never sleep-then-assert)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["wait_until"]

T = TypeVar("T")


async def wait_until(
    condition: Callable[[], T | Awaitable[T]],
    *,
    within: float = 10.0,
    interval: float = 0.01,
    message: str | Callable[[], str] | None = None,
) -> T:
    """Poll ``condition`` until it returns something truthy; return that value.

    ``condition`` may be sync or async. Raises ``TimeoutError`` (with
    ``message``, or the condition's name) when ``within`` seconds pass first.

    Example::

        await wait_until(lambda: len(broker.records("shop.orders.v1")) == 3, within=5)
    """
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            name = getattr(condition, "__qualname__", repr(condition))
            raise TimeoutError(text or f"{name} did not hold within {within}s")
        await asyncio.sleep(interval)
