"""ended dashboard sessions: a logged-out session cookie stops working everywhere

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ended_sessions",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=False),
    )
    op.create_index("ix_ended_sessions_ended", "ended_sessions", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_ended_sessions_ended", "ended_sessions")
    op.drop_table("ended_sessions")
