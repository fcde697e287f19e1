"""Outbox: inserts notify the relays (PostgreSQL trigger); the waiting index holds failed rows only.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from wirebus.db import OUTBOX_NOTIFY_DDL, WAITING_ROWS

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rebuilt with the narrower predicate (rows that ever failed), whatever
    # made it before (0002, or a runtime's create_all).
    op.drop_index("wirebus_outbox_waiting", table_name="wirebus_outbox", if_exists=True)
    op.create_index(
        "wirebus_outbox_waiting",
        "wirebus_outbox",
        ["available_at"],
        postgresql_where=WAITING_ROWS,
        sqlite_where=WAITING_ROWS,
    )
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has one relay, woken in its own process: no NOTIFY
    op.execute("DROP TRIGGER IF EXISTS wirebus_outbox_notify ON wirebus_outbox")
    for statement in OUTBOX_NOTIFY_DDL:
        op.execute(statement)


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
