"""The OpenAPI entries of ``POST /v1/messages`` (Anthropic's Messages API on the gateway), which
:mod:`shipyard.gateway.openapi` adds to the gateway's schema. They say what
:mod:`shipyard.gateway.anthropic_messages` accepts and answers: its required fields and bounds,
and errors in Anthropic's envelope rather than OpenAI's."""

from __future__ import annotations

from typing import Any

from shipyard.gateway.anthropic_messages import MAX_BLOCKS, MAX_STOP_SEQUENCES, MAX_TOOLS

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref("AnthropicError")}},
    }
    if headers:
        out["headers"] = headers
    return out


def schemas() -> dict[str, Any]:
    text_block = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    }
    block = {
        "type": "object",
        "required": ["type"],
        "description": "text; tool_use (assistant); tool_result (user). Images, documents and "
        "thinking blocks are refused with a 400 naming the block.",
        "properties": {
            "type": {"type": "string"},
            "text": {"type": "string"},
            "id": {"type": "string"},
            "name": {"type": "string"},
            "input": {"type": "object"},
            "tool_use_id": {"type": "string"},
            "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": text_block}]},
            "is_error": {"type": "boolean"},
        },
    }
    request = {
        "type": "object",
        "required": ["model", "max_tokens", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "description": "The route to call."},
            "max_tokens": {"type": "integer", "minimum": 1},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {
                        "role": {"enum": ["user", "assistant"]},
                        "content": {
                            "anyOf": [
                                {"type": "string"},
                                {"type": "array", "maxItems": MAX_BLOCKS, "items": block},
                            ]
                        },
                    },
                },
            },
            "system": {"anyOf": [{"type": "string"}, {"type": "array", "items": text_block}]},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "top_k": {"type": "integer", "minimum": 0},
            "stop_sequences": {
                "type": "array",
                "maxItems": MAX_STOP_SEQUENCES,
                "items": {"type": "string", "minLength": 1},
            },
            "stream": {"type": "boolean", "description": "Answer as Anthropic's server-sent events."},
            "tools": {
                "type": "array",
                "maxItems": MAX_TOOLS,
                "items": {
                    "type": "object",
                    "required": ["name", "input_schema"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "description": {"type": "string"},
                        "input_schema": {"type": "object"},
                    },
                },
            },
            "tool_choice": {
                "type": "object",
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["auto", "any", "tool", "none"]},
                    "name": {"type": "string"},
                    "disable_parallel_tool_use": {"type": "boolean"},
                },
            },
            "metadata": {
                "type": "object",
                "properties": {"user_id": {"type": "string", "description": "The sticky-routing key."}},
            },
            "service_tier": {"type": "string", "description": "Accepted and ignored."},
        },
        "additionalProperties": False,
    }
    content_out = {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"enum": ["text", "tool_use"]},
            "text": {"type": "string"},
            "id": {"type": "string"},
            "name": {"type": "string"},
            "input": {"type": "object"},
        },
    }
    message = {
        "type": "object",
        "required": ["id", "type", "role", "content", "model", "stop_reason", "stop_sequence", "usage"],
        "properties": {
            "id": {"type": "string"},
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "content": {"type": "array", "items": content_out},
            "model": {"type": "string"},
            "stop_reason": {
                "anyOf": [
                    {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]},
                    {"type": "null"},
                ]
            },
            "stop_sequence": {"type": ["string", "null"]},
            "usage": {
                "type": "object",
                "required": ["input_tokens", "output_tokens"],
                "properties": {
                    "input_tokens": {"type": "integer", "minimum": 0},
                    "output_tokens": {"type": "integer", "minimum": 0},
                },
            },
        },
    }
    event = {
        "type": "object",
        "required": ["type"],
        "description": "message_start, content_block_start, ping, content_block_delta, "
        "content_block_stop, message_delta, message_stop; or error.",
        "properties": {"type": {"type": "string"}},
    }
    error = {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {
                    "type": {
                        "enum": [
                            "invalid_request_error",
                            "authentication_error",
                            "permission_error",
                            "not_found_error",
                            "request_too_large",
                            "rate_limit_error",
                            "api_error",
                            "overloaded_error",
                        ]
                    },
                    "message": {"type": "string"},
                },
            },
        },
    }
    return {
        "MessagesRequest": request,
        "Message": message,
        "MessageStreamEvent": event,
        "AnthropicError": error,
    }


def path(trace_headers: dict[str, Any], retry_after: dict[str, Any]) -> dict[str, Any]:
    stream_event = {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": {"type": "string"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": _ref("MessageStreamEvent"),
            },
        },
    }
    return {
        "post": {
            "operationId": "createMessage",
            "tags": ["gateway"],
            "summary": "Anthropic Messages API through a route",
            "description": "For the official `anthropic` client: `model` names a route, which runs as "
            "on /v1/chat/completions (guards, limits, cache, fallbacks, trace). The key is accepted as "
            "`x-api-key` or `Authorization: Bearer`. Errors use Anthropic's envelope.",
            "security": [{"bearerAuth": []}, {"anthropicKey": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": _ref("MessagesRequest"),
                        "examples": {
                            "message": {
                                "summary": "A question to a route",
                                "value": {
                                    "model": "chat",
                                    "max_tokens": 64,
                                    "system": "Be brief.",
                                    "messages": [{"role": "user", "content": "Where is berth 4?"}],
                                },
                            }
                        },
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "The answer.",
                    "headers": trace_headers,
                    "content": {
                        "application/json": {"schema": _ref("Message")},
                        "text/event-stream": {
                            "schema": stream_event,
                            "description": "With `stream: true`: `event: NAME` / `data: {json}` pairs.",
                        },
                    },
                },
                "400": _error("Malformed, or a field Shipyard does not translate (named in the message)."),
                "401": _error("No API key, or one that is unknown, revoked or expired."),
                "403": _error("The key's role or route scope does not allow this route."),
                "404": _error("No route of that name (`not_found_error`)."),
                "413": _error("The body is larger than the setting `max_body_bytes`."),
                "422": _error("The route's output guard refused the model's answer."),
                "429": _error("A rate limit or budget is spent (`rate_limit_error`).", retry_after),
                "502": _error("Every target of the route failed (`api_error`)."),
                "503": _error("The provider is not loaded or cannot be reached (`overloaded_error`)."),
                "504": _error("The provider did not answer in time (`api_error`)."),
            },
        }
    }


SECURITY_SCHEME = {
    "type": "apiKey",
    "in": "header",
    "name": "x-api-key",
    "description": "A Shipyard API key, as the anthropic client sends it (/v1/messages only).",
}
