"""The ``shipyard.yaml`` schema. Unknown keys are errors everywhere (``extra="forbid"``)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from shipyard.errors import InvalidRequest

# The one rule for names: providers, models, routes, prompts, target labels, scanners, datasets,
# experiments, eval suites. Names travel in HTTP headers (`x-shipyard-route`, `x-shipyard-target`),
# URLs, metric labels and log lines, so no spaces and no control characters: a CR/LF in a target
# label once made every answer of its route an empty reply (a header injection).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$"
_NAME = re.compile(NAME_PATTERN[1:-1])
_PUNCTUATION = "._-:/@"  # what the pattern allows besides letters and digits


def name_rule(reserved: str = "") -> str:
    """The rule in words (without the ``reserved`` characters)."""
    marks = [f"`{c}`" for c in _PUNCTUATION if c not in reserved]
    return (
        f"1 to 128 letters, digits, {', '.join(marks[:-1])} or {marks[-1]}, starting with a letter or "
        "digit (no spaces or control characters)"
    )


def name_problem(value: Any, what: str = "name", reserved: str = "") -> str | None:
    """Why ``value`` is not a valid name (None when it is). ``reserved``: characters of the rule
    that this kind of name may not use (a dataset's `@` starts a version, as in `name@v2`)."""
    if not isinstance(value, str):
        return f"{what} must be a string; got {type(value).__name__}"
    if _NAME.fullmatch(value) and not any(c in value for c in reserved):
        return None
    # repr() shows a CR, LF or tab as an escape instead of breaking the message's line.
    shown = repr(value[:60] + ("…" if len(value) > 60 else ""))
    return f"{what} {shown} is not valid: use {name_rule(reserved)}"


def check_name(value: Any, what: str = "name", *, param: str = "name", reserved: str = "") -> str:
    """``value`` when it is a valid name, else InvalidRequest (HTTP 400) naming the rule."""
    problem = name_problem(value, what, reserved)
    if problem is not None:
        raise InvalidRequest(problem, param=param)
    return str(value)


def _valid_name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise PydanticCustomError("invalid_name", problem)
    return value


# A name field of the schema: the rule above, with the error message that states it.
Name = Annotated[str, AfterValidator(_valid_name), Field(json_schema_extra={"pattern": NAME_PATTERN})]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProviderConfig(BaseModel):
    """A backend instance. ``type`` picks the provider type; the other keys are its options."""

    model_config = ConfigDict(extra="allow")

    name: Name = Field(..., description="How models refer to this provider.")
    type: str = Field(..., description="Provider type: local, openai, mock, wordllama, or a plugin's.")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Pricing(Strict):
    """USD per million tokens."""

    input_per_mtok: float = Field(0.0, ge=0)
    output_per_mtok: float = Field(0.0, ge=0)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000


class ModelConfig(Strict):
    name: Name = Field(..., description="Name targets use to refer to this model.")
    provider: str = Field(..., description="Name of a provider in `providers:`.")
    model: str | None = Field(None, description="Model name the provider knows; defaults to `name`.")
    kind: Literal["chat", "embedding"] = "chat"
    pricing: Pricing = Field(
        default_factory=Pricing,
        description="USD per million tokens. Unset: the price catalogue's, when it knows the provider (by "
        "its API URL) and the model; `shipyard models prices` shows which applies.",
    )
    price_as: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]+/[^\s]+$",
        max_length=200,
        description="Charge this model at the price catalogue's `provider/model` (e.g. "
        "`openai/gpt-4o-mini`): for a provider reached through a proxy or gateway whose URL the catalogue "
        "does not know. "
        "`pricing:` still wins.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Default request params.")

    @property
    def provider_model(self) -> str:
        return self.model or self.name


class TargetConfig(Strict):
    model: str = Field(..., description="Name of a model in `models:`.")
    name: Name | None = Field(
        None,
        description="Label in traces, splits and the `x-shipyard-target` header; defaults to the model name.",
    )
    weight: float = Field(1.0, ge=0, description="Share of traffic relative to the route's other targets.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Request params this target sets (they override the client's)."
    )
    timeout: float | None = Field(None, gt=0, description="Seconds per attempt (stream: per chunk).")
    retries: int = Field(
        0, ge=0, le=10, description="Extra attempts on retryable errors before falling back."
    )
    prompt: str | None = Field(
        None,
        description="Prompt template this target renders, as `name`, `name@alias` or `name@v3`; "
        "overrides the route's `prompt` (A/B-test prompt versions with two targets).",
    )

    @property
    def label(self) -> str:
        return self.name or self.model


class ScannerSpec(BaseModel):
    """One guard scanner on a route: ``type`` picks the scanner type; the other keys are its options."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(..., description="Scanner type: pii, secrets, injection, canary… or a plugin's.")
    name: Name | None = Field(None, description="Label in findings and metrics; defaults to the type.")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class GuardsConfig(Strict):
    """A route's guard pipeline (see docs/security.md)."""

    input: list[ScannerSpec] = Field(
        default_factory=list, description="Scanners run on the client's messages before the provider call."
    )
    output: list[ScannerSpec] = Field(
        default_factory=list, description="Scanners run on the answer before the client gets it."
    )
    stream_window_tokens: int = Field(
        64,
        ge=1,
        le=1024,
        description="Hold-back window of streamed answers, in tokens (4 characters each): a value "
        "split across chunks is caught if it is shorter than this; time to first token grows by at most it.",
    )
    stream_window_chars: int | None = Field(
        None, ge=1, le=16384, description="The hold-back window in characters (overrides the tokens)."
    )
    restore_pii: bool = Field(
        False,
        description="Put the original values of PII redacted from the input (`<EMAIL_1>`…) back into "
        "the answer the client gets; the provider and the stored trace only see placeholders.",
    )


class LimitsConfig(Strict):
    """Rate limits and spend budgets (see docs/limits.md). Unset fields do not limit."""

    requests_per_min: int | None = Field(None, ge=1, description="Requests per minute.")
    tokens_per_min: int | None = Field(None, ge=1, description="Input plus output tokens per minute.")
    usd_per_day: float | None = Field(None, gt=0, description="Spend per UTC day, in USD.")
    usd_per_month: float | None = Field(None, gt=0, description="Spend per UTC calendar month, in USD.")

    def empty(self) -> bool:
        return all(v is None for v in self.model_dump().values())


class CacheConfig(Strict):
    """A route's response cache (see docs/cache.md): an identical request within ``ttl`` is answered
    from the cache, without calling a provider."""

    mode: Literal["exact", "semantic"] = Field(
        "exact",
        description="`exact`: the same request (every field that changes the answer, after the input "
        "guards) gets the same answer. `semantic`: also a request whose conversation is similar "
        "(WordLlama embeddings, at least `threshold`) and differs in nothing that changes the answer "
        "(numbers, negation, dates, names, units, polarity, language, a swapped word).",
    )
    threshold: float = Field(
        0.8,
        ge=0.5,
        le=1.0,
        description="`semantic` only: the least cosine similarity of two conversations (of their last "
        "turns, and of the turns before) for one's answer to serve the other.",
    )
    ttl: float = Field(3600.0, gt=0, le=30 * 86400, description="Seconds an answer stays valid.")
    scope: Literal["key", "user", "global"] = Field(
        "key",
        description="Who shares answers: `key` (callers with the same API key), `user` (the same API key "
        "and the same `user` field or X-Shipyard-Session), `global` (every caller of the route).",
    )
    sampled: bool = Field(
        False,
        description="Also cache requests with `temperature` > 0 (their answers are meant to vary, so by "
        "default they always reach the model).",
    )
    max_entry_bytes: int = Field(
        1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Answers larger than this are not cached."
    )


class RouteConfig(Strict):
    name: Name = Field(..., description="What clients send as `model`.")
    description: str = ""
    targets: list[TargetConfig] = Field(..., min_length=1)
    fallbacks: list[TargetConfig] = Field(
        default_factory=list, description="Tried in order when the chosen target fails."
    )
    sticky: bool = Field(True, description="Same `user` (or X-Shipyard-Session) → same target.")
    retry_backoff: float = Field(0.05, ge=0, description="First retry delay in seconds; doubles each retry.")
    prompt: str | None = Field(
        None,
        description="Prompt template rendered server-side, as `name`, `name@alias` (e.g. "
        "`support@production`) or `name@v3`. Clients then send `variables` (and optionally their own "
        "messages, appended after the template).",
    )
    guards: GuardsConfig | None = Field(
        None, description="Input and output guard scanners (prompt injection, PII, secrets, leaks…)."
    )
    public: bool = Field(
        False,
        description="Serve this route on /v1 without an API key. Off by default: clients need a key "
        "(role `client` or above) that is allowed this route.",
    )
    limits: LimitsConfig | None = Field(
        None, description="Rate limits and budgets shared by every caller of this route."
    )
    cache: CacheConfig | None = Field(
        None, description="Answer repeated requests from a response cache (off unless set)."
    )

    @field_validator("targets")
    @classmethod
    def _some_weight(cls, v: list[TargetConfig]) -> list[TargetConfig]:
        if v and sum(t.weight for t in v) <= 0:
            raise ValueError("at least one target needs a weight above 0")
        return v


class PromptMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str = Field(..., description="Jinja2 template text, e.g. `Hello {{ customer_name }}`.")


class PromptConfig(Strict):
    name: Name = Field(..., description="How routes refer to it: `name@alias`.")
    description: str = ""
    messages: list[PromptMessage] = Field(..., min_length=1)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Default request params (temperature, max_tokens…); the client's win.",
    )
    response_schema: dict[str, Any] | None = Field(
        None,
        description="JSON schema the answer must follow; sent as `response_format` when the client "
        "sets none.",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free-form: owner, ticket, notes…")
    aliases: list[str] = Field(
        default_factory=list,
        description="Aliases to create for the version this file defines if they do not exist yet "
        "(existing aliases are moved only deliberately: `shipyard prompts alias set`).",
    )

    @field_validator("aliases")
    @classmethod
    def _alias_names(cls, v: list[str]) -> list[str]:
        import re

        for alias in v:
            if not re.fullmatch(ALIAS_PATTERN, alias) or re.fullmatch(r"v\d+", alias) or alias == "current":
                raise ValueError(
                    f"alias `{alias}` must be letters, digits, `-` or `_`, not `current` and not like `v3`"
                )
        return v


ALIAS_PATTERN = r"[A-Za-z][A-Za-z0-9_-]{0,63}"


class ShipyardConfig(Strict):
    version: Literal[1] = 1
    settings: dict[str, Any] = Field(default_factory=dict)
    providers: list[ProviderConfig] = Field(default_factory=list)
    models: list[ModelConfig] = Field(default_factory=list)
    routes: list[RouteConfig] = Field(default_factory=list)
    prompts: list[PromptConfig] = Field(default_factory=list)
    monitoring: Any = Field(
        default=None,
        description="Online evals, drift checks and alert rules of the server that loads this file "
        "(runtime config like `settings:`; `shipyard apply` ignores it). Its schema belongs to the "
        "monitoring package, which registers it as a config section (`plugins.ConfigSection`): the "
        "checker replaces this value with the parsed section.",
    )

    def model_by_name(self) -> dict[str, ModelConfig]:
        return {m.name: m for m in self.models}

    def provider_by_name(self) -> dict[str, ProviderConfig]:
        return {p.name: p for p in self.providers}
