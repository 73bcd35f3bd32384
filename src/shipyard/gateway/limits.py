"""Rate limits and spend budgets for API keys and routes (see docs/limits.md).

A request names up to two *subjects*: the API key that sent it (``key:<key_id>``) and the route
it asks for (``route:<name>``); it must pass every subject that has limits.

- **requests/min and tokens/min** are token buckets holding a minute's allowance and refilling
  continuously. A bucket keeps two numbers per subject (level, time), tells exactly when the next
  request fits (``Retry-After``), and has no window edge where twice the limit gets through, as
  fixed windows do. Tokens are estimated at admission and corrected at settlement.
- **USD per UTC day and month** are *reservations*: admission checks ``spent + reserved +
  estimate <= budget`` and reserves the estimate (what the priciest target of the plan would
  charge for the prompt and every allowed output token) in the same atomic step; settlement
  swaps the reservation for the actual cost. Concurrent requests therefore cannot overspend:
  each one already counts against the budget while it runs.

Two backends share this interface: :class:`LocalLimiter` (one worker; atomic because admission
has no ``await`` between check and reserve; spend saved to the store off the request path) and
:class:`RedisLimiter` (many workers; check-and-reserve is one Lua script, atomic in Redis).
"""

from __future__ import annotations

import abc
import asyncio
import calendar
import collections
import contextlib
import datetime as dt
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from shipyard.config.schema import LimitsConfig
from shipyard.errors import ConfigError, RateLimited, ShipyardError
from shipyard.store.redis_pool import POOL_SIZE, POOL_TIMEOUT_S, async_client
from shipyard.store.usage import UsageKey, UsageRow, add_usage, load_usage

if TYPE_CHECKING:
    from shipyard.gateway.auth import Principal
    from shipyard.gateway.runtime import Route, Target
    from shipyard.settings import Settings
    from shipyard.store.db import Store

log = logging.getLogger("shipyard.limits")

# Output tokens assumed when neither the client, the route's target nor the model caps them.
DEFAULT_MAX_OUTPUT = 1024
# Chat formats wrap every message in a few tokens of role markers.
MESSAGE_OVERHEAD = 4
# An image, audio or file part, whose base64 length says nothing about its token count.
MEDIA_PART_TOKENS = 1000
_MEDIA = frozenset({"image_url", "input_audio", "file", "image", "audio"})
_TEXT_KEYS = ("content", "text", "name", "arguments", "tool_calls", "function")
_OUTPUT_KEYS = ("max_completion_tokens", "max_tokens")

RATE = "rate_limit_exceeded"
BUDGET = "budget_exceeded"
# Seconds a rejection suggests when only reservations of requests in flight stand in the way.
IN_FLIGHT_RETRY = 1.0


class LimitsUnavailable(ShipyardError):
    """The shared counters (Redis) cannot be reached: limited requests are refused, not let through."""

    status = 503
    type = "api_error"
    code = "limits_unavailable"


# -- subjects and estimates ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Subject:
    key: str  # `key:<key_id>` | `route:<name>`: the counters' name
    label: str  # how messages name it: key `ci-bot` | route `support`
    kind: str  # key | route
    limits: LimitsConfig


def subjects_for(route: Route, principal: Principal | None) -> tuple[Subject, ...]:
    """Every subject of this request that has limits (key first: its message is the more useful)."""
    out: list[Subject] = []
    if principal is not None and principal.limits is not None and not principal.limits.empty():
        out.append(Subject(f"key:{principal.key_id}", f"key `{principal.name}`", "key", principal.limits))
    if route.limits is not None:
        out.append(Subject(f"route:{route.name}", f"route `{route.name}`", "route", route.limits))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Demand:
    """What a request may use, estimated before it runs."""

    tokens: int  # prompt estimate + the most output it may produce
    usd: float  # that, priced on the most expensive target of the plan
    prompt_tokens: int
    prompt_usd: float  # the prompt alone: charged when a client abandons a request mid-call


# A prompt's token count is bounded by its UTF-8 size: a byte-level BPE token (GPT, Llama 3,
# Qwen…) covers at least one byte, and so does a SentencePiece token with byte fallback; so a
# budget holds even for text that tokenizes badly (single characters between spaces, CJK, emoji),
# which the old characters/4 guess undercounted up to 12 times. For English it is about 4 times
# the real count, which only makes admission cautious: settlement charges what the provider
# reports. A provider whose own tokenizer is at hand (`exact_token_count`) is asked instead, for
# prompts up to this size (tokenizing more would hold up the event loop).
EXACT_COUNT_MAX_BYTES = 64 * 1024
# Request fields a model also reads as prompt tokens (tool schemas, structured-output schemas).
_SCHEMA_KEYS = ("tools", "functions", "response_format")


@dataclass(slots=True)
class PromptSize:
    """What a request sends a model, measured once: text (UTF-8 bytes, and the texts themselves
    for providers that count tokens exactly), token ids, media parts, chat messages."""

    text_bytes: int = 0
    token_ids: int = 0
    media: int = 0
    messages: int = 0
    texts: list[str] = field(default_factory=list)

    def add_text(self, text: str) -> None:
        self.text_bytes += _utf8_len(text)
        self.texts.append(text)

    def bound(self) -> int:
        """Tokens no tokenizer exceeds for this prompt (media parts at a fixed allowance)."""
        return (
            self.text_bytes
            + self.token_ids
            + self.media * MEDIA_PART_TOKENS
            + self.messages * MESSAGE_OVERHEAD
        )

    def tokens_for(self, target: Target) -> int:
        """The prompt's tokens on ``target``: its provider's own count where it has a cheap
        tokenizer, else the UTF-8 bound."""
        provider = target.provider
        if (
            self.texts
            and self.text_bytes <= EXACT_COUNT_MAX_BYTES
            and getattr(provider, "exact_token_count", False)
        ):
            text = sum(provider.count_tokens(t, target.provider_model) for t in self.texts)
            return text + self.token_ids + self.media * MEDIA_PART_TOKENS + self.messages * MESSAGE_OVERHEAD
        return self.bound()


def _utf8_len(text: str) -> int:
    if text.isascii():
        return len(text)
    # surrogatepass: JSON may carry a lone surrogate (`\ud800`), which strict UTF-8 refuses.
    return len(text.encode("utf-8", "surrogatepass"))


def _measure(value: Any, size: PromptSize) -> None:
    """Add a message content, part list or tool call to ``size``."""
    if isinstance(value, str):
        size.add_text(value)
    elif isinstance(value, list):
        for v in value:
            _measure(v, size)
    elif isinstance(value, dict):
        if value.get("type") in _MEDIA:
            size.media += 1
            return
        for k in _TEXT_KEYS:
            if k in value:
                _measure(value[k], size)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        size.add_text(str(value))


def _measure_inputs(value: Any, size: PromptSize) -> None:
    """A completion `prompt` or an embeddings `input`: a text, texts, or token-id arrays."""
    if isinstance(value, str):
        size.add_text(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        size.token_ids += 1
    elif isinstance(value, list):
        for v in value:
            _measure_inputs(v, size)


def measure_prompt(op: str, body: Mapping[str, Any]) -> PromptSize:
    """How big the prompt of this ``op`` request (chat, completion, embeddings) is."""
    size = PromptSize()
    if op == "chat":
        messages = body.get("messages")
        _measure(messages, size)
        size.messages = len(messages) if isinstance(messages, list) else 0
        variables = body.get("variables")
        if isinstance(variables, dict):
            for v in variables.values():
                _measure(v, size)
    else:
        _measure_inputs(body.get("prompt" if op == "completion" else "input"), size)
    if op != "embeddings":
        for k in _SCHEMA_KEYS:
            if body.get(k) is not None:
                try:
                    size.add_text(orjson.dumps(body[k]).decode())
                except TypeError:
                    continue
    return size


def _max_output(body: Mapping[str, Any], target: Target) -> int:
    # The same precedence as the call the target gets: target params > client > prompt > model.
    layers: list[Mapping[str, Any]] = [target.params, body]
    if target.prompt is not None:
        layers.append(target.prompt.params)
    layers.append(target.model.params)
    for layer in layers:
        for k in _OUTPUT_KEYS:
            v = layer.get(k)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return DEFAULT_MAX_OUTPUT


def estimate(op: str, body: Mapping[str, Any], plan: Sequence[Target]) -> Demand:
    """The most this request may use on any target of ``plan``: the prompt's tokens (see
    :class:`PromptSize`; on prompt routes plus the template's text), plus the output cap times
    ``n`` choices."""
    size = measure_prompt(op, body)
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
    tokens = prompt_tokens = 0
    usd = prompt_usd = 0.0
    for t in plan:
        p = size.tokens_for(t)
        if op == "chat" and t.prompt is not None:
            template = PromptSize(messages=len(t.prompt.messages))
            _measure(t.prompt.messages, template)
            p += template.bound()
        out = 0 if op == "embeddings" else _max_output(body, t) * choices
        tokens = max(tokens, p + out)
        usd = max(usd, t.pricing.cost(p, out))
        prompt_usd = max(prompt_usd, t.pricing.cost(p, 0))
        prompt_tokens = max(prompt_tokens, p)
    if not plan:
        tokens = prompt_tokens = size.bound()
    return Demand(tokens, usd, prompt_tokens, prompt_usd)


# -- windows ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Windows:
    """The current UTC day and month, as epoch seconds."""

    day: float
    day_end: float
    month: float
    month_end: float

    @classmethod
    def at(cls, now: float) -> Windows:
        day = math.floor(now / 86400) * 86400.0
        d = dt.datetime.fromtimestamp(now, dt.UTC)
        month = dt.datetime(d.year, d.month, 1, tzinfo=dt.UTC)
        days = calendar.monthrange(d.year, d.month)[1]
        return cls(day, day + 86400.0, month.timestamp(), month.timestamp() + days * 86400.0)


class _Calendar:
    """Windows.at(now), recomputed only when the day changes (it runs on every limited request)."""

    def __init__(self) -> None:
        self._w = Windows.at(time.time())

    def now(self, now: float) -> Windows:
        if not self._w.day <= now < self._w.day_end:
            self._w = Windows.at(now)
        return self._w


@dataclass(slots=True)
class Ticket:
    """An admitted request: what it reserved, where, to be settled exactly once."""

    subjects: tuple[Subject, ...]
    demand: Demand
    windows: Windows
    settled: bool = False


# -- messages --------------------------------------------------------------------------------------
def _usd(x: float) -> str:
    """Dollars with cents, and more decimals only where they matter ($4.9981 of $5.00, $0.00095)."""
    whole, _, frac = f"{x:,.6f}".rstrip("0").partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def _in(seconds: float) -> str:
    s = max(1, math.ceil(seconds))
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days {hours % 24} h"


def bucket_refusal(subject: Subject, limit: str, capacity: int, need: float, level: float) -> RateLimited:
    """The 429 for a requests/min or tokens/min bucket that holds ``level`` and needs ``need``."""
    wait = (need - level) * 60.0 / capacity
    if limit == "requests_per_min":
        message = (
            f"{subject.label} allows {capacity} requests per minute and has used them; "
            f"retry in {_in(wait)} (the allowance refills continuously, {capacity} per 60s)"
        )
    else:
        message = (
            f"{subject.label} allows {capacity} tokens per minute; this request may use up to "
            f"{math.ceil(need)} (prompt estimate plus `max_tokens`) and {max(0, math.floor(level))} are "
            f"available now; retry in {_in(wait)} or ask for fewer `max_tokens`"
        )
    return RateLimited(message, retry_after=wait, code=RATE)


def budget_refusal(
    subject: Subject, window: str, budget: float, spent: float, reserved: float, need: float, w: Windows
) -> RateLimited:
    """The 429 for a day/month budget that ``spent + reserved + need`` would exceed."""
    start, end = (w.day, w.day_end) if window == "day" else (w.month, w.month_end)
    when = dt.datetime.fromtimestamp(start, dt.UTC)
    period = f"UTC day {when:%Y-%m-%d}" if window == "day" else f"UTC month {when:%Y-%m}"
    reset = dt.datetime.fromtimestamp(end, dt.UTC)
    now = time.time()
    if spent + need <= budget and reserved > 0:
        # Only requests still running hold the money: it may come back within seconds.
        message = (
            f"{subject.label} has spent {_usd(spent)} of its {_usd(budget)} budget for the {period}, and "
            f"{_usd(reserved)} more is reserved by requests in flight; this request may cost up to "
            f"{_usd(need)}. Retry in a moment, when those have finished (`usd_per_{window}`)"
        )
        return RateLimited(message, retry_after=IN_FLIGHT_RETRY, code=BUDGET)
    message = (
        f"{subject.label} has spent {_usd(spent)} of its {_usd(budget)} budget for the {period} "
        f"(`usd_per_{window}`); this request may cost up to {_usd(need)}. The budget resets at "
        f"{reset:%Y-%m-%d %H:%M} UTC (in {_in(end - now)})"
    )
    return RateLimited(message, retry_after=end - now, code=BUDGET)


# -- the interface ---------------------------------------------------------------------------------
class Limiter(abc.ABC):
    """Admits requests against their subjects' limits and settles them when they finish."""

    backend = "base"

    def __init__(self) -> None:
        # (subject kind, limit) → rejections, for metrics.
        self.rejections: collections.Counter[tuple[str, str]] = collections.Counter()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @abc.abstractmethod
    async def admit(self, subjects: tuple[Subject, ...], demand: Demand) -> Ticket:
        """Reserve ``demand`` under every subject, or raise RateLimited reserving nothing."""

    @abc.abstractmethod
    def settle(self, ticket: Ticket, usd: float, tokens: int) -> None:
        """Replace the ticket's reservation by what the request used. Never blocks, never raises."""

    def _rejected(self, subject: Subject, limit: str) -> None:
        self.rejections[(subject.kind, limit)] += 1


# -- in-process ------------------------------------------------------------------------------------
class _Bucket:
    __slots__ = ("at", "level")

    def __init__(self, level: float, at: float) -> None:
        self.level = level
        self.at = at

    def refill(self, capacity: int, now: float) -> float:
        self.level = min(float(capacity), self.level + (now - self.at) * capacity / 60.0)
        self.at = now
        return self.level


@dataclass(slots=True)
class _Counter:
    usd: float = 0.0
    reserved: float = 0.0
    in_flight: int = 0
    tokens: int = 0
    requests: int = 0


class LocalLimiter(Limiter):
    """Counters in this process: for one gateway worker. Day and month spend is added to the
    store's ``usage_counters`` every ``flush_interval`` seconds and read back at start."""

    backend = "local"

    def __init__(self, store: Store | None, flush_interval: float = 1.0) -> None:
        super().__init__()
        self.store = store
        self.flush_interval = flush_interval
        self._calendar = _Calendar()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._counters: dict[UsageKey, _Counter] = {}
        self._pending: dict[UsageKey, UsageRow] = {}
        self._day = 0.0
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.store is None:
            return
        w = self._calendar.now(time.time())
        rows = await asyncio.to_thread(load_usage, self.store, [("day", w.day), ("month", w.month)])
        for k, row in rows.items():
            c = self._counters.setdefault(k, _Counter())
            c.usd += row.usd
            c.tokens += row.tokens
            c.requests += row.requests
        self._flusher = asyncio.create_task(self._flush_loop(), name="shipyard-limits-flush")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()

    async def flush(self) -> None:
        """Add what was settled since the last flush to the store."""
        if self.store is None or not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            await asyncio.to_thread(add_usage, self.store, batch)
        except Exception as exc:
            log.warning("could not save spend counters (will retry): %s", exc)
            for k, row in batch.items():
                p = self._pending.setdefault(k, UsageRow())
                p.usd += row.usd
                p.tokens += row.tokens
                p.requests += row.requests

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self.flush()

    def _bucket(self, subject: str, kind: str, capacity: int, now: float) -> _Bucket:
        b = self._buckets.get((subject, kind))
        if b is None:
            b = self._buckets[(subject, kind)] = _Bucket(float(capacity), now)
        else:
            b.refill(capacity, now)
        return b

    def _counter(self, subject: str, window: str, start: float) -> _Counter:
        k = UsageKey(subject, window, start)
        c = self._counters.get(k)
        if c is None:
            c = self._counters[k] = _Counter()
        return c

    def _new_day(self, w: Windows) -> None:
        # Earlier windows are in the store; settlements of requests admitted before midnight
        # find no live counter and go to the store only.
        self._day = w.day
        for k in [k for k in self._counters if k.start < (w.day if k.window == "day" else w.month)]:
            del self._counters[k]

    async def admit(self, subjects: tuple[Subject, ...], demand: Demand) -> Ticket:
        # No await from here to the end: the check and the reservation are one atomic step.
        mono = time.monotonic()
        w = self._calendar.now(time.time())
        if w.day != self._day:
            self._new_day(w)
        for s in subjects:
            lim = s.limits
            if lim.requests_per_min is not None:
                b = self._bucket(s.key, "rpm", lim.requests_per_min, mono)
                if b.level < 1:
                    self._rejected(s, "requests_per_min")
                    raise bucket_refusal(s, "requests_per_min", lim.requests_per_min, 1, b.level)
            if lim.tokens_per_min is not None:
                b = self._bucket(s.key, "tpm", lim.tokens_per_min, mono)
                # A request bigger than the whole allowance waits for a full bucket, then runs.
                need = min(demand.tokens, lim.tokens_per_min)
                if b.level < need:
                    self._rejected(s, "tokens_per_min")
                    raise bucket_refusal(s, "tokens_per_min", lim.tokens_per_min, need, b.level)
            for window, budget in (("day", lim.usd_per_day), ("month", lim.usd_per_month)):
                if budget is None:
                    continue
                c = self._counter(s.key, window, w.day if window == "day" else w.month)
                used = c.usd + c.reserved
                # Nothing spent or reserved yet: one request runs even if its estimate alone is
                # over the budget, so that a tiny budget is usable (the overshoot is one request).
                if used > 0 and used + demand.usd > budget:
                    self._rejected(s, f"usd_per_{window}")
                    raise budget_refusal(s, window, budget, c.usd, c.reserved, demand.usd, w)
        for s in subjects:
            lim = s.limits
            if lim.requests_per_min is not None:
                self._buckets[(s.key, "rpm")].level -= 1
            if lim.tokens_per_min is not None:
                self._buckets[(s.key, "tpm")].level -= demand.tokens
            for window, start in (("day", w.day), ("month", w.month)):
                c = self._counter(s.key, window, start)
                c.reserved += demand.usd
                c.in_flight += 1
        return Ticket(subjects, demand, w)

    def settle(self, ticket: Ticket, usd: float, tokens: int) -> None:
        if ticket.settled:
            return
        ticket.settled = True
        d = ticket.demand
        mono = time.monotonic()
        for s in ticket.subjects:
            lim = s.limits
            if lim.tokens_per_min is not None:
                b = self._buckets.get((s.key, "tpm"))
                if b is not None:
                    b.refill(lim.tokens_per_min, mono)
                    b.level = min(float(lim.tokens_per_min), b.level + d.tokens - tokens)
            for window, start in (("day", ticket.windows.day), ("month", ticket.windows.month)):
                k = UsageKey(s.key, window, start)
                c = self._counters.get(k)
                if c is not None:
                    c.in_flight -= 1
                    # Sums of floats drift: with nothing in flight, nothing is reserved.
                    c.reserved = max(0.0, c.reserved - d.usd) if c.in_flight > 0 else 0.0
                    c.usd += usd
                    c.tokens += tokens
                    c.requests += 1
                if self.store is not None:
                    p = self._pending.get(k)
                    if p is None:
                        p = self._pending[k] = UsageRow()
                    p.usd += usd
                    p.tokens += tokens
                    p.requests += 1


# -- Redis -----------------------------------------------------------------------------------------
# KEYS: one per check. ARGV: 4 per check: kind ('b' bucket | 'u' usage), then
#   b: capacity, need, take          u: budget (-1: none), estimate, expire-at
# Returns {1, now} when admitted (everything reserved), {0, i, x, y} when check i refuses
# (bucket: x = level; usage: x = spent, y = reserved). Numbers go out as strings: Redis would
# truncate Lua numbers to integers.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local levels = {}
for i = 1, #KEYS do
  local o = (i - 1) * 4
  local a, b = tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3])
  if ARGV[o + 1] == 'b' then
    local v = redis.call('HMGET', KEYS[i], 'level', 'at')
    local level = a
    if v[1] and v[2] then
      level = math.min(a, tonumber(v[1]) + (now - tonumber(v[2])) * a / 60)
    end
    if level < b then
      return {0, i, tostring(level), '0'}
    end
    levels[i] = level
  else
    local v = redis.call('HMGET', KEYS[i], 'usd', 'reserved')
    local spent = tonumber(v[1]) or 0
    local reserved = math.max(0, tonumber(v[2]) or 0)
    local used = spent + reserved
    if a >= 0 and used > 0 and used + b > a then
      return {0, i, tostring(spent), tostring(reserved)}
    end
  end
end
for i = 1, #KEYS do
  local o = (i - 1) * 4
  if ARGV[o + 1] == 'b' then
    local cap = tonumber(ARGV[o + 2])
    local level = levels[i] - tonumber(ARGV[o + 4])
    redis.call('HSET', KEYS[i], 'level', tostring(level), 'at', tostring(now))
    -- Once full again the bucket needs no key: a missing key reads as full.
    redis.call('EXPIRE', KEYS[i], math.ceil((cap - level) * 60 / cap) + 1)
  else
    redis.call('HINCRBYFLOAT', KEYS[i], 'reserved', ARGV[o + 3])
    redis.call('HINCRBY', KEYS[i], 'in_flight', 1)
    redis.call('EXPIREAT', KEYS[i], ARGV[o + 4])
  end
end
return {1, tostring(now)}
"""

# KEYS: one per entry. ARGV: 5 per entry: kind, then
#   b: capacity, refund (estimate - actual tokens)     u: release, usd, tokens, expire-at
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS do
  local o = (i - 1) * 5
  if ARGV[o + 1] == 'b' then
    local cap, refund = tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3])
    local v = redis.call('HMGET', KEYS[i], 'level', 'at')
    local level = cap
    if v[1] and v[2] then
      level = math.min(cap, tonumber(v[1]) + (now - tonumber(v[2])) * cap / 60)
    end
    level = math.min(cap, level + refund)
    if level < cap then
      redis.call('HSET', KEYS[i], 'level', tostring(level), 'at', tostring(now))
      redis.call('EXPIRE', KEYS[i], math.ceil((cap - level) * 60 / cap) + 1)
    else
      redis.call('DEL', KEYS[i])
    end
  else
    redis.call('HINCRBYFLOAT', KEYS[i], 'usd', ARGV[o + 3])
    redis.call('HINCRBY', KEYS[i], 'tokens', ARGV[o + 4])
    redis.call('HINCRBY', KEYS[i], 'requests', 1)
    if redis.call('HINCRBY', KEYS[i], 'in_flight', -1) <= 0 then
      redis.call('HSET', KEYS[i], 'in_flight', 0, 'reserved', 0)
    else
      redis.call('HINCRBYFLOAT', KEYS[i], 'reserved', '-' .. ARGV[o + 2])
    end
    redis.call('EXPIREAT', KEYS[i], ARGV[o + 5])
  end
end
return 1
"""

# Window keys outlive their window by this much, for settlements of requests that straddle it.
_GRACE = 3600


def _num(x: float) -> str:
    # Fixed notation: HINCRBYFLOAT and Lua's tonumber both read it, and it keeps sub-cent amounts.
    return f"{x:.12f}"


def redis_prefix(store_url: str) -> str:
    """Workers that share a store share counters; deployments that only share a Redis do not."""
    digest = hashlib.sha256(store_url.encode()).hexdigest()[:12]
    return f"shipyard:{digest}:"


class RedisLimiter(Limiter):
    """Counters in Redis, shared by every worker that uses the same store and Redis."""

    backend = "redis"

    def __init__(
        self, url: str, prefix: str, max_connections: int = POOL_SIZE, pool_timeout: float = POOL_TIMEOUT_S
    ) -> None:
        super().__init__()
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            raise ConfigError(
                "setting `redis_url` needs the Redis client: pip install 'shipyard-llmops[redis]'"
            ) from None
        self.url = url
        self.prefix = prefix
        # A bounded pool where a busy moment waits for a connection instead of failing requests.
        self.client = async_client(url, max_connections, pool_timeout)
        self._admit = self.client.register_script(_ADMIT)
        self._settle = self.client.register_script(_SETTLE)
        self._tasks: set[asyncio.Task[None]] = set()

    def _where(self) -> str:
        u = urlsplit(self.url)  # never the password
        return f"Redis at `{u.scheme}://{u.hostname}:{u.port or 6379}{u.path}` (setting `redis_url`)"

    def check(self) -> None:
        """Blocking: fail before anything is served when Redis does not answer."""
        import redis

        client = redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)
        try:
            client.ping()
        except Exception as exc:
            raise ConfigError(f"cannot reach {self._where()}: {exc}") from None
        finally:
            client.close()

    async def start(self) -> None:
        try:
            await self.client.ping()
        except Exception as exc:
            raise ConfigError(f"cannot reach {self._where()}: {exc}") from None

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        await self.client.aclose()

    def _bucket_key(self, subject: str, kind: str) -> str:
        return f"{self.prefix}rate:{subject}:{kind}"

    def _usage_key(self, subject: str, window: str, start: float) -> str:
        return f"{self.prefix}usage:{subject}:{window}:{int(start)}"

    async def admit(self, subjects: tuple[Subject, ...], demand: Demand) -> Ticket:
        w = Windows.at(time.time())
        keys: list[str] = []
        args: list[str] = []
        checks: list[tuple[Subject, str, float]] = []  # (subject, limit, its value)
        for s in subjects:
            lim = s.limits
            if lim.requests_per_min is not None:
                keys.append(self._bucket_key(s.key, "rpm"))
                args += ["b", str(lim.requests_per_min), "1", "1"]
                checks.append((s, "requests_per_min", lim.requests_per_min))
            if lim.tokens_per_min is not None:
                need = min(demand.tokens, lim.tokens_per_min)
                keys.append(self._bucket_key(s.key, "tpm"))
                args += ["b", str(lim.tokens_per_min), str(need), str(demand.tokens)]
                checks.append((s, "tokens_per_min", lim.tokens_per_min))
            for window, budget, start, end in (
                ("day", lim.usd_per_day, w.day, w.day_end),
                ("month", lim.usd_per_month, w.month, w.month_end),
            ):
                keys.append(self._usage_key(s.key, window, start))
                args += [
                    "u",
                    _num(budget if budget is not None else -1),
                    _num(demand.usd),
                    str(int(end) + _GRACE),
                ]
                checks.append((s, f"usd_per_{window}", budget if budget is not None else -1))
        task = asyncio.ensure_future(self._admit(keys=keys, args=args))
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            # The script may still run: whatever it reserves is released once it answers.
            task.add_done_callback(lambda t: self._release_orphan(t, subjects, demand, w))
            raise
        except Exception as exc:
            raise LimitsUnavailable(
                f"rate limits and budgets are counted in {self._where()}, which did not answer ({exc}); "
                "requests with limits are refused until it does"
            ) from None
        ticket = Ticket(subjects, demand, w)
        if int(result[0]) == 1:
            return ticket
        s, limit, value = checks[int(result[1]) - 1]
        x, y = float(result[2]), float(result[3])
        self._rejected(s, limit)
        if limit == "requests_per_min":
            raise bucket_refusal(s, limit, int(value), 1, x)
        if limit == "tokens_per_min":
            raise bucket_refusal(s, limit, int(value), min(demand.tokens, int(value)), x)
        raise budget_refusal(s, limit.rsplit("_", 1)[1], value, x, y, demand.usd, w)

    def _release_orphan(
        self, task: asyncio.Future[Any], subjects: tuple[Subject, ...], demand: Demand, w: Windows
    ) -> None:
        if task.cancelled() or task.exception() is not None or int(task.result()[0]) != 1:
            return
        self.settle(Ticket(subjects, demand, w), 0.0, 0)

    def settle(self, ticket: Ticket, usd: float, tokens: int) -> None:
        if ticket.settled:
            return
        ticket.settled = True
        d, w = ticket.demand, ticket.windows
        keys: list[str] = []
        args: list[str] = []
        for s in ticket.subjects:
            if s.limits.tokens_per_min is not None:
                keys.append(self._bucket_key(s.key, "tpm"))
                args += ["b", str(s.limits.tokens_per_min), str(d.tokens - tokens), "", ""]
            for window, start, end in (("day", w.day, w.day_end), ("month", w.month, w.month_end)):
                keys.append(self._usage_key(s.key, window, start))
                args += ["u", _num(d.usd), _num(usd), str(tokens), str(int(end) + _GRACE)]
        self._spawn(self._settle_with_retry(keys, args))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle_with_retry(self, keys: list[str], args: list[str]) -> None:
        for attempt in range(4):
            try:
                await self._settle(keys=keys, args=args)
                return
            except Exception as exc:
                if attempt == 3:
                    # The reservation stays until its window ends: the budget errs on the safe side.
                    log.error("could not settle a request's usage in %s: %s", self._where(), exc)
                    return
                await asyncio.sleep(0.2 * 2**attempt)


def build_limiter(settings: Settings, store: Store) -> Limiter:
    """Redis when ``redis_url`` is set (many workers), else counters in this process."""
    if settings.redis_url:
        limiter = RedisLimiter(
            settings.redis_url,
            redis_prefix(store.url),
            settings.redis_max_connections,
            settings.redis_pool_timeout,
        )
        limiter.check()
        return limiter
    return LocalLimiter(store)
