"""The plan stage: which targets a request will try, in what order (the route's weighted or sticky
choice first, then its fallbacks), whether an embeddings request is small enough to send, and the
body each target gets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipyard.errors import InvalidRequest
from shipyard.gateway.limits import measure_prompt
from shipyard.gateway.stages.cache import OPT_OUT_FIELD
from shipyard.gateway.stages.context import Request
from shipyard.gateway.stages.guards import prepare_call
from shipyard.providers.base import Call
from shipyard.settings import BY_NAME
from shipyard.tracing import semconv as sc

if TYPE_CHECKING:
    from shipyard.gateway.runtime import Target


class Planner:
    """The plan stage, and the per-attempt body it implies (the attempts stage asks for it)."""

    def __init__(self) -> None:
        # Most input tokens one embeddings request may carry (setting `max_embedding_input_tokens`).
        self.max_embedding_tokens: int = BY_NAME["max_embedding_input_tokens"].default

    def plan(self, req: Request) -> None:
        """Fill ``req.plan``. The decision takes microseconds, so it is recorded on the root span
        (the candidates, the first being the one chosen) rather than as a span of its own: at
        millions of traces a span row per request is a tenth of the store."""
        route = req.route
        req.plan = plan = route.plan(req.key)
        attributes = req.root.attributes
        attributes[sc.STICKY] = req.key is not None and route.sticky
        attributes[sc.CANDIDATES] = [t.label for t in plan]
        if req.op == "embeddings":
            self.check_embedding_size(req)
        opt_out = req.body.get(OPT_OUT_FIELD)
        if opt_out is not None and not isinstance(opt_out, bool):
            raise InvalidRequest(
                f"`{OPT_OUT_FIELD}` must be true or false (false: neither read nor store this request in "
                f"the route's response cache); got {type(opt_out).__name__}",
                param=OPT_OUT_FIELD,
            )

    def check_embedding_size(self, req: Request) -> None:
        """Refuse an embeddings request with more input tokens than `max_embedding_input_tokens`.
        Text within the cap as UTF-8 bytes is within it as tokens. Above that, a provider with its
        own tokenizer enforces the cap as it tokenizes (``Call.max_input_tokens``); others are held
        to the bytes, since nothing smaller is certain."""
        cap = self.max_embedding_tokens
        size = measure_prompt("embeddings", req.body)
        if size.bound() <= cap:
            return
        for target in req.plan:
            if not getattr(target.provider, "exact_token_count", False):
                raise InvalidRequest(
                    f"`input` is {size.bound():,} bytes of text and token ids, which may be as many tokens "
                    f"(model `{target.label}` has no tokenizer here to count them exactly); one embeddings "
                    f"request may carry at most {cap:,} tokens (setting `max_embedding_input_tokens`): "
                    "split it into several requests",
                    param="input",
                )

    def call(self, req: Request, target: Target) -> Call:
        """The call this target gets: the model's defaults < the prompt's params < the client's
        < the target's params; on prompt routes, the rendered template before the client's
        messages; then the guards' per-attempt changes (a canary in the system prompt)."""
        op, body, trace = req.op, req.body, req.trace
        prompt = target.prompt if op == "chat" else None
        if prompt is not None:
            variables = body.get("variables") or {}
            messages = prompt.render(variables) + list(body.get("messages") or [])
            defaults = {**target.model.params, **prompt.params}
            if prompt.response_schema is not None and "response_format" not in body:
                defaults["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": prompt.name, "schema": prompt.response_schema},
                }
            merged = {**defaults, **body, **target.params, "messages": messages}
            trace.input = messages
            trace.prompt, trace.prompt_version = prompt.name, prompt.version
            if variables:
                trace.attributes["shipyard.variables"] = variables
        elif op == "chat" and not body.get("messages"):
            what = "is required" if body.get("messages") is None else "must contain at least one message"
            raise InvalidRequest(
                f'`messages` {what}: an array like [{{"role": "user", "content": "Hi"}}] '
                f"(route `{trace.route}` has no prompt template to build them from `variables`)",
                param="messages",
            )
        elif target.model.params or target.params:
            merged = {**target.model.params, **body, **target.params}
        else:
            merged = dict(body)
        merged.pop("variables", None)  # Shipyard's own fields: never sent upstream
        merged.pop(OPT_OUT_FIELD, None)
        merged["model"] = target.provider_model
        call = Call(body=merged, model=target.provider_model, timeout=target.timeout, user=req.key)
        if op == "embeddings":
            call.max_input_tokens = self.max_embedding_tokens
        prepare_call(req, call)
        return call
