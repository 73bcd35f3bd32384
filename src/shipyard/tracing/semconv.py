"""OpenTelemetry GenAI semantic-convention attribute names used on Shipyard's spans.

See https://opentelemetry.io/docs/specs/semconv/gen-ai/ — names are kept in one place so the
gateway, the OTLP ingest and the exporter agree.
"""

OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"  # older name of gen_ai.provider.name, still sent by many instrumentations
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_STOP = "gen_ai.request.stop_sequences"
REQUEST_SEED = "gen_ai.request.seed"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"

# Shipyard's own attributes (namespaced so they never collide with the conventions).
ROUTE = "shipyard.route"
TARGET = "shipyard.target"
ATTEMPT = "shipyard.attempt"
TTFT_MS = "shipyard.ttft_ms"
COST_USD = "shipyard.cost_usd"
COST_SOURCE = "shipyard.cost.source"  # on the answering attempt: config | catalogue | local | unpriced
STREAM = "shipyard.stream"
STICKY = "shipyard.sticky"
CANDIDATES = "shipyard.candidates"
# The text the model was actually given, where the provider built it from the messages (a local
# model's prompt format): on the attempt span, stored under the `capture_messages` policy.
PROMPT_RENDERED = "shipyard.prompt.rendered"

REQUEST_PARAMS = {
    "temperature": REQUEST_TEMPERATURE,
    "top_p": REQUEST_TOP_P,
    "max_tokens": REQUEST_MAX_TOKENS,
    "max_completion_tokens": REQUEST_MAX_TOKENS,
    "stop": REQUEST_STOP,
    "seed": REQUEST_SEED,
}

# Who called: on the trace (not a span), from the API key that authenticated the request.
KEY_ID = "shipyard.key.id"
KEY_NAME = "shipyard.key.name"
# Guard spans (guard/pipeline.py): `input` or `output`.
GUARD_STAGE = "guard.stage"
# The response cache's marks on the root span: the same names as gateway/stages/cache.py's
# HIT_ATTR, SOURCE_ATTR, SAVED_USD_ATTR and SAVED_TOKENS_ATTR (tests/test_breakdown.py pins them),
# named here too because the store, which reads them into the performance rollups, sits below the
# gateway.
CACHE_HIT = "shipyard.cache.hit"
CACHE_SOURCE_TRACE = "shipyard.cache.source_trace"
CACHE_SAVED_USD = "shipyard.cache.saved_usd"
CACHE_SAVED_TOKENS = "shipyard.cache.saved_tokens"
