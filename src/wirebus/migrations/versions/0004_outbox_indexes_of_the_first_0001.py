"""Outbox: the pending-id and key indexes, on databases made before 0001 had them.

Revision ID: 0004
Revises: 0003

Revision 0001 was edited after it was first committed: 4e409a3 made an index
``wirebus_outbox_claim`` on (status, shard, id), 7d2b5e9 added
``wirebus_outbox_key`` and a6779ac replaced the claim index by the partial
``wirebus_outbox_pending``. A database migrated by an earlier 0001, or whose
tables a runtime's ``create_all`` made before a6779ac (0001 adopts existing
tables as they are), still has the old indexes; this revision gives it the
ones 0001 makes today, and does nothing on any other database.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("wirebus_outbox")}
    if "wirebus_outbox_claim" in existing:
        op.drop_index("wirebus_outbox_claim", table_name="wirebus_outbox")
    if "wirebus_outbox_pending" not in existing:
        op.create_index(
            "wirebus_outbox_pending",
            "wirebus_outbox",
            ["id"],
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )
    if "wirebus_outbox_key" not in existing:
        op.create_index("wirebus_outbox_key", "wirebus_outbox", ["key", "status"])


def downgrade() -> None:
    pass  # the indexes are 0001's today: its downgrade drops them
