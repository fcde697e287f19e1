"""A consumer app for the cluster fault test: records every ``Placed`` it handles in a table.

It consumes the events of :mod:`tests.faults.apps.sequencer` (same topic,
``SEQUENCER_TOPIC``) and inserts one ``handled_events`` row per event it
handles, in the handler's transaction, which also writes the inbox row. The
row's ``id`` comes from a sequence, so ordering the rows by ``id`` is the
order in which the group handled the events. There is deliberately no
unique constraint on (aggregate, seq): a duplicate the inbox let through
must show up as a second row, not as a failing handler.

Configured by the environment of the test that starts it (read at import,
fine for a test fixture app):

- ``SEQUENCER_TOPIC``: the topic of the events (fresh per test);
- ``HANDLED_CONSUMER``: a name for this process, stored in each row;
- ``HANDLED_ATTEMPTS``: how many times the handler is tried before the
  record is dead-lettered (default 60: with a backoff capped at 1 s, the
  handler rides out a database outage of half a minute or so).
"""

from __future__ import annotations

import datetime as dt
import os

from sqlalchemy import BigInteger, Column, DateTime, MetaData, String, Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from tests.faults.apps.sequencer import Placed
from wirebus import App, Router
from wirebus.retry import Retry

CONSUMER = os.environ.get("HANDLED_CONSUMER", "consumer")
ATTEMPTS = int(os.environ.get("HANDLED_ATTEMPTS", "60"))

metadata = MetaData()

handled_events = Table(
    "handled_events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("aggregate_id", String(255), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("consumer", String(64), nullable=False),
    Column("handled_at", DateTime(timezone=True), nullable=False),
)

router = Router("handled")


@router.handler(retry=Retry(attempts=ATTEMPTS, initial_delay=0.2, max_delay=1.0))
async def record(event: Placed, session: AsyncSession) -> None:
    await session.execute(
        insert(handled_events).values(
            aggregate_id=event.order_id,
            seq=event.total_cents,
            consumer=CONSUMER,
            handled_at=dt.datetime.now(dt.UTC),
        )
    )


app = App(name="handled", routers=[router], metadata=metadata)
