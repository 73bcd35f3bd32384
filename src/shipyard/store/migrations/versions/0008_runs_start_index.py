"""runs: an index on (start_time, run_id), the run list's order, for keyset pages

`GET /api/runs` pages newest first by start time and run id; without this index every page sorted
the whole table (only `ix_runs_experiment_start` existed, for lists of one experiment).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_start", "runs", ["start_time", "run_id"])


def downgrade() -> None:
    op.drop_index("ix_runs_start", "runs")
