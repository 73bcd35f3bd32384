"""Where attacks go: the route in this process (through the gateway service, guards on) or a
running gateway over HTTP (with the official ``openai`` client, as applications call it).

A target answers with the text, or raises :class:`Blocked` (a guard refused: the attack is
defeated), :class:`AttackFailed` (no answer: excluded from the rates) or
:class:`~shipyard.redteam.core.RedteamAborted` (the run cannot go on).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from shipyard.content import content_text
from shipyard.errors import ShipyardError
from shipyard.redteam.core import RedteamAborted

if TYPE_CHECKING:
    from shipyard.gateway.service import Gateway


class Blocked(Exception):
    """A guard refused the request or the answer."""

    def __init__(self, scanner: str, kind: str, stage: str, message: str) -> None:
        super().__init__(message)
        self.scanner, self.kind, self.stage, self.message = scanner, kind, stage, message


class AttackFailed(Exception):
    """The attack got no answer (provider error, timeout): excluded from the rates."""


_GUARD_RE = re.compile(r"blocked by guard `(?P<scanner>[^`]+)`(?: on route `[^`]*`)?: (?P<kind>[\w.-]+)")
GUARD_CODES = {"guard_blocked": "input", "guard_blocked_output": "output"}


def blocked_from(code: str | None, message: str) -> Blocked | None:
    """A :class:`Blocked` for a gateway guard error (code and message as the gateway sends them)."""
    stage = GUARD_CODES.get(code or "")
    if stage is None:
        return None
    m = _GUARD_RE.search(message)
    return Blocked(m.group("scanner") if m else "unknown", m.group("kind") if m else "", stage, message)


class Target(Protocol):
    """Where attacks go: ``send`` returns the answer text or raises Blocked / AttackFailed /
    RedteamAborted."""

    description: str

    async def send(self, messages: list[dict[str, Any]], headers: dict[str, str]) -> str: ...


def _answer_text(body: Mapping[str, Any]) -> str:
    choices = body.get("choices") or []
    if not choices or not isinstance(choices[0], Mapping):
        return ""
    message = choices[0].get("message") or {}
    return content_text(message.get("content"), "") if isinstance(message, Mapping) else ""


class GatewayTarget:
    """The route served in this process by :class:`shipyard.gateway.service.Gateway`."""

    def __init__(self, gateway: Gateway, route: str, max_tokens: int | None = None) -> None:
        self.gateway = gateway
        self.route = route
        self.max_tokens = max_tokens
        self.description = f"route `{route}` in process"

    async def send(self, messages: list[dict[str, Any]], headers: dict[str, str]) -> str:
        body: dict[str, Any] = {"model": self.route, "messages": messages}
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        try:
            answer = await self.gateway.complete("chat", body, headers)
        except ShipyardError as exc:
            blocked = blocked_from(exc.code, exc.message)
            if blocked is not None:
                raise blocked from None
            if exc.status in (401, 403, 404):
                raise RedteamAborted(f"route `{self.route}`: {exc.message}") from None
            raise AttackFailed(f"HTTP {exc.status} {exc.code or exc.type}: {exc.message}") from None
        return _answer_text(orjson.loads(answer.body))


class HttpTarget:
    """A running gateway at ``url``, called with the official openai client (what applications use)."""

    def __init__(
        self, url: str, route: str, api_key: str | None, timeout: float, max_tokens: int | None = None
    ) -> None:
        # openai is imported only here: it comes with the dev extra, and only --url needs it.
        import openai

        base = url.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        self.base = base
        self.route = route
        self.max_tokens = max_tokens
        # Without a key, send no Authorization header at all (public routes take no credentials,
        # and a placeholder key would be refused as malformed).
        self.no_auth: dict[str, Any] = {} if api_key else {"Authorization": openai.Omit()}
        self.client = openai.AsyncOpenAI(
            base_url=base, api_key=api_key or "none", max_retries=0, timeout=timeout
        )
        self.description = f"route `{route}` at {base}"

    async def send(self, messages: list[dict[str, Any]], headers: dict[str, str]) -> str:
        import openai

        extra: dict[str, Any] = {}
        if self.max_tokens:
            extra["max_tokens"] = self.max_tokens
        try:
            reply = await self.client.chat.completions.create(
                model=self.route,
                messages=messages,  # type: ignore[arg-type]
                extra_headers={**headers, **self.no_auth},
                **extra,
            )
        except openai.APIStatusError as exc:
            err = exc.body if isinstance(exc.body, Mapping) else {}
            message = str(err.get("message") or exc.message)
            code = err.get("code") if isinstance(err.get("code"), str) else None
            blocked = blocked_from(code, message)
            if blocked is not None:
                raise blocked from None
            if exc.status_code == 401:
                what = "needs an API key" if self.no_auth else "refused the API key"
                raise RedteamAborted(
                    f"the gateway at {self.base} {what} for route `{self.route}` (401: {message}); pass "
                    "--api-key or set SHIPYARD_API_KEY to a client key (sk-shp-…) that may use the route"
                ) from None
            if exc.status_code in (403, 404):
                raise RedteamAborted(f"{self.base} answered {exc.status_code}: {message}") from None
            raise AttackFailed(f"HTTP {exc.status_code} {code or ''}: {message}".strip()) from None
        except openai.APITimeoutError:
            raise AttackFailed("timed out") from None
        except openai.APIConnectionError as exc:
            raise RedteamAborted(
                f"cannot reach the gateway at {self.base} ({exc}); start it with `shipyard up` or fix --url"
            ) from None
        if not reply.choices:
            return ""
        return reply.choices[0].message.content or ""

    async def close(self) -> None:
        await self.client.close()
