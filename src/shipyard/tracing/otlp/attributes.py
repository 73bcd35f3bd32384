"""The attribute names OTLP ingest reads and writes on spans, beyond those in ``semconv``.

Ingest stores every span's attributes as sent, plus a few of its own (``otel.*``) for what the spans
table has no column for; mapping a trace from its stored spans reads them back, along with the
GenAI names older or other instrumentations use.
"""

from __future__ import annotations

# Attributes Shipyard adds to ingested spans (the spans table has no columns for them). They keep
# what is needed to recompute a trace from its stored spans: kind, scope, explicit status, events.
KIND_ATTR = "otel.span_kind"
SCOPE_ATTR = "otel.scope.name"
STATUS_CODE_ATTR = "otel.status_code"
STATUS_DESCRIPTION_ATTR = "otel.status_description"
EVENTS_ATTR = "otel.events"

# GenAI attribute names beyond those the gateway itself sets (semconv.py).
USAGE_PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"  # before semconv 1.27
USAGE_COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
LEGACY_PROMPT = "gen_ai.prompt"  # indexed: gen_ai.prompt.0.role / .content; or a JSON event attribute
LEGACY_COMPLETION = "gen_ai.completion"
MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
CHOICE_EVENT = "gen_ai.choice"
PROMPT_EVENT = "gen_ai.content.prompt"  # semconv 1.26 span events
COMPLETION_EVENT = "gen_ai.content.completion"
USER_ATTRS = ("user.id", "enduser.id")
HTTP_STATUS_ATTRS = ("http.response.status_code", "http.status_code")
