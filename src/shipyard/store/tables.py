"""Store tables (SQLAlchemy Core). Changes here need a new Alembic migration in ``migrations/``;
``tests/test_store.py`` fails when the migrations and these tables disagree."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData()

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

traces = sa.Table(
    "traces",
    metadata,
    sa.Column("trace_id", sa.String(32), primary_key=True),
    sa.Column("start_time", sa.Float, nullable=False, doc="Unix seconds"),
    sa.Column("end_time", sa.Float, nullable=False),
    sa.Column("source", sa.String(16), nullable=False, doc="gateway | otlp"),
    sa.Column("operation", sa.String(32), nullable=False, doc="chat | text_completion | embeddings"),
    sa.Column("route", sa.String(128)),
    sa.Column("target", sa.String(128)),
    sa.Column("provider", sa.String(128)),
    sa.Column("model", sa.String(256), doc="Model that answered (provider-side name)"),
    sa.Column("status", sa.String(16), nullable=False, doc="ok | error"),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("latency_ms", sa.Float),
    sa.Column("ttft_ms", sa.Float),
    sa.Column("input_tokens", sa.Integer),
    sa.Column("output_tokens", sa.Integer),
    sa.Column("cost_usd", sa.Float),
    sa.Column("stream", sa.Boolean, nullable=False, default=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=1),
    sa.Column("user_id", sa.String(256)),
    sa.Column("input", JSONType),
    sa.Column("output", sa.Text),
    sa.Column("attributes", JSONType),
)
sa.Index("ix_traces_start_time", traces.c.start_time)
sa.Index("ix_traces_route_start", traces.c.route, traces.c.start_time)

# Clustered by (trace_id, span_id): one B-tree, and a trace's spans sit together. Gateway trace ids
# start with a millisecond timestamp, so inserts append instead of landing on random pages.
spans = sa.Table(
    "spans",
    metadata,
    sa.Column("trace_id", sa.String(32), primary_key=True),
    sa.Column("span_id", sa.String(16), primary_key=True),
    sa.Column("parent_id", sa.String(16)),
    sa.Column("name", sa.String(256), nullable=False),
    sa.Column("start_time", sa.Float, nullable=False),
    sa.Column("end_time", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attributes", JSONType),
    sqlite_with_rowid=False,
)
