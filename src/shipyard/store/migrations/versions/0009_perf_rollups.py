"""perf_rollups: where time and money go, per route, model, API key and prompt version

Per-minute and per-hour sums of each latency component of gateway traces (queue, guards, retries,
upstream time to first token, generation, gateway overhead), of cost and tokens, and of the
response cache's lookups, hits and savings (``store/performance.py``). Written with each trace, so
`shipyard traces stats`, `GET /api/performance` and the dashboard's Performance page never scan
spans. Traces stored before this revision are not in it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "perf_rollups",
        sa.Column("period", sa.Integer, primary_key=True),
        sa.Column("bucket", sa.Integer, primary_key=True),
        sa.Column("route", sa.String(128), primary_key=True),
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("prompt", sa.String(128), primary_key=True),
        sa.Column("prompt_version", sa.Integer, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("streams", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("queue_ms", sa.Float, nullable=False),
        sa.Column("guards_ms", sa.Float, nullable=False),
        sa.Column("retries_ms", sa.Float, nullable=False),
        sa.Column("ttft_ms", sa.Float, nullable=False),
        sa.Column("generation_ms", sa.Float, nullable=False),
        sa.Column("overhead_ms", sa.Float, nullable=False),
        sa.Column("cache_lookups", sa.BigInteger, nullable=False),
        sa.Column("cache_hits", sa.BigInteger, nullable=False),
        sa.Column("cache_saved_usd", sa.Float, nullable=False),
        sa.Column("cache_saved_tokens", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("perf_rollups")
