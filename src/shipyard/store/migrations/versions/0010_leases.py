"""leases: background jobs that must run once across gateway workers

One row per job family (``monitoring``: alert evaluation and scheduled drift checks). A worker
holds a job while its lease has not expired and renews it well before; another worker takes it
over once it expires (its holder died or hung). Each takeover increments ``token``, the fencing
token a holder checks before acting, so a holder that lost its lease stops.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("token", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
