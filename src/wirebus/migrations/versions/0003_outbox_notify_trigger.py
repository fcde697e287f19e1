"""PostgreSQL: inserting outbox rows notifies the relays (a statement trigger).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

from wirebus.db import OUTBOX_NOTIFY_DDL

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has one relay in the same process: no NOTIFY
    op.execute("DROP TRIGGER IF EXISTS wirebus_outbox_notify ON wirebus_outbox")
    for statement in OUTBOX_NOTIFY_DDL:  # a runtime's create_all may have made them already
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS wirebus_outbox_notify ON wirebus_outbox")
    op.execute("DROP FUNCTION IF EXISTS wirebus_outbox_notify()")
