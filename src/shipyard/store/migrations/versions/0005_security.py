"""security: API keys, the append-only audit log, usage counters for budgets

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("routes", JSONType),
        sa.Column("limits", JSONType),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(256)),
        sa.Column("expires_at", sa.Float),
        sa.Column("revoked_at", sa.Float),
        sa.Column("revoked_by", sa.String(256)),
        sa.Column("last_used_at", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_api_keys_updated", "api_keys", ["updated_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("before", JSONType),
        sa.Column("after", JSONType),
        sa.Column("detail", sa.Text),
        sa.Column("source", sa.String(64)),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_target", "audit_log", ["target"])
    # Append-only, enforced by the database itself: the application has no code path that
    # changes a row, and these make sure nothing that shares its connection string does either.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION shipyard_audit_append_only() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION shipyard_audit_append_only()"
        )
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
            )
    op.create_table(
        "usage_counters",
        sa.Column("subject", sa.String(200), primary_key=True),
        sa.Column("window", sa.String(8), primary_key=True),
        sa.Column("start", sa.Float, primary_key=True),
        sa.Column("usd", sa.Float, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("requests", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS shipyard_audit_append_only()")
    for name in ("usage_counters", "audit_log", "api_keys"):
        op.drop_table(name)
