"""``Sagas``: what a handler injects to start a saga in its own transaction.

Example::

    @router.handler
    async def place_order(cmd: PlaceOrder, sagas: Sagas, ctx: Context) -> OrderRef:
        ...
        await sagas.start(checkout, Checkout(order_id=order_id, total_cents=total))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..context import current_context
from ..errors import ConfigurationError, LifecycleError
from .definition import Saga

if TYPE_CHECKING:
    from .engine import SagaEngine

__all__ = ["Sagas"]


class Sagas:
    """Injectable: start a saga from a handler, in that handler's transaction.

    Example::

        @router.handler
        async def place_order(cmd: PlaceOrder, sagas: Sagas, ctx: Context) -> OrderRef:
            ...
            await sagas.start(checkout, Checkout(order_id=order_id, total_cents=total))
    """

    def __init__(self, engine: SagaEngine) -> None:
        self.engine = engine

    async def start(self, saga: Saga[Any], data: Any, *, key: str | None = None) -> str | None:
        """Start ``saga`` with ``data``; its id, or ``None`` if one with this key exists."""
        if saga.name not in self.engine.sagas:
            raise ConfigurationError(f"saga {saga.name!r} is not in App(sagas=[...])")
        ctx = current_context()
        if ctx is None:
            raise LifecycleError("Sagas.start runs only inside a handler")
        state = await self.engine.start(saga, ctx, data=data, key=key)
        return None if state is None else state.saga_id
