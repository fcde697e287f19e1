"""Partial index on the available_at of pending outbox rows (the relay's backoff check).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A runtime that created the tables itself (create_all) made the index too.
    existing = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("wirebus_outbox")}
    if "wirebus_outbox_waiting" not in existing:
        op.create_index(
            "wirebus_outbox_waiting",
            "wirebus_outbox",
            ["available_at"],
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )


def downgrade() -> None:
    op.drop_index("wirebus_outbox_waiting", table_name="wirebus_outbox")
