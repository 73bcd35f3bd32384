"""monitoring: trace rollups, feedback, trace scores, drift reports, alert events

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
HIST_BUCKETS = 41  # tables.HIST_BUCKETS at the time of this migration


def upgrade() -> None:
    op.create_table(
        "trace_rollups",
        sa.Column("period", sa.Integer, primary_key=True),
        sa.Column("bucket", sa.Integer, primary_key=True),
        sa.Column("source", sa.String(16), primary_key=True),
        sa.Column("route", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("latency_sum", sa.Float, nullable=False),
        sa.Column("ttft_count", sa.Integer, nullable=False),
        sa.Column("ttft_sum", sa.Float, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        *(sa.Column(f"lat_{i}", sa.Integer, nullable=False) for i in range(HIST_BUCKETS)),
        *(sa.Column(f"ttft_{i}", sa.Integer, nullable=False) for i in range(HIST_BUCKETS)),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("user_id", sa.String(256)),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_feedback_trace", "feedback", ["trace_id"])
    op.create_index("ix_feedback_created", "feedback", ["created_at"])
    op.create_table(
        "trace_scores",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("score", sa.Float),
        sa.Column("passed", sa.Boolean),
        sa.Column("detail", JSONType),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("route", sa.String(128)),
        sa.Column("trace_time", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_trace_scores_trace", "trace_scores", ["trace_id"])
    op.create_index("ix_trace_scores_name_time", "trace_scores", ["name", "trace_time"])
    op.create_table(
        "drift_reports",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("reference", JSONType, nullable=False),
        sa.Column("current", JSONType, nullable=False),
        sa.Column("n_reference", sa.Integer, nullable=False),
        sa.Column("n_current", sa.Integer, nullable=False),
        sa.Column("drifted", sa.Boolean, nullable=False),
        sa.Column("results", JSONType, nullable=False),
    )
    op.create_index("ix_drift_reports_route_created", "drift_reports", ["route", "created_at"])
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("labels", JSONType),
        sa.Column("value", sa.Float),
        sa.Column("threshold", sa.Float),
        sa.Column("message", sa.Text),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("deliveries", JSONType),
    )
    op.create_index("ix_alert_events_fingerprint", "alert_events", ["fingerprint", "started_at"])
    op.create_index("ix_alert_events_started", "alert_events", ["started_at"])


def downgrade() -> None:
    for name in ("alert_events", "drift_reports", "trace_scores", "feedback", "trace_rollups"):
        op.drop_table(name)
