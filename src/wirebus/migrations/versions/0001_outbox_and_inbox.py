"""wirebus_outbox and wirebus_inbox.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Tables a runtime already created (create_all on first start) are adopted.
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "wirebus_outbox" not in existing:
        _create_outbox()
    if "wirebus_inbox" not in existing:
        _create_inbox()


def _create_outbox() -> None:
    op.create_table(
        "wirebus_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("event_id", sa.String(255), nullable=False, unique=True),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    )  # fmt: skip
    op.create_index(
        "wirebus_outbox_pending",
        "wirebus_outbox",
        ["id"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index("wirebus_outbox_key", "wirebus_outbox", ["key", "status"])


def _create_inbox() -> None:
    op.create_table(
        "wirebus_inbox",
        sa.Column("consumer_group", sa.String(255), primary_key=True),
        sa.Column("event_id", sa.String(255), primary_key=True),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("wirebus_inbox")
    op.drop_index("wirebus_outbox_key", table_name="wirebus_outbox")
    op.drop_index("wirebus_outbox_pending", table_name="wirebus_outbox")
    op.drop_table("wirebus_outbox")
