"""The README's Quick start runs as written: a drifting README fails here.

Its Python block is saved under the module name its ``wirebus serve`` line
names, loaded the way the CLI loads it, checked, and sent a command.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from shop.orders.v1 import orders_pb2

from wirebus.brokers.memory import InMemoryBroker
from wirebus.cli import load_app

README = Path(__file__).resolve().parents[2] / "README.md"
SERVE = re.compile(r"^# \$ wirebus serve (\w+):(\w+)", re.MULTILINE)


def quick_start_blocks() -> list[str]:
    """The ```python blocks between ``## Quick start`` and the next section."""
    section = README.read_text(encoding="utf-8").split("\n## Quick start\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


@pytest.fixture
def quick_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The Quick start saved as the module its serve line names, imported by ``load_app``."""
    source = "\n".join(quick_start_blocks())
    serve = SERVE.search(source)
    assert serve is not None, "the Quick start shows how to serve its app"
    module, attr = serve.groups()
    (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = load_app(f"{module}:{attr}", str(tmp_path))  # what `wirebus serve` runs
    try:
        assert getattr(sys.modules[module], attr) is app
        yield sys.modules[module]
    finally:
        sys.modules.pop(module, None)


def test_the_quick_start_is_one_python_block_a_user_can_save_as_a_file() -> None:
    assert len(quick_start_blocks()) == 1


def test_the_quick_start_app_is_valid_wiring_with_place_order_bound(
    quick_start: ModuleType,
) -> None:
    routes = {route.path: route.spec for route in quick_start.app.check()}

    place_order = routes["/shop.orders.v1.OrderService/PlaceOrder"]
    assert place_order is not None
    assert place_order.name.endswith("place_order")


async def test_the_quick_start_places_an_order_and_publishes_order_placed(
    quick_start: ModuleType,
) -> None:
    qs = quick_start
    broker = InMemoryBroker()
    publisher = broker.publisher(qs.app.registry(), source="shop")
    items = (qs.LineItem(sku="A", quantity=2, price_cents=150),)

    async with qs.app.mediator(publisher=publisher) as mediator:
        ref = await mediator.send(qs.PlaceOrder(customer_id="c1", items=items))

    assert isinstance(ref, qs.OrderRef)
    [record] = broker.records("shop.orders.v1")
    assert record.header("ce_type") == b"shop.orders.v1.OrderPlaced"
    assert record.key == ref.order_id.encode()
    placed = orders_pb2.OrderPlaced.FromString(record.value or b"")
    assert (placed.order_id, placed.total_cents) == (ref.order_id, 300)
