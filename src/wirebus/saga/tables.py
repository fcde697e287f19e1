"""The saga tables and how a :class:`SagaState` or :class:`SagaTimeout` maps onto their rows.

The tables are declared in :mod:`wirebus.db`, on wirebus's own metadata (so
``create_all`` and the Alembic revisions both make them), and re-exported
here:

``wirebus_saga``
    ``saga_id`` (primary key), ``saga_type``, ``key`` -- unique together
    (``wirebus_saga_correlation``) --, ``status``, ``step``, ``data`` (JSON),
    ``attempts``, ``version``, ``created_at``, ``updated_at``, ``history``
    (JSON list of :meth:`StepRecord.to_json` objects), ``error``. Indexed by
    (status, created_at) and created_at for listing, and by updated_at over
    the unfinished sagas only (``wirebus_saga_unfinished``) for recovery.
``wirebus_saga_timeout``
    ``timeout_id`` (primary key), ``saga_id``, ``step``, ``version``,
    ``due_at`` (indexed, as is ``saga_id``).

Times are stored in UTC and come back timezone-aware on both databases
(SQLite keeps no offset: what it returns is read as UTC).

Example::

    row = state_row(state)              # column name -> value, for an INSERT
    again = state_of(tuple(row[c.name] for c in saga_table.columns))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from ..db import UNFINISHED_SAGAS, saga_table, saga_timeout_table
from .state import SagaState, SagaStatus, SagaTimeout, StepRecord

__all__ = [
    "UNFINISHED_SAGAS",
    "changed_columns",
    "saga_table",
    "saga_timeout_table",
    "state_of",
    "state_row",
    "timeout_of",
    "timeout_row",
    "utc",
]


def utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; a naive value (what SQLite returns) is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def state_row(state: SagaState) -> dict[str, Any]:
    """Every column of ``state``'s ``wirebus_saga`` row."""
    return {
        "saga_id": state.saga_id,
        "saga_type": state.saga_type,
        "key": state.key,
        **changed_columns(state),
        "version": state.version,
        "created_at": utc(state.created_at),
    }


def changed_columns(state: SagaState) -> dict[str, Any]:
    """The columns an update writes (the correlation and creation time never change)."""
    return {
        "status": state.status.value,
        "step": state.step,
        "data": state.data,
        "attempts": state.attempts,
        "updated_at": utc(state.updated_at),
        "history": [record.to_json() for record in state.history],
        "error": state.error,
    }


def state_of(row: Sequence[Any]) -> SagaState:
    """The state of a ``wirebus_saga`` row selected with every column, in table order."""
    (saga_id, saga_type, key, status, step, data, attempts, version) = row[:8]
    created_at, updated_at, history, error = row[8:]
    return SagaState(
        saga_id=saga_id,
        saga_type=saga_type,
        key=key,
        status=SagaStatus(status),
        step=step,
        data=data,
        attempts=attempts,
        version=version,
        created_at=utc(created_at),
        updated_at=utc(updated_at),
        history=[StepRecord.from_json(item) for item in _records(history)],
        error=error,
    )


def _records(history: Any) -> list[Mapping[str, Any]]:
    return list(history or ())


def timeout_row(due: SagaTimeout) -> dict[str, Any]:
    """The ``wirebus_saga_timeout`` row of ``due``."""
    return {
        "timeout_id": due.timeout_id,
        "saga_id": due.saga_id,
        "step": due.step,
        "version": due.version,
        "due_at": utc(due.due_at),
    }


def timeout_of(row: Sequence[Any]) -> SagaTimeout:
    """The timeout of a ``wirebus_saga_timeout`` row selected with every column, in table order."""
    timeout_id, saga_id, step, version, due_at = row
    return SagaTimeout(
        timeout_id=timeout_id, saga_id=saga_id, step=step, version=version, due_at=utc(due_at)
    )
