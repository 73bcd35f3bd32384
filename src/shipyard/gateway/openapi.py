"""The OpenAPI 3.1 schema of the gateway: the OpenAI-compatible ``/v1`` endpoints, the OTLP trace
receiver and the health probes, served at ``GET /v1/openapi.json``.

The gateway validates by hand (:mod:`shipyard.gateway.validation`), so this schema is written by
hand too and must say what that module accepts: the same required fields, types and ranges, and
unknown fields allowed (they pass through to OpenAI-compatible upstreams). ``tests/test_schemathesis``
generates requests from it and checks the answers against it, which keeps the two in step.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from shipyard import __version__
from shipyard.gateway import anthropic_openapi
from shipyard.gateway.validation import MAX_EMBEDDING_DIMENSIONS, ROLES

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_ref("Error"), description, headers)


_TRACE_HEADERS = {
    "x-shipyard-trace-id": {
        "description": "The trace of this request (send it to POST /api/feedback to rate the answer).",
        "schema": {"type": "string"},
    },
    "x-shipyard-route": {"description": "The route that served the request.", "schema": {"type": "string"}},
    "x-shipyard-target": {
        "description": "The target (model, prompt version) that answered.",
        "schema": {"type": "string"},
    },
}

_RETRY_AFTER = {
    "retry-after": {
        "description": "Seconds until the limit or budget allows the request again.",
        "schema": {"type": "integer", "minimum": 0},
    }
}

# What every authenticated /v1 operation may answer besides its success.
_CLIENT_ERRORS: dict[str, Any] = {
    "400": _error("The request is malformed: the message names the field and the fix."),
    "401": _error("No API key, or one that is unknown, revoked or expired (`invalid_api_key`)."),
    "403": _error("The key's role or route scope does not allow this route (`permission_denied`)."),
    "404": _error("No route or embedding model of that name (`model_not_found`); GET /v1/models lists them."),
    "413": _error("The body is larger than the setting `max_body_bytes` (`request_too_large`)."),
    "422": _error("The route's output guard refused the model's answer (`guard_blocked_output`)."),
    "429": _error("A rate limit or budget is spent (`rate_limit_exceeded`).", _RETRY_AFTER),
}

# Failures of the upstream a route calls, after its retries and fallbacks; the test servers'
# mock providers never fail, so a 5xx there is a bug.
_UPSTREAM_ERRORS: dict[str, Any] = {
    "502": _error("Every target of the route failed (`upstream_error`)."),
    "503": _error("The provider is not loaded or cannot be reached (`upstream_unavailable`)."),
    "504": _error("The provider did not answer in time (`upstream_timeout`)."),
}

_NUMBER_PARAMS = {
    "temperature": (0, 2, "Sampling temperature."),
    "top_p": (0, 1, "Nucleus sampling mass."),
    "frequency_penalty": (-2, 2, "Penalty on tokens by how often they appeared."),
    "presence_penalty": (-2, 2, "Penalty on tokens that appeared at all."),
}


def _sampling_params() -> dict[str, Any]:
    """The request fields that chat and completions share (validation._common)."""
    props: dict[str, Any] = {
        "model": {
            "type": "string",
            "minLength": 1,
            "description": "The route (or model alias) to call; GET /v1/models lists them.",
        },
        "stream": {"type": "boolean", "description": "Answer as server-sent events."},
        "stream_options": {
            "type": "object",
            "properties": {
                "include_usage": {"type": "boolean", "description": "Send a last chunk with `usage`."}
            },
        },
        "user": {"type": "string", "description": "End-user id; also the sticky-routing key."},
        "stop": {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            "description": "Where the model stops generating.",
        },
    }
    for name, (lo, hi, help_) in _NUMBER_PARAMS.items():
        props[name] = {"type": "number", "minimum": lo, "maximum": hi, "description": help_}
    for name in ("max_tokens", "max_completion_tokens", "n"):
        props[name] = {"type": "integer", "minimum": 1}
    return props


def _schemas() -> dict[str, Any]:
    content_part = {
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"type": "string", "description": "text, image_url, input_audio, ..."}},
        "additionalProperties": True,
    }
    message = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "enum": list(ROLES)},
            "content": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": _ref("ContentPart")},
                    {"type": "null"},
                ],
                "description": "Required, except on an assistant message that carries `tool_calls` "
                "or `function_call`.",
            },
            "name": {"type": "string"},
            "tool_calls": {"type": "array", "items": {"type": "object"}},
            "tool_call_id": {"type": "string"},
            "function_call": {"type": "object"},
        },
        "anyOf": [
            {
                "required": ["content"],
                "properties": {"content": {"type": ["string", "array"]}},
            },
            {
                "required": ["tool_calls"],
                "properties": {"role": {"const": "assistant"}, "tool_calls": {"minItems": 1}},
            },
            {
                "required": ["function_call"],
                "properties": {"role": {"const": "assistant"}, "function_call": {"minProperties": 1}},
            },
        ],
        "additionalProperties": True,
    }
    chat_request = {
        "type": "object",
        "required": ["model"],
        "properties": {
            **_sampling_params(),
            "messages": {
                "type": "array",
                "items": _ref("ChatMessage"),
                "description": "The conversation. May be left out on a route with a prompt template, "
                "which builds the messages from `variables`; otherwise at least one message.",
            },
            "variables": {
                "type": "object",
                "description": "Shipyard's own field: the prompt template's variables (never sent upstream).",
            },
        },
        "additionalProperties": True,
    }
    completion_request = {
        "type": "object",
        "required": ["model", "prompt"],
        "properties": {
            **_sampling_params(),
            "prompt": {
                "anyOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    },
                ],
                "description": "The text to continue, or a batch of texts (or token ids).",
            },
        },
        "additionalProperties": True,
    }
    embedding_input_item = {
        "anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "array"}],
        "description": "A text, a token id, or an array of token ids.",
    }
    embeddings_request = {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {
                "type": "string",
                "minLength": 1,
                "description": "An embedding model or route; GET /v1/models lists them.",
            },
            "input": {
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "minItems": 1, "items": embedding_input_item},
                ]
            },
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1, "maximum": MAX_EMBEDDING_DIMENSIONS},
            "user": {"type": "string"},
        },
        "additionalProperties": True,
    }
    usage = {
        "type": "object",
        "required": ["prompt_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": {"type": "integer", "minimum": 0},
            "completion_tokens": {"type": "integer", "minimum": 0},
            "total_tokens": {"type": "integer", "minimum": 0},
        },
    }
    finish_reason = {"type": ["string", "null"], "description": "stop, length, tool_calls, content_filter"}
    chat_completion = _envelope(
        "chat.completion",
        ["index", "message", "finish_reason"],
        {
            "message": {
                "type": "object",
                "required": ["role"],
                "properties": {
                    "role": {"const": "assistant"},
                    "content": {"type": ["string", "null"]},
                    "refusal": {"type": ["string", "null"]},
                    "tool_calls": {"type": "array", "items": {"type": "object"}},
                },
            },
            "finish_reason": finish_reason,
            "logprobs": {"type": ["object", "null"]},
        },
    )
    completion = _envelope(
        "text_completion",
        ["index", "text", "finish_reason"],
        {
            "text": {"type": "string"},
            "finish_reason": finish_reason,
            "logprobs": {"type": ["object", "null"]},
        },
    )
    chat_chunk = _envelope(
        "chat.completion.chunk",
        ["index", "delta"],
        {
            "delta": {
                "type": "object",
                "properties": {
                    "role": {"const": "assistant"},
                    "content": {"type": ["string", "null"]},
                },
            },
            "finish_reason": finish_reason,
        },
        streamed=True,
    )
    completion_chunk = _envelope(
        "text_completion",
        ["index", "text"],
        {"text": {"type": "string"}, "finish_reason": finish_reason},
        streamed=True,
    )
    embeddings = {
        "type": "object",
        "required": ["object", "data", "model"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["object", "index", "embedding"],
                    "properties": {
                        "object": {"const": "embedding"},
                        "index": {"type": "integer", "minimum": 0},
                        "embedding": {
                            "anyOf": [
                                {"type": "array", "items": {"type": "number"}},
                                {"type": "string", "description": "base64 of little-endian float32s"},
                            ]
                        },
                    },
                },
            },
            "model": {"type": "string"},
            "usage": _ref("Usage"),
        },
    }
    model = {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string", "description": "What to send as `model`."},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            "shipyard": {
                "type": "object",
                "description": "Shipyard's details: `type` route or embedding_model, its kind, targets, "
                "fallbacks and prompt versions.",
                "required": ["type", "kind"],
                "properties": {
                    "type": {"type": "string", "enum": ["route", "embedding_model"]},
                    "kind": {"type": "string"},
                },
            },
        },
    }
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string", "description": "What is wrong and how to fix it."},
                    "type": {"type": "string", "description": "invalid_request_error, rate_limit_error, ..."},
                    "param": {"type": ["string", "null"], "description": "The request field at fault."},
                    "code": {
                        "type": ["string", "null"],
                        "description": "A stable code, e.g. model_not_found.",
                    },
                },
            }
        },
    }
    otlp_status = {
        "type": "object",
        "description": "A google.rpc.Status, as OTLP/HTTP answers errors.",
        "required": ["code", "message"],
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
    }
    otlp_request = {
        "type": "object",
        "description": "An ExportTraceServiceRequest in OTLP/JSON (hex trace and span ids, enum integers).",
        "properties": {
            "resourceSpans": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "resource": {"type": "object"},
                        "scopeSpans": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "scope": {"type": "object"},
                                    "spans": {"type": "array", "items": {"type": "object"}},
                                },
                            },
                        },
                    },
                },
            }
        },
    }
    otlp_response = {
        "type": "object",
        "description": "An ExportTraceServiceResponse; `partialSuccess` counts the spans refused.",
        "properties": {
            "partialSuccess": {
                "type": "object",
                "properties": {
                    "rejectedSpans": {"type": ["string", "integer"]},
                    "errorMessage": {"type": "string"},
                },
            }
        },
    }
    return {
        "ChatMessage": message,
        "ContentPart": content_part,
        "ChatCompletionRequest": chat_request,
        "CompletionRequest": completion_request,
        "EmbeddingsRequest": embeddings_request,
        "Usage": usage,
        "ChatCompletion": chat_completion,
        "Completion": completion,
        "ChatCompletionChunk": chat_chunk,
        "CompletionChunk": completion_chunk,
        "Embeddings": embeddings,
        "Model": model,
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}},
        },
        "Error": error,
        "OtlpStatus": otlp_status,
        "OtlpExportRequest": otlp_request,
        "OtlpExportResponse": otlp_response,
    }


def _sse_event(chunk: str) -> dict[str, Any]:
    """One server-sent event of a streamed answer (OpenAPI 3.1 has `schema` describe each event):
    a JSON chunk, an error in the gateway's error shape (a failure after the stream began), or the
    closing `[DONE]`."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"anyOf": [_ref(chunk), _ref("Error")]},
                    },
                ]
            },
        },
    }


# Request examples (the route names are the ones in tests/test_schemathesis.py, which sends them).
_CHAT_EXAMPLES = {
    "chat": {
        "summary": "Messages to a route",
        "value": {
            "model": "chat",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Where is berth 4?"},
            ],
            "temperature": 0.2,
            "max_tokens": 64,
        },
    },
    "streamed": {
        "summary": "Streamed, with usage in the last chunk",
        "value": {
            "model": "chat",
            "messages": [{"role": "user", "content": "When is high tide?"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    },
    "template": {
        "summary": "A route with a prompt template: variables instead of messages",
        "value": {"model": "support", "variables": {"question": "Where can I park?"}},
    },
}
_COMPLETION_EXAMPLES = {
    "completion": {
        "summary": "Continue a text",
        "value": {"model": "chat", "prompt": "The ship sails at", "max_tokens": 8},
    },
    "streamed": {
        "summary": "Streamed",
        "value": {"model": "chat", "prompt": ["Gulls circle over"], "stream": True},
    },
}
_EMBEDDING_EXAMPLES = {
    "batch": {"summary": "Several texts", "value": {"model": "text-embed", "input": ["harbour", "tide"]}},
}


def _generate(
    operation_id: str,
    summary: str,
    request: str,
    answer: str,
    chunk: str | None,
    description: str,
    examples: dict[str, Any],
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _ref(answer)}}
    if chunk is not None:
        content["text/event-stream"] = {
            "schema": _sse_event(chunk),
            "description": "With `stream: true`: `data: {chunk}` events, ending with `data: [DONE]`.",
        }
    return {
        "post": {
            "operationId": operation_id,
            "tags": ["gateway"],
            "summary": summary,
            "description": description,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(request), "examples": examples}},
            },
            "responses": {
                "200": {"description": "The answer.", "headers": _TRACE_HEADERS, "content": content},
                **_CLIENT_ERRORS,
                **_UPSTREAM_ERRORS,
            },
        }
    }


def _paths() -> dict[str, Any]:
    public: list[dict[str, Any]] = []  # no key needed: probes that orchestrators call
    not_found = _error("No route or embedding model of that name.")
    return {
        "/v1/chat/completions": _generate(
            "createChatCompletion",
            "Chat completion through a route",
            "ChatCompletionRequest",
            "ChatCompletion",
            "ChatCompletionChunk",
            "`model` names a route: it picks the target (split, canary, fallbacks), renders its prompt "
            "version, runs its guards and limits, and records a trace.",
            _CHAT_EXAMPLES,
        ),
        "/v1/completions": _generate(
            "createCompletion",
            "Text completion through a route",
            "CompletionRequest",
            "Completion",
            "CompletionChunk",
            "The legacy completions API, routed like chat.",
            _COMPLETION_EXAMPLES,
        ),
        "/v1/embeddings": _generate(
            "createEmbeddings",
            "Embeddings from an embedding model or route",
            "EmbeddingsRequest",
            "Embeddings",
            None,
            "One vector per input, in order.",
            _EMBEDDING_EXAMPLES,
        ),
        "/v1/messages": anthropic_openapi.path(_TRACE_HEADERS, _RETRY_AFTER),
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "tags": ["gateway"],
                "summary": "Routes and embedding models this gateway serves",
                "responses": {
                    "200": _json(_ref("ModelList"), "Every route and embedding model."),
                    "401": _CLIENT_ERRORS["401"],
                },
            }
        },
        "/v1/models/{name}": {
            "get": {
                "operationId": "getModel",
                "tags": ["gateway"],
                "summary": "One route or embedding model",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                        "description": "A route or embedding model name (may contain `/`).",
                    }
                ],
                "responses": {
                    "200": _json(_ref("Model"), "The route or embedding model."),
                    "401": _CLIENT_ERRORS["401"],
                    "404": not_found,
                },
            }
        },
        "/v1/traces": {
            "post": {
                "operationId": "exportTraces",
                "tags": ["otlp"],
                "summary": "OTLP/HTTP trace receiver",
                "description": "Spans from any OpenTelemetry SDK, as `application/x-protobuf` or "
                "`application/json`, optionally gzip or deflate encoded. GenAI spans become traces in "
                "the dashboard. Errors are google.rpc.Status objects, as OTLP/HTTP specifies.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("OtlpExportRequest")},
                        "application/x-protobuf": {
                            "schema": {"type": "string", "format": "binary"},
                            "description": "An ExportTraceServiceRequest message.",
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "Stored; `partialSuccess` counts spans that were not.",
                        "content": {
                            "application/json": {"schema": _ref("OtlpExportResponse")},
                            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    "400": _json(_ref("OtlpStatus"), "The body is not a valid export request."),
                    # Refused before the OTLP receiver reads the body, so in the gateway's error shape.
                    "401": _CLIENT_ERRORS["401"],
                    "403": _error("The key's role may not send traces (it needs `client` or above)."),
                    "413": _json(_ref("OtlpStatus"), "Larger than `otlp_max_body_bytes`."),
                    "415": _json(_ref("OtlpStatus"), "Not protobuf or JSON, or an unknown encoding."),
                    "503": _json(
                        _ref("OtlpStatus"),
                        "The store is unavailable; exporters retry after `Retry-After`.",
                        _RETRY_AFTER,
                    ),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "tags": ["probes"],
                "summary": "Liveness: the process answers",
                "security": public,
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status", "version", "uptime_s"],
                            "properties": {
                                "status": {"const": "ok"},
                                "version": {"type": "string"},
                                "uptime_s": {"type": "number", "minimum": 0},
                                "worker": {
                                    "type": "integer",
                                    "minimum": 0,
                                    "description": "Which worker of `shipyard up --workers N` answered "
                                    "(1..N); 0 for a single process.",
                                },
                            },
                        },
                        "Alive.",
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "tags": ["probes"],
                "summary": "Readiness: the store is open and every provider is loaded",
                "security": public,
                "responses": {
                    "200": _json(_ref("Readiness"), "Ready to serve."),
                    "503": _json(_ref("Readiness"), "Not ready (starting, or a provider failed to load)."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "tags": ["probes"],
                "summary": "Prometheus metrics",
                "description": "Text exposition format, or OpenMetrics when the Accept header asks.",
                "security": public,
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
    }


_READINESS = {
    "type": "object",
    "required": ["status", "store", "providers"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not ready"]},
        "store": {"type": "string", "enum": ["ok", "not open"]},
        "registry_revision": {"type": ["integer", "string", "null"]},
        "reload_error": {"type": ["string", "null"]},
        "providers": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["ready"],
                "properties": {"ready": {"type": "boolean"}, "detail": {"type": "string"}},
            },
        },
        "trace_queue": {"type": "integer", "minimum": 0},
        "in_flight": {"type": "integer", "minimum": 0},
    },
}


@functools.cache
def _build() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Shipyard gateway",
            "version": __version__,
            "description": "OpenAI-compatible endpoints, the OTLP trace receiver and health probes. "
            'Errors on /v1 use OpenAI\'s shape `{"error": {message, type, param, code}}`. The admin '
            "API has its own schema at /api/openapi.json.",
        },
        "security": [{"bearerAuth": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Shipyard API key, `sk-shp-` followed by 40 letters and digits.",
                },
                "anthropicKey": anthropic_openapi.SECURITY_SCHEME,
            },
            "schemas": {**_schemas(), **anthropic_openapi.schemas(), "Readiness": _READINESS},
        },
    }


def gateway_schema() -> dict[str, Any]:
    """The gateway's OpenAPI 3.1 schema (a fresh copy: callers may change it)."""
    return copy.deepcopy(_build())


def _envelope(
    object_name: str, required: list[str], choice: dict[str, Any], streamed: bool = False
) -> dict[str, Any]:
    """An OpenAI answer: id, object, created, model, choices of one shape, usage. Streamed chunks
    may have no choices (the last one, carrying `usage` when asked) and a null `usage`."""
    choices: dict[str, Any] = {
        "type": "array",
        "items": {
            "type": "object",
            "required": required,
            "properties": {"index": {"type": "integer", "minimum": 0}, **choice},
        },
    }
    if streamed:
        choices["description"] = "Empty in the last chunk, which carries `usage` when asked."
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": object_name},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": choices,
            "usage": {"anyOf": [_ref("Usage"), {"type": "null"}]} if streamed else _ref("Usage"),
        },
    }
