"""audit log: a keyed hash chain (HMAC-SHA256) whose entries name the key that made their hash

Entries written before this revision keep their plain SHA-256 hash and a null `hash_key_id`; they
still verify, as the unkeyed prefix of the chain (docs/access.md, "How the log is protected").
Adding a nullable column changes no row, so the append-only triggers are not involved.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("hash_key_id", sa.String(16)))


def downgrade() -> None:
    op.drop_column("audit_log", "hash_key_id")
