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
    # Lineage: the exact registry versions that served the request (migration 0002).
    sa.Column("route_version", sa.Integer),
    sa.Column("model_version", sa.Integer),
    sa.Column("prompt", sa.String(128)),
    sa.Column("prompt_version", sa.Integer),
    sa.Column("tags", JSONType),
)
sa.Index("ix_traces_start_time", traces.c.start_time)
sa.Index("ix_traces_route_start", traces.c.route, traces.c.start_time)
sa.Index("ix_traces_prompt", traces.c.prompt, traces.c.prompt_version, traces.c.start_time)

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


# -- registry: versioned providers, models, routes and prompts -------------------------------------
registry_entities = sa.Table(
    "registry_entities",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False, doc="provider | model | route | prompt"),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("kind", "name", name="uq_registry_entities_kind_name"),
)

registry_versions = sa.Table(
    "registry_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("entity_id", sa.Integer, sa.ForeignKey("registry_entities.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False, doc="1, 2, … per entity"),
    sa.Column("hash", sa.String(64), nullable=False, doc="sha256 of the canonical spec"),
    sa.Column("spec", JSONType, nullable=False, doc="as written: ${ENV} references unresolved"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(128)),
    sa.Column("message", sa.Text),
    sa.UniqueConstraint("entity_id", "version", name="uq_registry_versions_entity_version"),
    sa.UniqueConstraint("entity_id", "hash", name="uq_registry_versions_entity_hash"),
)

registry_aliases = sa.Table(
    "registry_aliases",
    metadata,
    sa.Column("entity_id", sa.Integer, sa.ForeignKey("registry_entities.id"), primary_key=True),
    sa.Column("alias", sa.String(64), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

registry_alias_events = sa.Table(
    "registry_alias_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("entity_id", sa.Integer, sa.ForeignKey("registry_entities.id"), nullable=False),
    sa.Column("alias", sa.String(64), nullable=False),
    sa.Column("from_version", sa.Integer),
    sa.Column("to_version", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(128)),
    sa.Column("reason", sa.Text),
    sa.Column("evidence", JSONType, doc="e.g. the eval run that gated a promotion"),
)
sa.Index("ix_registry_alias_events_entity", registry_alias_events.c.entity_id, registry_alias_events.c.alias)

# One row; `revision` goes up with every registry change so running gateways can notice cheaply.
registry_state = sa.Table(
    "registry_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False),
)

# -- datasets ---------------------------------------------------------------------------------------
datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("description", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
)

dataset_versions = sa.Table(
    "dataset_versions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, doc="sha256 over the examples in order"),
    sa.Column("n_examples", sa.Integer, nullable=False),
    sa.Column("source", JSONType, doc="where the examples came from: file, traces + filters, …"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(128)),
    sa.Column("message", sa.Text),
    sa.UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_dataset_version"),
    sa.UniqueConstraint("dataset_id", "hash", name="uq_dataset_versions_dataset_hash"),
)

dataset_examples = sa.Table(
    "dataset_examples",
    metadata,
    sa.Column("version_id", sa.Integer, sa.ForeignKey("dataset_versions.id"), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True),
    sa.Column("input", JSONType, nullable=False, doc="variables (object) or messages (array)"),
    sa.Column("expected", JSONType),
    sa.Column("metadata", JSONType),
    sa.Column("tags", JSONType),
    sa.Column("trace_id", sa.String(32), doc="the trace it was built from, if any"),
)

# -- experiment runs --------------------------------------------------------------------------------
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(256)),
    sa.Column("experiment", sa.String(128), nullable=False, doc="groups runs; default `default`"),
    sa.Column("status", sa.String(16), nullable=False, doc="running | finished | failed | killed"),
    sa.Column("start_time", sa.Float, nullable=False),
    sa.Column("end_time", sa.Float),
    sa.Column("params", JSONType),
    sa.Column("tags", JSONType),
    sa.Column("parent_run_id", sa.String(32)),
    sa.Column("created_by", sa.String(128)),
    sa.Column("notes", sa.Text),
)
sa.Index("ix_runs_experiment_start", runs.c.experiment, runs.c.start_time)
# The run list's order (newest first) and its keyset pages.
sa.Index("ix_runs_start", runs.c.start_time, runs.c.run_id)

run_metrics = sa.Table(
    "run_metrics",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("key", sa.String(256), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("step", sa.Integer, nullable=False, doc="0 for a scalar; 0, 1, 2… for a series"),
    sa.Column("timestamp", sa.Float, nullable=False),
)
sa.Index("ix_run_metrics_run_key", run_metrics.c.run_id, run_metrics.c.key, run_metrics.c.step)

run_artifacts = sa.Table(
    "run_artifacts",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), primary_key=True),
    sa.Column("path", sa.String(1024), primary_key=True, doc="relative to the run's artifact directory"),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Lineage: what a run used — a dataset version, prompt/model/route versions, its parent run.
run_links = sa.Table(
    "run_links",
    metadata,
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.run_id"), primary_key=True),
    sa.Column(
        "kind", sa.String(16), primary_key=True, doc="dataset | prompt | model | route | provider | run"
    ),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, doc="0 when the link is to a run"),
)
sa.Index("ix_run_links_target", run_links.c.kind, run_links.c.name, run_links.c.version)

# -- evals ------------------------------------------------------------------------------------------
# What a target answered for an input, keyed by (target fingerprint, input, params, repeat): a
# re-run or re-score of a suite does not call the model again unless asked (migration 0003).
eval_cache = sa.Table(
    "eval_cache",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("observation", JSONType, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# -- monitoring (migration 0004) --------------------------------------------------------------------
# Latency histograms in the rollups use fixed log-spaced bucket bounds (ms): 2**(i/2) for i in 0..39,
# i.e. 1 ms to ~741 s in steps of √2, plus one overflow bucket. Fixed columns (not a JSON array) so
# that concurrent writers can add to them with one atomic UPSERT on SQLite and Postgres alike.
HIST_BOUNDS_MS: tuple[float, ...] = tuple(2 ** (i / 2) for i in range(40))
HIST_BUCKETS = len(HIST_BOUNDS_MS) + 1
ROLLUP_PERIODS = (60, 3600)  # one-minute and one-hour rollups

trace_rollups = sa.Table(
    "trace_rollups",
    metadata,
    sa.Column("period", sa.Integer, primary_key=True, doc="bucket width in seconds: 60 or 3600"),
    sa.Column("bucket", sa.Integer, primary_key=True, doc="unix seconds at the bucket's start"),
    sa.Column("source", sa.String(16), primary_key=True),
    sa.Column("route", sa.String(128), primary_key=True, doc="'' when the trace had none"),
    sa.Column("model", sa.String(256), primary_key=True, doc="'' when the trace had none"),
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

# Where time and money go (store/performance.py): per minute and per hour, per route, model, API key
# and prompt version, the sums of each latency component (from the spans), of cost and tokens, and
# of the response cache's lookups, hits and savings. Gateway traces only; written with the trace.
perf_rollups = sa.Table(
    "perf_rollups",
    metadata,
    sa.Column("period", sa.Integer, primary_key=True, doc="bucket width in seconds: 60 or 3600"),
    sa.Column("bucket", sa.Integer, primary_key=True, doc="unix seconds at the bucket's start"),
    sa.Column("route", sa.String(128), primary_key=True, doc="'' when the trace had none"),
    sa.Column("model", sa.String(256), primary_key=True, doc="'' when no model answered"),
    sa.Column("key_id", sa.String(32), primary_key=True, doc="the API key's id; '' for in-process callers"),
    sa.Column("prompt", sa.String(128), primary_key=True, doc="'' when the route has no prompt"),
    sa.Column("prompt_version", sa.Integer, primary_key=True, doc="0 when the route has no prompt"),
    sa.Column("requests", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("streams", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", sa.Float, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False, doc="sum of root span durations"),
    sa.Column("queue_ms", sa.Float, nullable=False),
    sa.Column("guards_ms", sa.Float, nullable=False),
    sa.Column("retries_ms", sa.Float, nullable=False),
    sa.Column("ttft_ms", sa.Float, nullable=False, doc="answering attempt's start to its first token"),
    sa.Column("generation_ms", sa.Float, nullable=False),
    sa.Column("overhead_ms", sa.Float, nullable=False),
    sa.Column("cache_lookups", sa.BigInteger, nullable=False),
    sa.Column("cache_hits", sa.BigInteger, nullable=False),
    sa.Column("cache_saved_usd", sa.Float, nullable=False),
    sa.Column("cache_saved_tokens", sa.BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# User feedback on a trace: thumbs (score 1 / 0) or a number, with an optional comment.
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trace_id", sa.String(32), nullable=False),
    sa.Column("name", sa.String(64), nullable=False, doc="what was rated; default `user`"),
    sa.Column("kind", sa.String(16), nullable=False, doc="thumbs | numeric"),
    sa.Column("score", sa.Float, nullable=False, doc="thumbs: 1 up, 0 down"),
    sa.Column("comment", sa.Text),
    sa.Column("user_id", sa.String(256)),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Index("ix_feedback_trace", feedback.c.trace_id)
sa.Index("ix_feedback_created", feedback.c.created_at)

# Scores attached to traces (online evals sample live traffic and score it in the background).
trace_scores = sa.Table(
    "trace_scores",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("trace_id", sa.String(32), nullable=False),
    sa.Column("name", sa.String(128), nullable=False, doc="the scorer's name"),
    sa.Column("score", sa.Float),
    sa.Column("passed", sa.Boolean),
    sa.Column("detail", JSONType),
    sa.Column("source", sa.String(16), nullable=False, doc="online | manual"),
    sa.Column("route", sa.String(128)),
    sa.Column("trace_time", sa.Float, nullable=False, doc="the trace's start time, for charts"),
    sa.Column("created_at", sa.Float, nullable=False),
)
sa.Index("ix_trace_scores_trace", trace_scores.c.trace_id)
sa.Index("ix_trace_scores_name_time", trace_scores.c.name, trace_scores.c.trace_time)

drift_reports = sa.Table(
    "drift_reports",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("route", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("reference", JSONType, nullable=False, doc="how the reference sample was chosen"),
    sa.Column("current", JSONType, nullable=False, doc="how the current sample was chosen"),
    sa.Column("n_reference", sa.Integer, nullable=False),
    sa.Column("n_current", sa.Integer, nullable=False),
    sa.Column("drifted", sa.Boolean, nullable=False),
    sa.Column("results", JSONType, nullable=False, doc="every test's statistic and p-value, topics"),
)
sa.Index("ix_drift_reports_route_created", drift_reports.c.route, drift_reports.c.created_at)

# Alert state changes (append-only): one row per firing episode, updated when it resolves.
alert_events = sa.Table(
    "alert_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule", sa.String(128), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False, doc="rule + labels: deduplicates"),
    sa.Column("state", sa.String(16), nullable=False, doc="firing | resolved"),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("labels", JSONType),
    sa.Column("value", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("message", sa.Text),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("resolved_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("deliveries", JSONType, doc="per channel: ok or the error"),
)
sa.Index("ix_alert_events_fingerprint", alert_events.c.fingerprint, alert_events.c.started_at)
sa.Index("ix_alert_events_started", alert_events.c.started_at)

# -- security -------------------------------------------------------------------------------------

# API keys: only the SHA-256 of a key is kept, with its first characters to tell keys apart.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("routes", JSONType, doc="route names the key may call; null: every route"),
    sa.Column("limits", JSONType, doc="LimitsConfig: requests/tokens per minute, USD per day/month"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(256)),
    sa.Column("expires_at", sa.Float),
    sa.Column("revoked_at", sa.Float),
    sa.Column("revoked_by", sa.String(256)),
    sa.Column("last_used_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False, doc="running gateways reload keys when it moves"),
)
sa.Index("ix_api_keys_updated", api_keys.c.updated_at)

# Every admin change, append-only (triggers refuse UPDATE and DELETE). Each row's hash covers its
# content and the previous row's hash, so `shipyard audit verify` detects edits made around them.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("role", sa.String(16), doc="the actor's role; null for the command line"),
    sa.Column("action", sa.String(64), nullable=False, doc="e.g. key.create, alias.set, route.put"),
    sa.Column("target", sa.String(256), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False, doc="ok | denied"),
    sa.Column("before", JSONType),
    sa.Column("after", JSONType),
    sa.Column("detail", sa.Text),
    sa.Column("source", sa.String(64), doc="api (with the client address) or cli"),
    sa.Column(
        "hash_key_id",
        sa.String(16),
        doc="id of the audit key whose HMAC is `hash`; null: written before migration 0007 (plain SHA-256)",
    ),
    # HMAC-SHA256 over every other column and the previous entry's hash (store/audit_seal.py).
    # A column added later must be nullable without a default: null columns are left out of the
    # hashed serialization, so entries written before it keep their hash.
    sa.Column("hash", sa.String(64), nullable=False),
)
sa.Index("ix_audit_log_at", audit_log.c.at)
sa.Index("ix_audit_log_target", audit_log.c.target)

# Spend and usage per limit subject (`key:<id>`, `route:<name>`) and UTC window, for the in-process
# limiter to survive restarts (with Redis the counters live there).
usage_counters = sa.Table(
    "usage_counters",
    metadata,
    sa.Column("subject", sa.String(200), primary_key=True),
    sa.Column("window", sa.String(8), primary_key=True, doc="day | month"),
    sa.Column("start", sa.Float, primary_key=True, doc="epoch seconds of the window start (UTC)"),
    sa.Column("usd", sa.Float, nullable=False),
    sa.Column("tokens", sa.Integer, nullable=False),
    sa.Column("requests", sa.Integer, nullable=False),
)

# Dashboard sessions ended by logging out, until they would have expired anyway: sessions are
# signed cookies (no session table), so this is the list of cookies that no longer count.
ended_sessions = sa.Table(
    "ended_sessions",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True, doc="SHA-256 of the session cookie"),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=False),
)
sa.Index("ix_ended_sessions_ended", ended_sessions.c.ended_at)


# Background jobs that must run once across gateway workers (store/leases.py): the holder of each,
# until when, and the fencing token that every takeover increments.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(128), nullable=False),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
