"""registry (versioned providers, models, routes, prompts), datasets, experiment runs; trace lineage

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("route_version", sa.Integer))
        batch.add_column(sa.Column("model_version", sa.Integer))
        batch.add_column(sa.Column("prompt", sa.String(128)))
        batch.add_column(sa.Column("prompt_version", sa.Integer))
        batch.add_column(sa.Column("tags", JSONType))
    op.create_index("ix_traces_prompt", "traces", ["prompt", "prompt_version", "start_time"])

    op.create_table(
        "registry_entities",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.UniqueConstraint("kind", "name", name="uq_registry_entities_kind_name"),
    )
    op.create_table(
        "registry_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entity_id", sa.Integer, sa.ForeignKey("registry_entities.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("spec", JSONType, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(128)),
        sa.Column("message", sa.Text),
        sa.UniqueConstraint("entity_id", "version", name="uq_registry_versions_entity_version"),
        sa.UniqueConstraint("entity_id", "hash", name="uq_registry_versions_entity_hash"),
    )
    op.create_table(
        "registry_aliases",
        sa.Column("entity_id", sa.Integer, sa.ForeignKey("registry_entities.id"), primary_key=True),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "registry_alias_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("entity_id", sa.Integer, sa.ForeignKey("registry_entities.id"), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("from_version", sa.Integer),
        sa.Column("to_version", sa.Integer, nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("actor", sa.String(128)),
        sa.Column("reason", sa.Text),
        sa.Column("evidence", JSONType),
    )
    op.create_index("ix_registry_alias_events_entity", "registry_alias_events", ["entity_id", "alias"])
    op.create_table(
        "registry_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("revision", sa.Integer, nullable=False),
    )
    op.execute("INSERT INTO registry_state (id, revision) VALUES (1, 0)")

    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("description", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("n_examples", sa.Integer, nullable=False),
        sa.Column("source", JSONType),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(128)),
        sa.Column("message", sa.Text),
        sa.UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_dataset_version"),
        sa.UniqueConstraint("dataset_id", "hash", name="uq_dataset_versions_dataset_hash"),
    )
    op.create_table(
        "dataset_examples",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("input", JSONType, nullable=False),
        sa.Column("expected", JSONType),
        sa.Column("metadata", JSONType),
        sa.Column("tags", JSONType),
        sa.Column("trace_id", sa.String(32)),
    )

    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(256)),
        sa.Column("experiment", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_time", sa.Float, nullable=False),
        sa.Column("end_time", sa.Float),
        sa.Column("params", JSONType),
        sa.Column("tags", JSONType),
        sa.Column("parent_run_id", sa.String(32)),
        sa.Column("created_by", sa.String(128)),
        sa.Column("notes", sa.Text),
    )
    op.create_index("ix_runs_experiment_start", "runs", ["experiment", "start_time"])
    op.create_table(
        "run_metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("timestamp", sa.Float, nullable=False),
    )
    op.create_index("ix_run_metrics_run_key", "run_metrics", ["run_id", "key", "step"])
    op.create_table(
        "run_artifacts",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("path", sa.String(1024), primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "run_links",
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
    )
    op.create_index("ix_run_links_target", "run_links", ["kind", "name", "version"])


def downgrade() -> None:
    for table in (
        "run_links",
        "run_artifacts",
        "run_metrics",
        "runs",
        "dataset_examples",
        "dataset_versions",
        "datasets",
        "registry_state",
        "registry_alias_events",
        "registry_aliases",
        "registry_versions",
        "registry_entities",
    ):
        op.drop_table(table)
    op.drop_index("ix_traces_prompt", "traces")
    with op.batch_alter_table("traces") as batch:
        for column in ("tags", "prompt_version", "prompt", "model_version", "route_version"):
            batch.drop_column(column)
