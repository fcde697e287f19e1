"""``EventSink``: the one place that decides where an emitted event goes.

Request, stream and event handlers all emit through it:

- an event that *travels* (registered with the app: it has a protobuf
  contract, a topic and a key) goes to the outbox, inside the handler's
  transaction, when the pipeline has a unit of work; otherwise to the
  publisher; with neither (a bare ``app.mediator()`` in a unit test) it is
  handed to the app's own handlers in-process, the only place it can go;
- any other event is handed to the app's own handlers in-process, after the
  handler's work succeeded (and committed).

A type bound to a protobuf class that the app did not register is an error
when there is an outbox or a publisher for it (never a silent in-process
delivery): add it to ``App(events=[...])``.

Example::

    sink = EventSink(app.registry(), publisher=kafka)
    travelling, local = sink.split(ctx.take_events())
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from .codec import declared_travelling
from .errors import UnregisteredEvent

if TYPE_CHECKING:
    from .broker import EventPublisher
    from .codec import EventRegistry

__all__ = ["EventSink"]

log = logging.getLogger(__name__)

LocalPublish = Callable[[Any], Awaitable[None]]


class EventSink:
    """Routes emitted events: outbox or publisher for travelling ones, in-process for the rest."""

    def __init__(self, registry: EventRegistry, *, publisher: EventPublisher | None = None) -> None:
        self.registry = registry
        self.publisher = publisher
        self._local: LocalPublish | None = None
        self._travels: dict[type, bool] = {}

    def bind(self, local: LocalPublish) -> None:
        """Where in-process events go (the mediator's ``publish``); set once."""
        self._local = local

    def travels(self, event_type: type, *, strict: bool = True) -> bool:
        """Whether events of ``event_type`` leave the process (decided once per type).

        A type bound to a protobuf class that the app did not register
        raises :class:`~wirebus.errors.UnregisteredEvent` when ``strict``
        (there is an outbox or a publisher it should go to); otherwise
        (a bare mediator) it stays in-process, the only place it can go.
        """
        known = self._travels.get(event_type)
        if known is None:
            known = self.registry.by_type(event_type) is not None
            if not known and declared_travelling(event_type):
                if strict:
                    raise UnregisteredEvent(
                        f"{event_type.__qualname__} is bound to a protobuf class, so it"
                        " travels, but the app does not know it: add it to App(events=[...])"
                    )
                return False
            self._travels[event_type] = known
        return known

    def split(self, events: Iterable[Any], *, strict: bool = True) -> tuple[list[Any], list[Any]]:
        """``(travelling, in_process)`` of ``events``, order kept within each."""
        travelling: list[Any] = []
        local: list[Any] = []
        travels = self._travels
        for event in events:
            tp = type(event)
            known = travels.get(tp)
            if known is None:
                known = self.travels(tp, strict=strict)
            (travelling if known else local).append(event)
        return travelling, local

    async def deliver(self, events: Sequence[Any]) -> None:
        """Hand events on after the work that emitted them succeeded.

        Travelling events go to the publisher (a failure raises: they were
        not delivered); the rest, or all of them when there is no
        publisher, to the in-process handlers, whose failures are logged.
        """
        if not events:
            return
        local: Sequence[Any] = events
        if self.publisher is not None:
            travelling, local = self.split(events)
            if travelling:
                await self.publisher.publish_many(travelling)
        publish = self._local
        if publish is None:
            return
        for event in local:
            try:
                await publish(event)
            except ExceptionGroup as group:
                log.error(
                    "event handlers failed for %s after the work that emitted it succeeded",
                    type(event).__qualname__,
                    exc_info=group,
                )
