"""``wirebus.testing``: what users write their tests with.

- conformance suites every port adapter passes (outbox stores, brokers),
- an in-process harness over the in-memory broker and outbox (to come in
  this package's ``harness`` module),
- :func:`wait_until`, the one bounded poll tests wait with.
"""

from __future__ import annotations

from .waiting import wait_until

__all__ = ["wait_until"]
