"""Outbox: inserts notify the relays (PostgreSQL trigger); the waiting index holds failed rows only.

Revision ID: 0003
Revises: 0002

Frozen DDL: the predicate and the trigger are written out as they were when
this revision was made (commit c119f1d), not imported from ``wirebus.db``, so
a later change to the live tables cannot change what this revision does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_WAITING_ROWS = "status = 'pending' AND last_error IS NOT NULL"
_NOTIFY_FUNCTION = (
    "CREATE OR REPLACE FUNCTION wirebus_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN PERFORM pg_notify('wirebus_outbox', ''); RETURN NULL; END $$"
)
_NOTIFY_TRIGGER = (
    "CREATE TRIGGER wirebus_outbox_notify AFTER INSERT ON wirebus_outbox"
    " FOR EACH STATEMENT EXECUTE FUNCTION wirebus_outbox_notify()"
)


def upgrade() -> None:
    # Rebuilt with the narrower predicate (rows that ever failed), whatever
    # made it before (0002, or a runtime's create_all).
    op.drop_index("wirebus_outbox_waiting", table_name="wirebus_outbox", if_exists=True)
    op.create_index(
        "wirebus_outbox_waiting",
        "wirebus_outbox",
        ["available_at"],
        postgresql_where=sa.text(_WAITING_ROWS),
        sqlite_where=sa.text(_WAITING_ROWS),
    )
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has one relay, woken in its own process: no NOTIFY
    op.execute("DROP TRIGGER IF EXISTS wirebus_outbox_notify ON wirebus_outbox")
    op.execute(_NOTIFY_FUNCTION)
    op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS wirebus_outbox_notify ON wirebus_outbox")
        op.execute("DROP FUNCTION IF EXISTS wirebus_outbox_notify()")
    op.drop_index("wirebus_outbox_waiting", table_name="wirebus_outbox")
    op.create_index(
        "wirebus_outbox_waiting",
        "wirebus_outbox",
        ["available_at"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
