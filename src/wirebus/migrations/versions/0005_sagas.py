"""wirebus_saga and wirebus_saga_timeout: saga state and its steps' timeouts.

Revision ID: 0005
Revises: 0004

Tables a runtime already created (``create_all`` on a first start) are
adopted as they are, as 0001 does for the outbox.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_UNFINISHED = "status <> 'completed' AND status <> 'compensated' AND status <> 'failed'"


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "wirebus_saga" not in existing:
        _create_saga()
    if "wirebus_saga_timeout" not in existing:
        _create_saga_timeout()


def _create_saga() -> None:
    op.create_table(
        "wirebus_saga",
        sa.Column("saga_id", sa.String(64), primary_key=True),
        sa.Column("saga_type", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.UniqueConstraint("saga_type", "key", name="wirebus_saga_correlation"),
    )
    op.create_index("wirebus_saga_status", "wirebus_saga", ["status", "created_at"])
    op.create_index("wirebus_saga_created", "wirebus_saga", ["created_at"])
    op.create_index(
        "wirebus_saga_unfinished",
        "wirebus_saga",
        ["updated_at"],
        postgresql_where=sa.text(_UNFINISHED),
        sqlite_where=sa.text(_UNFINISHED),
    )


def _create_saga_timeout() -> None:
    op.create_table(
        "wirebus_saga_timeout",
        sa.Column("timeout_id", sa.String(64), primary_key=True),
        sa.Column("saga_id", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("wirebus_saga_timeout_due", "wirebus_saga_timeout", ["due_at"])
    op.create_index("wirebus_saga_timeout_saga", "wirebus_saga_timeout", ["saga_id"])


def downgrade() -> None:
    op.drop_index("wirebus_saga_timeout_saga", table_name="wirebus_saga_timeout")
    op.drop_index("wirebus_saga_timeout_due", table_name="wirebus_saga_timeout")
    op.drop_table("wirebus_saga_timeout")
    op.drop_index("wirebus_saga_unfinished", table_name="wirebus_saga")
    op.drop_index("wirebus_saga_created", table_name="wirebus_saga")
    op.drop_index("wirebus_saga_status", table_name="wirebus_saga")
    op.drop_table("wirebus_saga")
