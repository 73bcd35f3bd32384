"""What a model costs, and where that figure comes from.

In order, the first that applies:

1. **config**: the model's own `pricing:` in the config or registry (USD per million input and
   output tokens). Always wins, also when it says 0 (a model you do not pay per token for).
2. **catalogue**: the `genai-prices` package's data (maintained by Pydantic from providers' price
   pages; the snapshot that comes with the installed version, never fetched at run time) for a model
   of a provider it recognises by its API URL (`https://api.openai.com/v1`, Groq, Mistral,
   Together, Anthropic's and Google's OpenAI-compatible endpoints…). Tiered and dated prices are
   applied as the catalogue defines them, per request.
3. **local**: models served in this process or its model workers (the embedded model, WordLlama,
   the mock provider): nothing to pay per token.
4. **unpriced**: anything else (a self-hosted server, a model the catalogue does not know): cost 0,
   and `shipyard models prices` says so, so that a budget on such a route is visibly meaningless.

Traces record the source next to the cost (``shipyard.cost.source`` on the answering attempt), and
budgets reserve and settle with the same :class:`Price`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shipyard.config.schema import ModelConfig, Pricing
from shipyard.redact import strip_userinfo

log = logging.getLogger("shipyard.providers")

LOCAL_TYPES = frozenset({"local", "wordllama", "mock"})


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price: ``cost()`` per request, ``source`` for people."""

    source: str  # config | catalogue | local | unpriced
    detail: str  # e.g. "genai-prices 0.2.5: openai/gpt-4o-mini"
    pricing: Pricing | None = None  # flat prices (config, or a catalogue model's current tier)
    catalogue: tuple[Any, Any] | None = field(default=None, repr=False)  # (genai-prices Provider, ModelInfo)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        if self.catalogue is not None:
            from genai_prices import Usage

            provider, model = self.catalogue
            calc = model.calc_price(
                Usage(input_tokens=input_tokens, output_tokens=output_tokens),
                provider,
                genai_request_timestamp=datetime.now(UTC),
            )
            return float(calc.total_price)
        if self.pricing is not None:
            return self.pricing.cost(input_tokens, output_tokens)
        return 0.0

    @property
    def input_per_mtok(self) -> float:
        return self.pricing.input_per_mtok if self.pricing is not None else 0.0

    @property
    def output_per_mtok(self) -> float:
        return self.pricing.output_per_mtok if self.pricing is not None else 0.0


def _flat(value: Any) -> float:
    """A catalogue price field as one number: a tiered price's first (base) tier."""
    if value is None:
        return 0.0
    base = getattr(value, "base", None)
    return float(base if base is not None else value)


def catalogue_price(
    provider_model: str, base_url: str | None, provider_id: str | None = None
) -> Price | None:
    """The catalogue's price of ``provider_model`` at the provider whose API is ``base_url`` (or
    whose catalogue id is ``provider_id``)."""
    try:
        import genai_prices
        from genai_prices import data_snapshot
    except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
        return None
    try:
        provider, model = data_snapshot.get_snapshot().find_provider_model(
            provider_model, None, None, base_url
        )
    except LookupError:
        return None
    current = model.get_prices(datetime.now(UTC))
    flat = Pricing(
        input_per_mtok=_flat(getattr(current, "input_mtok", None)),
        output_per_mtok=_flat(getattr(current, "output_mtok", None)),
    )
    detail = f"genai-prices {genai_prices.__version__}: {provider.id}/{model.id}"
    return Price("catalogue", detail, flat, (provider, model))


def resolve(model: ModelConfig, provider_type: str, base_url: str | None) -> Price:
    """The price of ``model``, served by a provider of ``provider_type`` at ``base_url``."""
    if "pricing" in model.model_fields_set:
        return Price("config", "the model's `pricing:`", model.pricing)
    if model.price_as:
        provider_id, _, name = model.price_as.partition("/")
        found = catalogue_price(name, None, provider_id)
        if found is not None:
            return found
        return Price(
            "unpriced",
            f"`price_as: {model.price_as}` is not in the price catalogue: check the name",
            Pricing(),
        )
    if provider_type in LOCAL_TYPES:
        return Price("local", f"served locally ({provider_type}): nothing to pay per token", Pricing())
    if base_url:
        found = catalogue_price(model.provider_model, base_url)
        if found is not None:
            return found
    where = f" at {strip_userinfo(base_url)}" if base_url else ""
    return Price(
        "unpriced",
        f"`{model.provider_model}`{where} is not in the price catalogue: set `pricing:` on the model",
        Pricing(),
    )
