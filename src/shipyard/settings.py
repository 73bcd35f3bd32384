"""Every setting, declared once, as a typed attribute of :class:`Settings` with its default and help.

Precedence, highest first: command-line flag > environment variable ``SHIPYARD_<NAME>`` >
``settings:`` section of ``shipyard.yaml`` > default. ``docs/reference/settings.md`` is generated
from these declarations (``python -m shipyard.settings``) and a test fails when it is out of date.

Each setting is ``name: Annotated[type, Spec(default, help, ...)]``: mypy checks every use of
``settings.<name>`` against its type, and :data:`SETTINGS` (the table the docs, the CLI's
``--help`` and the parser read) is derived from the same lines, so nothing is declared twice.
pydantic-settings was weighed and not taken: what it would add (typed fields, env prefixes,
precedence) is these hundred lines, while what we need beyond it would be written anyway on top of
it: the YAML file's ``settings:`` as one source among four with a ``source(name)`` that says which
one won, errors that name where a bad value came from (``$SHIPYARD_PORT``, ``shipyard.yaml``, the
command line) in one sentence rather than a pydantic error list, secrets masked in ``as_dict()``,
and the generated reference page.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args, get_type_hints

from shipyard.errors import ConfigError


@dataclass(frozen=True)
class Spec:
    """What a setting's annotation carries besides its type."""

    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    secret: bool = False  # masked in as_dict(), which is what gets shown or recorded


@dataclass(frozen=True)
class Setting:
    """One setting as the parser and the reference page see it (derived from its annotation)."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    secret: bool = False  # masked in as_dict(), which is what gets shown or recorded

    @property
    def env(self) -> str:
        return "SHIPYARD_" + self.name.upper()

    def parse(self, raw: Any, source: str) -> Any:
        """Turn a raw value (string from the environment, YAML scalar) into the setting's type."""
        try:
            if self.type is bool:
                value: Any
                if isinstance(raw, bool):
                    value = raw
                elif str(raw).strip().lower() in ("1", "true", "yes", "on"):
                    value = True
                elif str(raw).strip().lower() in ("0", "false", "no", "off", ""):
                    value = False
                else:
                    raise ValueError("expected true/false")
            elif raw is None and self.default is None:
                value = None
            else:
                value = self.type(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"setting `{self.name}` from {source} must be {self.type.__name__}, got {raw!r}: {exc}"
            ) from None
        if self.choices and value not in self.choices:
            raise ConfigError(
                f"setting `{self.name}` from {source} must be one of {', '.join(self.choices)}; got {value!r}"
            )
        if self.minimum is not None and value is not None and value < self.minimum:
            raise ConfigError(f"setting `{self.name}` from {source} must be >= {self.minimum}; got {value!r}")
        return value


class Settings:
    """Resolved settings, one typed attribute per setting; ``source(name)`` says where it came from."""

    home: Annotated[
        str,
        Spec(
            ".shipyard",
            "Directory holding the store, artifacts and logs. Relative paths are resolved against the "
            "working directory.",
        ),
    ]

    host: Annotated[
        str,
        Spec(
            "127.0.0.1",
            "Interface `shipyard up` listens on. Use 0.0.0.0 to accept connections from other machines.",
        ),
    ]

    port: Annotated[
        int,
        Spec(
            8700,
            "Port `shipyard up` listens on.",
            minimum=1,
        ),
    ]

    config: Annotated[
        str | None,
        Spec(
            None,
            "Path of the `shipyard.yaml` to load. Unset: `./shipyard.yaml` when it exists, else the "
            "built-in default (route `default` on the embedded local model).",
        ),
    ]

    database_url: Annotated[
        str | None,
        Spec(
            None,
            "SQLAlchemy URL of the store. Unset: SQLite (WAL) at `<home>/shipyard.db`. Example: "
            "`postgresql+psycopg://user@host/db`.",
        ),
    ]

    redis_url: Annotated[
        str | None,
        Spec(
            None,
            "Redis URL (`redis://host:6379/0`) where rate limits and budgets are counted and response-cache "
            "entries kept, so that many gateway workers share them. Unset: counted and kept in this process "
            "(one worker); the spend is saved in the store.",
        ),
    ]

    workers: Annotated[
        int,
        Spec(
            1,
            "Gateway worker processes `shipyard up` runs on its one port (`--workers`). More than one needs "
            "`redis_url` (limits, budgets and the response cache are shared there); alerts and drift checks "
            "run in one worker at a time (a lease in the store).",
            minimum=1,
        ),
    ]
    lease_ttl: Annotated[
        float,
        Spec(
            10.0,
            "Seconds a worker's lease on the once-only background jobs (alert evaluation, drift checks) "
            "lasts; renewed every third of it. Another worker takes the jobs over within this time when "
            "the holder dies.",
            minimum=1.0,
        ),
    ]
    redis_max_connections: Annotated[
        int,
        Spec(
            50,
            "Connections each Redis client of a gateway worker keeps at most (limits, response cache). "
            "A request that finds them all busy waits for one (`redis_pool_timeout`) instead of failing.",
            minimum=1,
        ),
    ]
    redis_pool_timeout: Annotated[
        float,
        Spec(
            10.0,
            "Seconds a request waits for a free Redis connection before the limits stage gives up (503).",
            minimum=0.1,
        ),
    ]

    cache_max_bytes: Annotated[
        int,
        Spec(
            256 * 1024 * 1024,
            "Most bytes of answers the in-process response cache keeps (routes with `cache:`, when "
            "`redis_url` is unset); the least recently used go first.",
            minimum=1024 * 1024,
        ),
    ]
    cache_max_entries: Annotated[
        int,
        Spec(
            100_000,
            "Most answers the in-process response cache keeps (and most conversations its semantic "
            "index holds), when `redis_url` is unset; the least recently used go first.",
            minimum=100,
        ),
    ]

    admin_key: Annotated[
        str | None,
        Spec(
            None,
            "An admin API key (`sk-shp-…`) to create at start if the store does not know it yet: for "
            "automated deployments and CI. Unset: the first `shipyard up` on an empty store creates an "
            "admin key and prints it once.",
            secret=True,
        ),
    ]

    session_ttl: Annotated[
        float,
        Spec(
            12 * 3600.0,
            "Seconds a dashboard login lasts before the key must be entered again.",
            minimum=60,
        ),
    ]

    audit_key: Annotated[
        str | None,
        Spec(
            None,
            "Secret that keys the audit log's hash chain and signs its anchors (HMAC-SHA256); keep it "
            "off the database host. Unset: a random key is created on first use in `<home>/audit.key` "
            "(mode 0600). Servers that share one Postgres store must share the key (set this on each, "
            "or copy the file), or each reports the others' entries as written with another key.",
            secret=True,
        ),
    ]

    log_level: Annotated[
        str,
        Spec(
            "info",
            "Log level of the server.",
            choices=("debug", "info", "warning", "error"),
        ),
    ]

    max_body_bytes: Annotated[
        int,
        Spec(
            8 * 1024 * 1024,
            "Largest request body the gateway accepts; bigger bodies get HTTP 413.",
            minimum=1024,
        ),
    ]

    api_max_body_bytes: Annotated[
        int,
        Spec(
            16 * 1024 * 1024,
            "Largest request body the admin API (`/api`) accepts, dataset imports included; bigger "
            "bodies get HTTP 413 before they are read. Artifact uploads have their own limit, "
            "`artifact_max_bytes`.",
            minimum=1024,
        ),
    ]

    artifact_max_bytes: Annotated[
        int,
        Spec(
            1024 * 1024 * 1024,
            "Largest run artifact `PUT /api/runs/{id}/artifacts/{path}` accepts (streamed to disk, not "
            "held in memory); bigger uploads get HTTP 413.",
            minimum=1024,
        ),
    ]

    max_embedding_inputs: Annotated[
        int,
        Spec(
            2048,
            "Most inputs (texts or token arrays) one `/v1/embeddings` request may carry, like OpenAI's "
            "limit; more get HTTP 400 asking the client to split the request.",
            minimum=1,
        ),
    ]

    max_embedding_input_tokens: Annotated[
        int,
        Spec(
            300_000,
            "Most input tokens one `/v1/embeddings` request may carry over all its inputs; counted with "
            "the model's own tokenizer where its provider has one (wordllama), otherwise bounded by the "
            "text's UTF-8 bytes (no tokenizer makes more tokens than bytes). More get HTTP 400.",
            minimum=1,
        ),
    ]

    prompt_render_timeout: Annotated[
        float,
        Spec(
            0.5,
            "Seconds one render of a prompt template may take (checked at every loop step, call and "
            "output); a slower render fails with HTTP 400, and `apply` refuses a template that is too "
            "slow even with placeholder variables. Keep it short: renders run on the request path.",
            minimum=0.001,
        ),
    ]

    prompt_render_max_chars: Annotated[
        int,
        Spec(
            4_000_000,
            "Most characters one render of a prompt template may produce (its output, text captured by "
            "`{% set %}` blocks and macros on the way); any single value it builds is held to it too. A "
            "bigger render fails with HTTP 400.",
            minimum=1000,
        ),
    ]

    capture_messages: Annotated[
        str,
        Spec(
            "full",
            "What traces keep of prompts and answers: `full`, `truncated` (first `capture_max_chars` "
            "characters of each), or `none`.",
            choices=("full", "truncated", "none"),
        ),
    ]

    capture_max_chars: Annotated[
        int,
        Spec(
            2000,
            "Characters kept per message when `capture_messages` is `truncated`.",
            minimum=1,
        ),
    ]

    trace_queue_size: Annotated[
        int,
        Spec(
            50_000,
            "Traces waiting to be written that the gateway holds in memory; beyond it new traces are "
            "dropped (and counted), never the request.",
            minimum=1,
        ),
    ]

    trace_batch_size: Annotated[
        int,
        Spec(
            500,
            "Traces written per store transaction.",
            minimum=1,
        ),
    ]

    trace_flush_interval: Annotated[
        float,
        Spec(
            0.25,
            "Longest time, in seconds, a trace waits in memory before it is written.",
            minimum=0.01,
        ),
    ]

    trace_durability: Annotated[
        str,
        Spec(
            "batched",
            "`batched`: traces are written in batches off the request path; a process killed outright "
            "(kill -9, power loss) loses the last `trace_flush_interval` of them. `acknowledged`: an "
            "answer is sent (a stream's closing `[DONE]`) only once its trace is committed, so every "
            "answered request is on record, at the cost of a commit per small group of requests.",
            choices=("batched", "acknowledged"),
        ),
    ]

    default_timeout: Annotated[
        float,
        Spec(
            120.0,
            "Per-attempt timeout in seconds for targets that set none.",
            minimum=0.001,
        ),
    ]

    shutdown_timeout: Annotated[
        float,
        Spec(
            30.0,
            "Seconds a shutdown waits for in-flight requests and the trace flush.",
            minimum=0,
        ),
    ]

    metrics_max_label_values: Annotated[
        int,
        Spec(
            100,
            "Most distinct values one `/metrics` label (route, target, model) keeps; more are counted "
            "as `__other__`, so clients sending arbitrary model names cannot blow up Prometheus.",
            minimum=1,
        ),
    ]

    reload_interval: Annotated[
        float,
        Spec(
            1.0,
            "Seconds between checks for registry changes (new route or model versions, alias moves) "
            "that a running gateway applies without restart.",
            minimum=0.05,
        ),
    ]

    actor: Annotated[
        str | None,
        Spec(
            None,
            "Name recorded as who made a registry change from this process (alias moves, new versions). "
            "Unset: the operating-system user.",
        ),
    ]

    local_threads: Annotated[
        int,
        Spec(
            0,
            "CPU threads llama.cpp uses for the local model; 0 = all cores.",
            minimum=0,
        ),
    ]

    alert_interval: Annotated[
        float,
        Spec(
            15.0,
            "Seconds between evaluations of the alert rules (`monitoring: alerts:`). A drift check that "
            "finishes also triggers one.",
            minimum=0.05,
        ),
    ]

    online_eval_queue_size: Annotated[
        int,
        Spec(
            1000,
            "Sampled traces waiting to be scored by online evals; beyond it new samples are dropped "
            "(and counted), never the request.",
            minimum=1,
        ),
    ]

    online_eval_concurrency: Annotated[
        int,
        Spec(
            4,
            "Traces online evals score at once (a judge scorer calls its route this many times in parallel).",
            minimum=1,
        ),
    ]

    otlp_max_body_bytes: Annotated[
        int,
        Spec(
            16 * 1024 * 1024,
            "Largest OTLP export `POST /v1/traces` accepts, compressed and after decompression; bigger "
            "ones get HTTP 413 (lower the exporter's batch size).",
            minimum=1024,
        ),
    ]

    otlp_export_endpoint: Annotated[
        str | None,
        Spec(
            None,
            "OTLP/HTTP endpoint that receives a copy of every gateway trace (protobuf, gzip), e.g. "
            "`http://collector:4318/v1/traces`; a URL without a path gets `/v1/traces`. Unset: no "
            "export.",
        ),
    ]

    otlp_export_headers: Annotated[
        str | None,
        Spec(
            None,
            "Headers sent with each export, as `key=value` pairs separated by commas (values "
            "percent-encoded), like `OTEL_EXPORTER_OTLP_HEADERS`: `authorization=Bearer%20abc`.",
        ),
    ]

    otlp_export_timeout: Annotated[
        float,
        Spec(
            10.0,
            "Seconds one export request may take before it is retried.",
            minimum=0.1,
        ),
    ]

    def __init__(
        self,
        overrides: Mapping[str, Any] | None = None,
        file_values: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._values: dict[str, Any] = {}
        self._sources: dict[str, str] = {}
        for unknown in set(file_values or {}) - BY_NAME.keys():
            raise ConfigError(
                f"unknown setting `{unknown}` in the config file's `settings:`; "
                f"known settings: {', '.join(sorted(BY_NAME))}"
            )
        for s in SETTINGS:
            if overrides and overrides.get(s.name) is not None:
                self._values[s.name] = s.parse(overrides[s.name], "the command line")
                self._sources[s.name] = "flag"
            elif s.env in env:
                self._values[s.name] = s.parse(env[s.env], f"${s.env}")
                self._sources[s.name] = "env"
            elif file_values and s.name in file_values:
                self._values[s.name] = s.parse(file_values[s.name], "shipyard.yaml")
                self._sources[s.name] = "config"
            else:
                self._values[s.name] = s.default
                self._sources[s.name] = "default"
            setattr(self, s.name, self._values[s.name])

    def source(self, name: str) -> str:
        return self._sources[name]

    def as_dict(self) -> dict[str, Any]:
        return {k: ("***" if BY_NAME[k].secret and v else v) for k, v in self._values.items()}

    def with_file_values(self, file_values: Mapping[str, Any]) -> Settings:
        """Re-resolve with a config file's `settings:` section; flags and env keep winning."""
        overrides = {k: v for k, v in self._values.items() if self._sources[k] == "flag"}
        return Settings(overrides=overrides, file_values=file_values)

    @property
    def home_path(self) -> Path:
        return Path(self._values["home"]).expanduser().resolve()

    @property
    def artifacts_path(self) -> Path:
        """Where experiment-run artifacts are kept: `<home>/artifacts/<run id>/…`."""
        return self.home_path / "artifacts"

    @property
    def store_url(self) -> str:
        url = self._values["database_url"]
        if url:
            return str(url)
        return f"sqlite:///{self.home_path / 'shipyard.db'}"


def declared_settings(cls: type) -> tuple[Setting, ...]:
    """The table of settings, from the class's ``Annotated[type, Spec(...)]`` attributes in order."""
    found: list[Setting] = []
    for name, hint in get_type_hints(cls, include_extras=True).items():
        specs = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Spec)]
        if not specs:
            continue
        spec = specs[0]
        declared = get_args(hint)[0]
        members = get_args(declared) if isinstance(declared, types.UnionType) else (declared,)
        kinds = [k for k in members if k is not type(None)]
        if len(kinds) != 1:
            raise TypeError(f"setting `{name}` must have one type (optionally `| None`), not {declared}")
        if spec.default is None and len(kinds) == len(members):
            raise TypeError(f"setting `{name}` defaults to None, so its type must include None")
        kind = kinds[0]
        found.append(Setting(name, kind, spec.default, spec.help, spec.choices, spec.minimum, spec.secret))
    return tuple(found)


SETTINGS: tuple[Setting, ...] = declared_settings(Settings)
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def render_markdown() -> str:
    """The settings reference page, generated from SETTINGS."""
    lines = [
        "# Settings reference",
        "",
        "Generated from `src/shipyard/settings.py` by `python -m shipyard.settings`; do not edit by hand.",
        "",
        "Precedence, highest first: command-line flag > environment variable > `settings:` section of "
        "`shipyard.yaml` > default.",
        "",
        "| setting | environment variable | default | description |",
        "|---|---|---|---|",
    ]
    for s in SETTINGS:
        default = "(unset)" if s.default is None else f"`{s.default}`"
        desc = s.help
        if s.choices:
            desc += " One of: " + ", ".join(f"`{c}`" for c in s.choices) + "."
        lines.append(f"| `{s.name}` | `{s.env}` | {default} | {desc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
