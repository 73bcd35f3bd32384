"""The ``monitoring:`` section of ``shipyard.yaml``: online evals, scheduled drift checks and alert
rules. It is runtime configuration of the server that loads the file (like ``settings:``), not a
registry entity: ``shipyard apply`` ignores it and a change takes effect at the next start.

Everything that can be checked without the running server is checked here, so ``shipyard config
check`` reports it with line numbers: durations, scorer specs (and that they need no expected
answer), metric names, aggregations, notification channels.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from shipyard.durations import parse_duration
from shipyard.errors import ConfigError
from shipyard.evals.core import Scorer
from shipyard.monitoring.drift import NUMERIC_FEATURES, DriftConfig
from shipyard.plugins import ConfigSection, hookimpl
from shipyard.store.rollups import Aggregate

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"

# Every figure `rollups.total(...).summary(seconds)` gives, so a rule can use any of them.
ROLLUP_METRICS: tuple[str, ...] = tuple(Aggregate().summary(1.0))
SCORE_AGGREGATIONS = ("avg", "min", "max", "p50", "p95", "count", "pass_rate")
FEEDBACK_AGGREGATIONS = ("avg", "min", "max", "p50", "p95", "count")
OPS = (">", ">=", "<", "<=")
# The keys of DriftReport.metrics() (its docstring lists them); a test checks they agree.
DRIFT_METRICS: tuple[str, ...] = (
    "drifted",
    "p_value",
    "n_reference",
    "n_current",
    "mmd_prompt",
    "mmd_prompt_p",
    "mmd_response",
    "mmd_response_p",
    *(
        f"{test}_{feature}{p}"
        for feature in NUMERIC_FEATURES
        for test, p in (("ks", ""), ("ks", "_p"), ("psi", ""))
    ),
    "psi_max",
    "topic_shift",
    "topic_max_growth",
    "topic_chi2_p",
)
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/@-]*$")


def _duration(value: Any) -> float:
    if value is None:
        raise ValueError("a duration is required, e.g. 30s, 5m or 1h")
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# -- online evals -----------------------------------------------------------------------------------


def needs_expected(scorer: Scorer) -> bool:
    """A scorer that compares with the case's expected answer: its options have a ``value`` (the
    answer to compare with) and it is unset. Live traffic has no expected answer."""
    options = getattr(scorer, "options", None)
    return options is not None and "value" in type(options).model_fields and options.value is None


class OnlineEval(_Strict):
    """Scorers that run, in the background, on a sampled share of a route's successful requests."""

    name: str | None = Field(
        None, pattern=NAME_PATTERN, description="Label in logs and the status API; default: the route."
    )
    route: str = Field(description="Route whose traffic is scored.")
    sample: float = Field(
        description="Share of the route's successful requests to score, 0 to 1 (0 pauses it).", ge=0, le=1
    )
    scorers: list[dict[str, Any]] = Field(
        min_length=1,
        description="Scorers exactly as eval suites write them (`type:` plus options); the ones that "
        "compare with an expected answer need their `value:` set.",
    )
    _built: list[Scorer] = PrivateAttr(default_factory=list)

    @property
    def label(self) -> str:
        return self.name or self.route

    @model_validator(mode="after")
    def _build(self) -> OnlineEval:
        from shipyard.evals.scorers import build_scorers

        try:
            built = build_scorers(self.scorers)
        except ConfigError as exc:
            raise ValueError("; ".join(exc.problems) or exc.message) from None
        problems = []
        for i, scorer in enumerate(built):
            if needs_expected(scorer):
                problems.append(
                    f"scorers[{i}] (`{scorer.name}`) compares the output with an expected answer, which "
                    "live traffic does not have: set its `value:`, or use a scorer that needs none "
                    "(regex, is_json, json_schema, length, word_count, not_contains with `value`, "
                    "latency, llm_judge, custom…)"
                )
        if problems:
            raise ValueError("; ".join(problems))
        self._built = built
        return self

    def build(self) -> list[Scorer]:
        """Fresh scorer instances (the ones validation built are not shared between servers)."""
        from shipyard.evals.scorers import build_scorers

        return build_scorers(self.scorers)

    @property
    def scorer_names(self) -> list[str]:
        return [s.name for s in self._built]


# -- alerts -----------------------------------------------------------------------------------------


def _channel(value: Any) -> Any:
    if value == "log":
        return {"log": True}
    if isinstance(value, Mapping):
        return value
    raise ValueError("a notify entry is `log` or a mapping with `webhook: <URL>` (and optional `headers:`)")


class Channel(_Strict):
    """Where a notification goes: the log (logger ``shipyard.alerts``) or a webhook (JSON POST)."""

    log: bool = Field(False, description="Write notifications to the server log.")
    webhook: str | None = Field(None, description="URL that gets a JSON POST per notification.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers (e.g. auth).")
    timeout: Duration = Field(10.0, description="Per attempt.")
    retries: int = Field(3, ge=0, le=10, description="Extra attempts after a failed delivery.")

    @field_validator("webhook")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"`{url}` is not an http(s) URL")
        return url

    @model_validator(mode="after")
    def _one_kind(self) -> Channel:
        if self.log == (self.webhook is not None):
            raise ValueError("give either `webhook: <URL>` or `log`, not both and not neither")
        if self.log and self.headers:
            raise ValueError("`headers` only apply to a webhook")
        return self

    @property
    def label(self) -> str:
        """A name for the channel that is safe to store and show: webhook URLs often carry a
        secret token in their path or query, so only the scheme and host are kept."""
        if self.webhook is None:
            return "log"
        m = re.match(r"^(https?://[^/?#]+)", self.webhook)
        return f"webhook {m.group(1) if m else '?'}"


ChannelSpec = Annotated[Channel, BeforeValidator(_channel)]
_KNOWN_METRICS = (
    ", ".join(ROLLUP_METRICS) + ", drift.<statistic> (e.g. drift.drifted, drift.p_value), "
    "score.<online eval scorer name>, feedback.<feedback name>"
)


class AlertRule(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Unique name of the rule.")
    metric: str = Field(description=f"What to watch: {_KNOWN_METRICS}.")
    route: str | None = Field(None, description="Only this route's traffic (required for drift.*).")
    model: str | None = Field(None, description="Only traffic answered by this model (traffic metrics).")
    window: Duration = Field(300.0, description="How far back the metric looks, e.g. 5m.")
    aggregation: str | None = Field(
        None,
        description="For score.* (avg, min, max, p50, p95, count, pass_rate; default avg) and "
        "feedback.* (avg, min, max, p50, p95, count; default avg).",
    )
    op: Literal[">", ">=", "<", "<="] = Field(description="Comparison of the value with the threshold.")
    threshold: float
    for_: Duration = Field(
        0.0, alias="for", description="How long the condition must hold before the alert fires."
    )
    severity: Literal["info", "warning", "critical"] = "warning"
    notify: list[ChannelSpec] = Field(
        default_factory=lambda: [Channel(log=True)], description="Channels; default: the log."
    )
    repeat: Duration | None = Field(None, description="Notify again this often while it keeps firing.")
    message: str | None = Field(None, description="Text sent with the notification; default: generated.")

    @property
    def kind(self) -> str:
        """rollup | drift | score | feedback"""
        prefix, dot, _ = self.metric.partition(".")
        return prefix if dot and prefix in ("drift", "score", "feedback") else "rollup"

    @property
    def key(self) -> str:
        """The metric without its prefix: `drifted` for `drift.drifted`."""
        return self.metric if self.kind == "rollup" else self.metric.partition(".")[2]

    @property
    def effective_aggregation(self) -> str | None:
        if self.kind in ("score", "feedback"):
            return self.aggregation or "avg"
        return None

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        prefix, dot, key = metric.partition(".")
        if dot and prefix == "drift":
            if key not in DRIFT_METRICS:
                known = ", ".join("drift." + k for k in DRIFT_METRICS)
                raise ValueError(f"unknown drift statistic `{key}`; known: {known}")
            return metric
        if dot and prefix in ("score", "feedback"):
            if not _KEY.match(key):
                raise ValueError(f"`{metric}` needs a name after `{prefix}.`, e.g. `{prefix}.x`")
            return metric
        if metric not in ROLLUP_METRICS:
            raise ValueError(f"unknown metric `{metric}`; known metrics: {_KNOWN_METRICS}")
        return metric

    @model_validator(mode="after")
    def _consistent(self) -> AlertRule:
        kind = self.kind
        if self.aggregation is not None:
            allowed = {"score": SCORE_AGGREGATIONS, "feedback": FEEDBACK_AGGREGATIONS}.get(kind)
            if allowed is None:
                raise ValueError(
                    f"`aggregation` applies to score.* and feedback.* metrics; `{self.metric}` is already "
                    "an aggregate (use e.g. latency_p95_ms instead of an aggregation)"
                )
            if self.aggregation not in allowed:
                raise ValueError(
                    f"aggregation `{self.aggregation}` is not one of {', '.join(allowed)} (for {kind}.*)"
                )
        if kind == "drift" and self.route is None:
            raise ValueError("drift metrics are per route: set `route:`")
        if kind in ("drift", "score", "feedback") and self.model is not None:
            raise ValueError(f"`model` filters traffic metrics only, not {kind}.*")
        if self.window <= 0:
            raise ValueError("`window` must be longer than 0s")
        if self.repeat is not None and self.repeat <= 0:
            raise ValueError("`repeat` must be longer than 0s (or left out)")
        if not self.notify:
            raise ValueError("`notify` needs at least one channel (`log`, or `webhook: URL`)")
        return self

    @property
    def labels(self) -> dict[str, str]:
        out = {"alertname": self.name, "metric": self.metric, "severity": self.severity}
        if self.route is not None:
            out["route"] = self.route
        if self.model is not None:
            out["model"] = self.model
        return out

    @property
    def fingerprint(self) -> str:
        """Identity of the alert for deduplication: the rule and what it watches. The threshold and
        severity are not part of it, so tuning them keeps an open episode open."""
        ident = "\x1f".join((self.name, self.metric, self.route or "", self.model or ""))
        return hashlib.sha256(ident.encode()).hexdigest()[:16]

    def describe(self) -> str:
        agg = self.effective_aggregation
        what = f"{agg}({self.metric})" if agg else self.metric
        scope = "".join(f" {k}={v}" for k, v in (("route", self.route), ("model", self.model)) if v)
        over = "latest report" if self.kind == "drift" else f"over {_fmt_seconds(self.window)}"
        return f"{what}{scope} {over} {self.op} {self.threshold:g}"


def _fmt_seconds(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class MonitoringConfig(_Strict):
    online_evals: list[OnlineEval] = Field(default_factory=list)
    drift: list[DriftConfig] = Field(default_factory=list)
    alerts: list[AlertRule] = Field(default_factory=list)

    @field_validator("online_evals")
    @classmethod
    def _distinct_evals(cls, evals: list[OnlineEval]) -> list[OnlineEval]:
        seen: dict[str, int] = {}
        for i, e in enumerate(evals):
            if e.label in seen:
                raise ValueError(
                    f"online_evals[{i}] and online_evals[{seen[e.label]}] are both named `{e.label}`; "
                    "give one a distinct `name:`"
                )
            seen[e.label] = i
        scorers: dict[tuple[str, str], int] = {}
        for i, e in enumerate(evals):
            for name in e.scorer_names:
                first = scorers.setdefault((e.route, name), i)
                if first != i:
                    raise ValueError(
                        f"online_evals[{i}] and online_evals[{first}] both score route `{e.route}` with a "
                        f"scorer named `{name}`; their scores would mix: give one scorer another `name:`"
                    )
        return evals

    @field_validator("alerts")
    @classmethod
    def _distinct_rules(cls, rules: list[AlertRule], info: Any) -> list[AlertRule]:
        seen: dict[str, int] = {}
        for i, r in enumerate(rules):
            if r.name in seen:
                raise ValueError(f"alerts[{i}] and alerts[{seen[r.name]}] are both named `{r.name}`")
            seen[r.name] = i
        evals: list[OnlineEval] = info.data.get("online_evals") or []
        known = sorted({n for e in evals for n in e.scorer_names})
        for i, r in enumerate(rules):
            if r.kind != "score":
                continue
            if r.key not in known:
                raise ValueError(
                    f"alerts[{i}] (`{r.name}`): no online eval has a scorer named `{r.key}`; "
                    f"known scorers: {', '.join(known) or '(none: add `online_evals:`)'}"
                )
            routes = sorted({e.route for e in evals if r.key in e.scorer_names})
            if r.route is not None and r.route not in routes:
                raise ValueError(
                    f"alerts[{i}] (`{r.name}`): scorer `{r.key}` scores route(s) {', '.join(routes)}, "
                    f"not `{r.route}`: the rule would never see a score"
                )
        return rules

    def rule(self, name: str) -> AlertRule | None:
        return next((r for r in self.alerts if r.name == name), None)


def load_monitoring(raw: Any, source: str = "shipyard.yaml", where: Any = None) -> MonitoringConfig:
    """The ``monitoring:`` section of a document (``${ENV}`` references resolved), fully checked;
    ConfigError listing every problem with its line."""
    import os

    from pydantic import ValidationError

    from shipyard.config.loader import substitute_env, validation_problems

    where = where or (lambda path: source)
    problems: list[str] = []
    data = substitute_env(raw or {}, os.environ, where, problems, ("monitoring",))
    if problems:
        raise ConfigError(f"{source} has {len(problems)} problem(s):", problems)
    try:
        return MonitoringConfig.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, where, MonitoringConfig, ("monitoring",))
        raise ConfigError(f"{source} has {len(problems)} problem(s):", problems) from None


@hookimpl
def register_config_sections() -> list[ConfigSection]:
    return [ConfigSection("monitoring", load_monitoring)]
