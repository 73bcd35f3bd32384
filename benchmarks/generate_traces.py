"""Fill a store with realistic synthetic traffic, for the dashboard benchmark and for demos.

    .venv/bin/python benchmarks/generate_traces.py --store /tmp/bench1m/shipyard.db --n 1000000
    .venv/bin/python benchmarks/generate_traces.py --store postgresql+psycopg://… --n 100000 --days 2

Traces look like the gateway's own: a root span `chat <route>` (with the routing decision as
attributes) and one provider-attempt span per attempt (a failed attempt, then the fallback that
answered), with the OpenTelemetry GenAI attributes the gateway sets; plus a few traces as an
OpenTelemetry-instrumented application would send them over OTLP. Six routes with their own models,
prompts, token counts, latency and time-to-first-token, streaming shares, prices and failure modes
(rate limits, upstream 5xx, timeouts, context-length errors, clients that hang up mid-stream; ~2% of
requests fail), a daily traffic cycle, one provider incident, users, tags, user feedback and online-
eval scores.

Everything goes through the store's real insert path (`store.traces.insert_traces`, which also
maintains the rollups), in time order, with time-ordered trace ids as the gateway makes them."""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipyard.tracing import semconv as sc
from shipyard.tracing.spans import Span, Trace

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# -- what the traffic looks like --------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A target as the gateway labels it: config model name, provider instance, provider-side name."""

    label: str
    provider: str
    response_model: str
    input_per_mtok: float
    output_per_mtok: float
    ttft_ms: float  # median time to first token
    tokens_per_s: float  # median decode speed
    version: int
    timeout_s: float = 30.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1_000_000


GPT4O_MINI = Model("gpt-4o-mini", "openai", "gpt-4o-mini-2024-07-18", 0.15, 0.60, 380, 95, 2)
GPT4O = Model("gpt-4o", "openai", "gpt-4o-2024-08-06", 2.50, 10.0, 520, 70, 1)
HAIKU = Model("claude-haiku", "anthropic", "claude-3-5-haiku-20241022", 0.80, 4.0, 450, 85, 1)
SONNET = Model("claude-sonnet", "anthropic", "claude-3-5-sonnet-20241022", 3.0, 15.0, 700, 60, 3)
LLAMA70B = Model(
    "llama-70b", "vllm-a100", "meta-llama/Llama-3.1-70B-Instruct", 0.0, 0.0, 650, 38, 4, timeout_s=60.0
)
MISTRAL = Model("mistral-small", "mistral", "mistral-small-2409", 0.20, 0.60, 300, 110, 1)
GEMMA = Model("gemma-3-270m", "local", "gemma-3-270m-it-Q8_0", 0.0, 0.0, 90, 140, 1)


@dataclass(frozen=True)
class RouteSpec:
    name: str
    share: float  # of all traffic
    version: int
    targets: tuple[tuple[Model, float], ...]  # (model, weight)
    fallback: Model | None
    stream_share: float
    out_tokens: float  # median output tokens
    out_sigma: float
    error_rate: float  # probability that the first attempt fails
    params: dict[str, Any]
    prompt: tuple[str, tuple[tuple[int, float], ...]] | None  # (name, ((version, weight), …))
    make: Callable[[random.Random, str], tuple[list[dict[str, str]], str, dict[str, Any] | None]]


# Slot fillers for the message templates below.
PLANS = ("Starter", "Team", "Business", "Enterprise")
PRODUCTS = ("Dockyard", "Lighthouse", "Anchor DB", "Tidewater queue", "Compass search", "Beacon CDN")
REGIONS = ("eu-west-1", "us-east-2", "ap-south-1", "eu-central-1", "us-west-1", "sa-east-1")
THINGS = ("invoices", "audit logs", "deployments", "API keys", "usage reports", "dashboards", "webhooks")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "the end of the month", "tomorrow")
CODES = ("E1042", "E2210", "OOMKilled", "CrashLoopBackOff", "ImagePullBackOff", "TLS_HANDSHAKE_FAILED")
CITIES = ("Lisbon", "Kyoto", "Valparaíso", "Tallinn", "Marseille", "Hobart", "Bergen", "Cartagena")
MONTHS = ("March", "May", "June", "September", "October", "December")
TOPICS = ("tides", "lighthouses", "the history of container shipping", "knots", "sea shanties", "sextants")
LABELS = ("billing", "outage", "account", "feature_request", "bug", "other")
FUNCS = (
    ("parses ISO 8601 durations like PT1H30M into seconds", "reject malformed input with a ValueError"),
    ("retries an HTTP call with exponential backoff and jitter", "respect a Retry-After header"),
    ("deduplicates a list of dicts by a key while keeping order", "run in linear time"),
    ("streams a large CSV file and sums one column", "use constant memory"),
    ("merges overlapping time intervals", "handle unsorted input"),
    ("validates an IBAN", "return the normalized form"),
    ("computes a moving median over a window", "be faster than sorting every window"),
)
DOC_SENTENCES = (
    "Quarterly revenue grew 14% year over year, driven mainly by the Business plan.",
    "Churn among Starter customers rose slightly after the price change in the second month.",
    "The infrastructure team migrated the primary database to a new cluster with no downtime.",
    "Support ticket volume fell by a fifth after the new onboarding guide was published.",
    "Two incidents affected the EU region, the longest lasting forty-seven minutes.",
    "Gross margin improved as GPU utilisation rose from 41% to 63% across the fleet.",
    "The roadmap for next quarter prioritises audit logging, SSO and regional data residency.",
    "Hiring is behind plan in engineering, with six of eleven open roles filled.",
    "Customer satisfaction in the last survey was 4.4 out of 5, up from 4.1.",
    "Legal review of the new data processing agreement is expected to finish within three weeks.",
    "Average time to resolve a priority-one ticket dropped from 9 hours to 5 hours.",
    "Marketing spend shifted from paid search towards developer conferences and workshops.",
    "A partnership with a large logistics company is in the final stage of negotiation.",
    "The mobile app reached 120,000 monthly active users, mostly on Android.",
)
SNIPPETS = (
    "Dockyard deployments roll out in waves of 25%; a failed health check stops the rollout.",
    "API keys can be scoped to a single workspace and rotated without downtime.",
    "Anchor DB keeps point-in-time backups for 35 days on the Business plan and above.",
    "The Tidewater queue guarantees at-least-once delivery; consumers must be idempotent.",
    "Beacon CDN purges propagate to every edge location within about 30 seconds.",
    "Workspaces on the Team plan can have up to 25 members; Enterprise has no limit.",
    "Usage reports are generated daily at 02:00 UTC and kept for 13 months.",
    "Webhooks are signed with HMAC-SHA256; the signature is in the X-Signature header.",
)

SUPPORT_SYSTEM = (
    "You are Harbor, the support assistant for Shipwright Cloud. Answer kindly and concisely, in the "
    "customer's language. If you are not sure, say so and offer to open a ticket. Never share internal "
    "notes. Customer plan: {plan}."
)
SUPPORT_USER = (
    "Hi, I was charged twice for my {plan} subscription this month. Can you refund the duplicate charge? "
    "The second one was on {day}.",
    "My {product} deployment in {region} keeps failing with {code} since this morning. I already tried "
    "restarting it twice. What else can I check?",
    "How do I add a teammate to my workspace? I'm on the {plan} plan and the invite button is greyed out.",
    "Is there a way to export all my {thing} as CSV? Our auditors need them by {day}.",
    "The {product} console is really slow for me today, pages take {n} seconds to load. Is there an "
    "incident in {region}?",
    "Can I downgrade from {plan} to Starter without losing my {thing}? We are a smaller team now.",
    "I never receive the password reset email, I checked spam already. Could you resend it?",
    "We want to move our {product} instance from {region} to another region closer to our users. Is that "
    "possible without downtime, and how long does it take?",
)
SUPPORT_ANSWER = (
    "I'm sorry about the double charge! I can see two payments for your {plan} plan this month. I've "
    "asked billing to refund the duplicate; it usually shows up on your statement within 5–10 business "
    "days. You'll get a confirmation email shortly. Is there anything else I can help with?",
    "Thanks for the details. {code} on {product} usually means the container exceeded its memory limit or "
    "its image could not be pulled. Please check the deployment's events in the console, then try raising "
    "the memory limit by 25%. If it keeps failing, I can open a ticket for the {region} team.",
    "On the {plan} plan only workspace admins can invite members. Ask an admin to open Settings → Members "
    "and click Invite, or to make you an admin there. If no admin is available, reply here and I'll open "
    "a ticket so our team can help.",
    "Yes! Open Settings → Data export, pick {thing} and the date range, then choose CSV. Large exports are "
    "prepared in the background and you'll get an email with a download link, usually within a few "
    "minutes. Links stay valid for 7 days.",
    "We're seeing elevated latency in {region} right now and the team is on it; you can follow updates on "
    "our status page. Nothing is lost, and pages should be back to normal soon. Sorry for the trouble!",
    "You can downgrade at any time from Settings → Billing. Your {thing} are kept, but features above the "
    "Starter limits become read-only. The change applies at the start of your next billing period.",
    "I'm sorry about that. I've re-sent the reset link; it can take a couple of minutes. If it still does "
    "not arrive, please add noreply@shipwright.example to your contacts, or I can open a ticket for you.",
)
CLASSIFY_SYSTEM = (
    "Classify the support ticket into exactly one label: billing, outage, account, feature_request, bug or "
    'other. Answer with JSON only: {{"label": <label>, "confidence": <0..1>}}.'
)
SUMMARIZE_SYSTEM = "Summarize the document in three short bullet points for an executive audience."
SUMMARY_BULLETS = (
    "- Revenue is up, led by larger plans; churn among small customers needs attention.",
    "- Reliability improved overall, though two EU incidents hurt customers this quarter.",
    "- Efficiency gains (GPU utilisation, faster ticket resolution) improved margins.",
    "- Hiring lags the plan in engineering, which puts the roadmap at risk.",
    "- Next quarter focuses on enterprise features: audit logs, SSO and data residency.",
    "- Customer satisfaction keeps rising and support load is falling.",
)
CODE_SYSTEM = "You are a senior Python engineer. Write idiomatic, typed, tested code and explain briefly."
CODE_USER = (
    "Write a Python function that {what}. It should {how}.",
    "I need a small helper that {what}; make sure it can {how}. Include a pytest test.",
    "Refactor my function that {what} so that it can {how}. Keep the public signature.",
)
CODE_ANSWER = (
    "Here is a version that {how}:\n\n```python\ndef solve(data: list[str]) -> list[str]:\n"
    "    seen: set[str] = set()\n    out: list[str] = []\n    for item in data:\n"
    "        if item not in seen:\n            seen.add(item)\n            out.append(item)\n"
    "    return out\n```\n\nIt makes one pass over the input, so it "
    "stays linear, and the test below covers the empty and duplicate cases.",
    "A straightforward approach that {how}:\n\n```python\nimport time\n\ndef run(fn, attempts: int = 5) -> "
    "object:\n    for i in range(attempts):\n        try:\n            return fn()\n        except OSError:\n"
    "            time.sleep(min(30, 0.1 * 2**i))\n    return fn()\n```\n\nThe delay doubles on each attempt "
    "and is capped at 30 seconds.",
)
RAG_SYSTEM = (
    "Answer the question using only the context below and cite sources as [n]. If the context does not "
    "contain the answer, say you don't know.\n\nContext:\n[1] {s1}\n[2] {s2}"
)
RAG_QUESTIONS = (
    "How long are database backups kept on the Business plan?",
    "Do webhooks come with a signature I can verify?",
    "How many members can a Team workspace have?",
    "How fast does a CDN purge reach all edge locations?",
    "Can I rotate an API key without downtime?",
    "What happens if a deployment health check fails?",
    "Does the queue ever deliver a message twice?",
)
RAG_ANSWERS = (
    "According to the documentation, {s1} [1] In practice this means you should plan for it when you "
    "design your setup. {s2} [2]",
    "Yes. {s1} [1] For the related question of limits: {s2} [2] Let me know if you need the exact steps.",
    "I don't know based on the provided context; the sources only say that {s1_lower} [1]",
)
CHAT_USER = ("Tell me something interesting about {topic}.", "Explain {topic} to a ten-year-old.")
CHAT_ANSWER = (
    "Here's a fun fact about {topic}: sailors relied on them long before satellites, and many of the "
    "tricks they used are still taught today because they work when the electronics don't.",
    "Imagine {topic} as a story the sea tells: people noticed patterns, gave them names, and used them to "
    "travel safely. That's really all there is to it, and it's pretty amazing.",
)
TRIP_USER = "Plan a {n}-day trip to {city} in {month} on a budget of {amount} EUR, with one rainy-day option."
TRIP_ANSWER = (
    "Day 1: arrive in {city}, walk the old town and the harbour at sunset. Day 2: morning market, a museum "
    "for the rainy-day option, dinner at a local tavern. Day 3: a boat trip along the coast. Estimated "
    "total: about {amount} EUR including lodging in a guesthouse."
)


def _fill(rng: random.Random, user: str) -> dict[str, Any]:
    return {
        "plan": rng.choice(PLANS),
        "product": rng.choice(PRODUCTS),
        "region": rng.choice(REGIONS),
        "thing": rng.choice(THINGS),
        "day": rng.choice(DAYS),
        "code": rng.choice(CODES),
        "n": rng.randint(3, 40),
        "user": user,
    }


def make_support(rng: random.Random, user: str) -> tuple[list[dict[str, str]], str, dict[str, Any] | None]:
    f = _fill(rng, user)
    i = rng.randrange(len(SUPPORT_USER))
    msgs = [
        {"role": "system", "content": SUPPORT_SYSTEM.format(**f)},
        {"role": "user", "content": SUPPORT_USER[i].format(**f)},
    ]
    answer = SUPPORT_ANSWER[min(i, len(SUPPORT_ANSWER) - 1) if rng.random() < 0.8 else rng.randrange(7)]
    return msgs, answer.format(**f), {"shipyard.variables": {"plan": f["plan"]}}


def make_classify(rng: random.Random, user: str) -> tuple[list[dict[str, str]], str, dict[str, Any] | None]:
    f = _fill(rng, user)
    ticket = rng.choice(SUPPORT_USER).format(**f)
    msgs = [{"role": "system", "content": CLASSIFY_SYSTEM}, {"role": "user", "content": ticket}]
    out = f'{{"label": "{rng.choice(LABELS)}", "confidence": {rng.uniform(0.55, 0.99):.2f}}}'
    return msgs, out, {"shipyard.variables": {"ticket": ticket[:80]}}


def make_summarize(rng: random.Random, user: str) -> tuple[list[dict[str, str]], str, dict[str, Any] | None]:
    doc = " ".join(rng.sample(DOC_SENTENCES, rng.randint(4, 7)))
    msgs = [{"role": "system", "content": SUMMARIZE_SYSTEM}, {"role": "user", "content": "Document:\n" + doc}]
    return msgs, "\n".join(rng.sample(SUMMARY_BULLETS, 3)), None


def make_code(rng: random.Random, user: str) -> tuple[list[dict[str, str]], str, dict[str, Any] | None]:
    what, how = rng.choice(FUNCS)
    msgs = [
        {"role": "system", "content": CODE_SYSTEM},
        {"role": "user", "content": rng.choice(CODE_USER).format(what=what, how=how)},
    ]
    return msgs, rng.choice(CODE_ANSWER).format(how=how), None


def make_rag(rng: random.Random, user: str) -> tuple[list[dict[str, str]], str, dict[str, Any] | None]:
    s1, s2 = rng.sample(SNIPPETS, 2)
    q = rng.choice(RAG_QUESTIONS)
    msgs = [
        {"role": "system", "content": RAG_SYSTEM.format(s1=s1, s2=s2)},
        {"role": "user", "content": q},
    ]
    answer = rng.choice(RAG_ANSWERS).format(s1=s1, s2=s2, s1_lower=s1[0].lower() + s1[1:])
    return msgs, answer, {"shipyard.variables": {"question": q}}


def make_chat(rng: random.Random, user: str) -> tuple[list[dict[str, str]], str, dict[str, Any] | None]:
    topic = rng.choice(TOPICS)
    msgs = [{"role": "user", "content": rng.choice(CHAT_USER).format(topic=topic)}]
    return msgs, rng.choice(CHAT_ANSWER).format(topic=topic), None


def make_trip(rng: random.Random, user: str) -> tuple[list[dict[str, str]], str, dict[str, Any] | None]:
    f = {
        "n": rng.randint(2, 5),
        "city": rng.choice(CITIES),
        "month": rng.choice(MONTHS),
        "amount": rng.randrange(400, 3000, 50),
    }
    return [{"role": "user", "content": TRIP_USER.format(**f)}], TRIP_ANSWER.format(**f), None


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec(
        "support", 0.34, 3, ((GPT4O_MINI, 0.9), (HAIKU, 0.1)), HAIKU, 0.7, 120, 0.45, 0.04,
        {"temperature": 0.3, "max_tokens": 512}, ("support-agent", ((3, 0.85), (4, 0.15))), make_support,
    ),
    RouteSpec(
        "classify", 0.25, 2, ((GPT4O_MINI, 1.0),), MISTRAL, 0.0, 14, 0.2, 0.035,
        {"temperature": 0.0, "max_tokens": 32}, ("ticket-classifier", ((2, 1.0),)), make_classify,
    ),
    RouteSpec(
        "summarize", 0.14, 5, ((LLAMA70B, 1.0),), None, 0.1, 160, 0.35, 0.025,
        {"temperature": 0.2, "max_tokens": 400}, None, make_summarize,
    ),
    RouteSpec(
        "code-assist", 0.10, 7, ((GPT4O, 0.8), (SONNET, 0.2)), SONNET, 0.95, 420, 0.5, 0.045,
        {"temperature": 0.2, "max_tokens": 2048}, None, make_code,
    ),
    RouteSpec(
        "rag-qa", 0.12, 4, ((MISTRAL, 1.0),), GPT4O_MINI, 0.5, 90, 0.4, 0.04,
        {"temperature": 0.1, "max_tokens": 300}, ("rag-answer", ((4, 0.5), (5, 0.5))), make_rag,
    ),
    RouteSpec(
        "default", 0.03, 1, ((GEMMA, 1.0),), None, 0.3, 60, 0.4, 0.02,
        {"max_tokens": 128}, None, make_chat,
    ),
)  # fmt: skip
OTLP_SHARE = 0.02  # traces from an OpenTelemetry-instrumented app calling OpenAI directly
TAG_SETS = (None, None, None, ["web"], ["mobile"], ["web", "beta"], ["api"], ["batch"], ["mobile", "beta"])
FEEDBACK_COMMENTS = (
    None, None, None, "Exactly what I needed", "Too long", "Wrong answer about billing", "Thanks!",
    "Did not solve my problem", "Clear and fast", "It ignored my question about regions",
)  # fmt: skip

# (error.type, gateway status, retryable, message template, share of first-attempt failures)
FAILURES = (
    ("http_429", 429, True, "target `{t}` answered HTTP 429: Rate limit reached for requests", 0.40),
    ("http_503", 502, True, "target `{t}` answered HTTP 503: The server is overloaded", 0.25),
    ("timeout", 504, True, "target `{t}` timed out after {s:g}s", 0.15),
    ("http_400", 400, False, "target `{t}` answered HTTP 400: maximum context length exceeded", 0.10),
    ("client_closed_request", 499, False, "client disconnected mid-stream", 0.10),
)
_FAIL_CUM = tuple(sum(f[4] for f in FAILURES[: i + 1]) for i in range(len(FAILURES)))
RESCUE = 0.6  # share of retryable first-attempt failures that the fallback then answers

# -- generation -------------------------------------------------------------------------------------


def diurnal(t: float) -> float:
    """Relative traffic at unix time t: busy afternoons (UTC), quiet nights, lighter weekends."""
    hour = (t % 86400) / 3600
    weekday = int(t // 86400 + 3) % 7  # 1970-01-01 was a Thursday; 5, 6 = Saturday, Sunday
    return (1.0 + 0.65 * math.sin((hour - 9) / 24 * 2 * math.pi)) * (0.6 if weekday >= 5 else 1.0)


def timestamps(rng: random.Random, n: int, start: float, end: float) -> list[float]:
    """n sorted times in [start, end) following the daily cycle (rejection sampling)."""
    out: list[float] = []
    span = end - start
    top = 1.65
    while len(out) < n:
        t = start + rng.random() * span
        if rng.random() * top < diurnal(t):
            out.append(t)
    out.sort()
    return out


class Generator:
    def __init__(self, seed: int, start: float, end: float) -> None:
        self.rng = random.Random(seed)
        self.route_cum = list(_cumulative([r.share for r in ROUTES] + [OTLP_SHARE]))
        span = end - start
        # One provider incident: for 40 minutes a day and a half before the end, `support`'s primary
        # model is slow and fails often (what an alert rule and the overview should show).
        self.incident = (end - 1.5 * 86400, end - 1.5 * 86400 + 2400) if span > 2 * 86400 else (0.0, 0.0)
        self.users = [f"user-{i:05d}" for i in range(6000)]
        self.feedback: list[dict[str, Any]] = []
        self.scores: list[dict[str, Any]] = []
        self.errors = 0
        self.spans = 0

    def span_id(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    def user(self) -> str | None:
        r = self.rng.random()
        if r < 0.15:
            return None
        # A few heavy users and a long tail, like real traffic.
        return self.users[int(len(self.users) * self.rng.random() ** 3)]

    def trace(self, t0: float) -> Trace:
        rng = self.rng
        i = bisect.bisect_left(self.route_cum, rng.random() * self.route_cum[-1])
        if i == len(ROUTES):
            return self.otlp_trace(t0)
        return self.gateway_trace(ROUTES[i], t0)

    def gateway_trace(self, route: RouteSpec, t0: float) -> Trace:
        rng = self.rng
        user = self.user()
        model = _pick(rng, route.targets)
        stream = rng.random() < route.stream_share
        messages, answer, attributes = route.make(rng, user or "anonymous")
        in_tokens = sum(len(m["content"]) for m in messages) // 4 + 6 * len(messages)
        out_tokens = max(1, int(route.out_tokens * math.exp(rng.gauss(0, route.out_sigma))))
        slow = 1.0
        fail_p = route.error_rate
        if route.name == "support" and self.incident[0] <= t0 < self.incident[1]:
            slow, fail_p = 2.5, 0.25
        trace_id = f"{int(t0 * 1000):012x}{rng.getrandbits(80):020x}"
        tr = Trace(
            operation="chat",
            trace_id=trace_id,
            start=t0,
            route=route.name,
            stream=stream,
            user_id=user,
            input=messages,
            attributes=attributes or {},
            route_version=route.version,
            tags=rng.choice(TAG_SETS),
        )
        if route.prompt is not None:
            tr.prompt, tr.prompt_version = route.prompt[0], _pick(rng, route.prompt[1])
        root_attrs: dict[str, Any] = {
            sc.OPERATION_NAME: "chat",
            sc.REQUEST_MODEL: route.name,
            sc.ROUTE: route.name,
            sc.STREAM: stream,
        }
        for k, v in route.params.items():
            root_attrs[sc.REQUEST_PARAMS[k]] = v
        root = Span(f"chat {route.name}", trace_id, None, self.span_id(), t0, 0.0, "ok", root_attrs)
        plan = [model] + (
            [route.fallback] if route.fallback is not None and route.fallback is not model else []
        )
        root_attrs[sc.STICKY] = user is not None
        root_attrs[sc.CANDIDATES] = [m.label for m in plan]
        tr.spans = [root]
        now = t0 + 0.00015
        failure = None
        if rng.random() < fail_p:
            failure = FAILURES[bisect.bisect_left(_FAIL_CUM, rng.random() * _FAIL_CUM[-1])]
            if failure[0] == "client_closed_request" and not stream:
                failure = FAILURES[0]
        attempt = 1
        if failure is not None and failure[0] != "client_closed_request":
            # The first attempt fails; a retryable failure moves on to the fallback, which usually
            # answers (the user never sees the error) and sometimes fails too.
            etype, status, retryable, message, _ = failure
            err = message.format(t=model.label, s=model.timeout_s)
            now = self.failed_attempt(tr, root, route, model, 1, now, etype, err)
            if not retryable:
                tr.attempts, tr.status, tr.status_code, tr.error = 1, "error", status, err
                return self.finish(tr, root, now, etype)
            if len(plan) == 1 or rng.random() >= RESCUE:
                if len(plan) > 1:
                    model = plan[1]
                    err = message.format(t=model.label, s=model.timeout_s)
                    now = self.failed_attempt(tr, root, route, model, 2, now, etype, err)
                tr.attempts, tr.status, tr.status_code = len(plan), "error", status
                tr.error = f"route `{route.name}`: all {len(plan)} attempt(s) failed; last error: {err}"
                return self.finish(tr, root, now, etype)
            model = plan[1]
            attempt = 2
        # A successful attempt (maybe cut short by the client).
        ttft = model.ttft_ms * slow * math.exp(rng.gauss(0, 0.35)) / 1000
        decode = out_tokens / (model.tokens_per_s * math.exp(rng.gauss(0, 0.15))) * slow
        cut = failure is not None and failure[0] == "client_closed_request"
        if cut:
            decode *= rng.uniform(0.1, 0.7)
            answer = answer[: max(1, int(len(answer) * rng.uniform(0.1, 0.7)))]
            out_tokens = max(1, len(answer) // 4)
        end = now + ttft + decode
        span = self.attempt_span(
            tr, root, model, attempt, route, now, end, "error" if cut else "ok", None, None
        )
        span.attributes[sc.RESPONSE_MODEL] = model.response_model
        span.attributes[sc.USAGE_INPUT_TOKENS] = in_tokens
        span.attributes[sc.USAGE_OUTPUT_TOKENS] = out_tokens
        if not cut:
            span.attributes[sc.RESPONSE_FINISH_REASONS] = ["length" if out_tokens > 2000 else "stop"]
        else:
            span.attributes[sc.ERROR_TYPE] = "client_closed_request"
        tr.spans.append(span)
        tr.attempts = attempt
        tr.target, tr.provider, tr.model = model.label, model.provider, model.response_model
        tr.model_version = model.version
        tr.input_tokens, tr.output_tokens = in_tokens, out_tokens
        tr.cost_usd = model.cost(in_tokens, out_tokens)
        tr.output = answer
        end += 0.0003
        if stream:
            tr.ttft_ms = (now + ttft - t0) * 1000
        if cut:
            tr.status, tr.status_code, tr.error = "error", 499, "client disconnected mid-stream"
            return self.finish(tr, root, end, "client_closed_request")
        if not stream:
            tr.ttft_ms = (end - t0) * 1000
        self.after(tr, route, end)
        return self.finish(tr, root, end, None)

    def failed_attempt(
        self, tr: Trace, root: Span, route: RouteSpec, model: Model, n: int, now: float, etype: str, err: str
    ) -> float:
        """Add a failed attempt span; returns when the next attempt starts (a fallback target is
        tried at once: the gateway backs off only between retries of the same target)."""
        took = {"timeout": model.timeout_s, "http_429": 0.12, "http_503": 0.9, "http_400": 0.08}[etype]
        if etype != "timeout":
            took *= self.rng.uniform(0.7, 1.3)
        tr.spans.append(self.attempt_span(tr, root, model, n, route, now, now + took, "error", etype, err))
        return now + took + 0.0002

    def attempt_span(
        self,
        tr: Trace,
        root: Span,
        model: Model,
        n: int,
        route: RouteSpec,
        start: float,
        end: float,
        status: str,
        etype: str | None,
        message: str | None,
    ) -> Span:
        attrs: dict[str, Any] = {
            sc.OPERATION_NAME: "chat",
            sc.PROVIDER_NAME: model.provider,
            sc.REQUEST_MODEL: model.response_model,
            sc.TARGET: model.label,
            sc.ATTEMPT: n,
        }
        for k, v in route.params.items():
            attrs[sc.REQUEST_PARAMS[k]] = v
        if etype is not None:
            attrs[sc.ERROR_TYPE] = etype
            attrs["error.message"] = message
        return Span(
            f"chat {model.response_model}",
            tr.trace_id,
            root.span_id,
            self.span_id(),
            start,
            end,
            status,
            attrs,
        )

    def finish(self, tr: Trace, root: Span, end: float, error_type: str | None) -> Trace:
        tr.end = root.end = end
        if error_type is not None:
            root.status = "error"
            root.attributes[sc.ERROR_TYPE] = error_type
            self.errors += 1
        if tr.ttft_ms is not None:
            root.attributes[sc.TTFT_MS] = round(tr.ttft_ms, 3)
        self.spans += len(tr.spans)
        return tr

    def otlp_trace(self, t0: float) -> Trace:
        """What an OpenTelemetry GenAI instrumentation of an app calling OpenAI directly sends."""
        rng = self.rng
        model = GPT4O_MINI
        messages, answer, _ = make_trip(rng, "")
        # OTel SDK trace ids are random, not time-ordered.
        trace_id = f"{rng.getrandbits(128):032x}"
        in_tokens = sum(len(m["content"]) for m in messages) // 4 + 6
        out_tokens = max(1, int(180 * math.exp(rng.gauss(0, 0.3))))
        latency = (
            model.ttft_ms * math.exp(rng.gauss(0, 0.3)) + out_tokens / model.tokens_per_s * 1000
        ) / 1000
        end = t0 + latency + 0.004
        failed = rng.random() < 0.02
        tr = Trace(
            operation="chat",
            trace_id=trace_id,
            start=t0,
            end=end,
            source="otlp",
            provider="openai",
            model=model.response_model,
            input=messages,
            output=None if failed else answer,
            attempts=1,
            user_id=self.user(),
            attributes={"service.name": "trip-planner", "deployment.environment": "production"},
        )
        root = Span("plan_trip", trace_id, None, self.span_id(), t0, end, "ok", {"app.step": "plan"})
        attrs: dict[str, Any] = {
            sc.OPERATION_NAME: "chat",
            sc.SYSTEM: "openai",
            sc.REQUEST_MODEL: "gpt-4o-mini",
            sc.REQUEST_TEMPERATURE: 0.7,
            sc.SERVER_ADDRESS: "api.openai.com",
        }
        child = Span(
            "chat gpt-4o-mini", trace_id, root.span_id, self.span_id(), t0 + 0.002, end - 0.002, "ok", attrs
        )
        if failed:
            tr.status, tr.status_code, tr.error = "error", 500, "APIConnectionError: Connection error."
            child.status = root.status = "error"
            attrs[sc.ERROR_TYPE] = "APIConnectionError"
            self.errors += 1
        else:
            tr.input_tokens, tr.output_tokens = in_tokens, out_tokens
            tr.cost_usd = model.cost(in_tokens, out_tokens)
            attrs.update(
                {
                    sc.RESPONSE_MODEL: model.response_model,
                    sc.RESPONSE_ID: f"chatcmpl-{rng.getrandbits(96):024x}",
                    sc.USAGE_INPUT_TOKENS: in_tokens,
                    sc.USAGE_OUTPUT_TOKENS: out_tokens,
                    sc.RESPONSE_FINISH_REASONS: ["stop"],
                }
            )
        # A plain instrumentation reports no time to first token, so OTLP ingest stores none.
        tr.spans = [root, child]
        self.spans += 2
        return tr

    def after(self, tr: Trace, route: RouteSpec, end: float) -> None:
        """User feedback and online-eval scores that some successful traces get later."""
        rng = self.rng
        r = rng.random()
        if route.name in ("support", "rag-qa", "code-assist") and r < 0.02:
            thumbs = rng.random() < 0.85
            up = rng.random() < (0.82 if route.name != "rag-qa" else 0.7)
            self.feedback.append(
                {
                    "trace_id": tr.trace_id,
                    "name": "user" if thumbs else "rating",
                    "kind": "thumbs" if thumbs else "numeric",
                    "score": (1.0 if up else 0.0) if thumbs else float(rng.choice((2, 3, 4, 4, 5, 5))),
                    "comment": rng.choice(FEEDBACK_COMMENTS),
                    "user_id": tr.user_id,
                    "created_at": end + rng.uniform(5, 600),
                }
            )
        if rng.random() < 0.05:
            scored = end + rng.uniform(2, 30)
            if route.name == "classify":
                ok = rng.random() < 0.99
                self._score(tr, "json_valid", 1.0 if ok else 0.0, ok, None, scored)
            elif route.name in ("support", "rag-qa"):
                rel = min(1.0, max(0.0, rng.gauss(0.82, 0.12)))
                why = "answers the question from the context" if rel >= 0.6 else "misses the user's question"
                self._score(
                    tr,
                    "relevance",
                    round(rel, 3),
                    rel >= 0.6,
                    {"judge": "gpt-4o-mini", "reason": why},
                    scored,
                )
                tox = round(rng.random() ** 8 * 0.3, 4)
                self._score(tr, "toxicity", tox, tox < 0.1, None, scored)

    def _score(
        self, tr: Trace, name: str, score: float, passed: bool, detail: dict[str, Any] | None, at: float
    ) -> None:
        self.scores.append(
            {
                "trace_id": tr.trace_id,
                "name": name,
                "score": score,
                "passed": passed,
                "detail": detail,
                "source": "online",
                "route": tr.route,
                "trace_time": tr.start,
                "created_at": at,
            }
        )


def _cumulative(values: Sequence[float]) -> list[float]:
    out, acc = [], 0.0
    for v in values:
        acc += v
        out.append(acc)
    return out


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, float]]) -> Any:
    if len(weighted) == 1:
        return weighted[0][0]
    r = rng.random() * sum(w for _, w in weighted)
    for item, w in weighted:
        r -= w
        if r < 0:
            return item
    return weighted[-1][0]


# -- store ------------------------------------------------------------------------------------------


def store_url(value: str) -> str:
    """A SQLAlchemy URL as given, or a SQLite file path turned into one."""
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def sqlite_files(url: str) -> list[Path]:
    if not url.startswith("sqlite"):
        return []
    db = Path(url.split("///", 1)[-1])
    return [db, db.with_name(db.name + "-wal")]


def generation_file(db: Path) -> Path:
    return db.with_name(db.name + ".generation.json")


def file_bytes(url: str) -> int:
    return sum(p.stat().st_size for p in sqlite_files(url) if p.exists())


def generate(
    url: str,
    n: int,
    start: float,
    end: float,
    *,
    seed: int = 0,
    batch: int = 2000,
    append: bool = False,
    progress: bool = True,
    analyze: bool = True,
) -> dict[str, Any]:
    """Write ``n`` traces timed in ``[start, end)`` to the store at ``url``; returns the numbers."""
    import sqlalchemy as sa
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from shipyard.store.db import Store
    from shipyard.store.tables import feedback, trace_scores
    from shipyard.store.traces import insert_traces

    store = Store(url)
    store.migrate()
    with store.engine.connect() as conn:
        existing = int(conn.exec_driver_sql("SELECT count(*) FROM traces").scalar() or 0)
    if existing and not append:
        sys.exit(
            f"the store already holds {existing:,} traces; pass --append to add more, or point --store at "
            "a new file"
        )
    if store.is_sqlite:
        # A bigger page cache for the bulk load only (this process's connections): the store's own
        # settings are untouched.
        sa.event.listen(store.engine, "connect", lambda c, _r: c.execute("PRAGMA cache_size=-131072"))
        store.engine.dispose()

    gen = Generator(seed, start, end)
    t_begin = time.perf_counter()
    cpu_begin = time.process_time()
    times = timestamps(gen.rng, n, start, end)
    insert_s = 0.0
    written = n_feedback = n_scores = 0
    columns = [
        TextColumn("[bold]traces"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8} traces/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("traces", total=n, rate="—")
        for lo in range(0, n, batch):
            traces = [gen.trace(t) for t in times[lo : lo + batch]]
            t0 = time.perf_counter()
            insert_traces(store, traces)
            if gen.feedback or gen.scores:
                with store.engine.begin() as conn:
                    if gen.feedback:
                        conn.execute(feedback.insert(), gen.feedback)
                    if gen.scores:
                        conn.execute(trace_scores.insert(), gen.scores)
                n_feedback += len(gen.feedback)
                n_scores += len(gen.scores)
                gen.feedback, gen.scores = [], []
            insert_s += time.perf_counter() - t0
            written += len(traces)
            rate = written / (time.perf_counter() - t_begin)
            bar.update(task, advance=len(traces), rate=f"{rate:,.0f}")
    load_s = time.perf_counter() - t_begin
    cpu_s = time.process_time() - cpu_begin
    t0 = time.perf_counter()
    with store.engine.connect() as conn:
        if analyze:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
        if store.is_sqlite:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    analyze_s = time.perf_counter() - t0
    with store.engine.connect() as conn:
        rollup_rows = int(conn.exec_driver_sql("SELECT count(*) FROM trace_rollups").scalar() or 0)
    store.close()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "store": url if not store.is_sqlite else str(sqlite_files(url)[0]),
        "traces": written,
        "spans": gen.spans,
        "feedback": n_feedback,
        "trace_scores": n_scores,
        "rollup_rows": rollup_rows,
        "errors": gen.errors,
        "error_rate": gen.errors / max(1, written),
        "days": round((end - start) / 86400, 3),
        "seed": seed,
        "batch": batch,
        "load_s": round(load_s, 1),
        "cpu_s": round(cpu_s, 1),
        "insert_s": round(insert_s, 1),
        "generate_s": round(load_s - insert_s, 1),
        "analyze_s": round(analyze_s, 1),
        "total_s": round(time.perf_counter() - t_begin, 1),
        "traces_per_s": round(written / load_s),
        "rows_per_s": round((written + gen.spans + n_feedback + n_scores) / load_s),
        "store_bytes": file_bytes(url) if store.is_sqlite else None,
        "loadavg": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store", required=True, help="SQLite file path, or a SQLAlchemy URL (postgresql+psycopg://…)."
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="Number of traces (default 1,000,000).")
    parser.add_argument("--days", type=float, default=7.0, help="Spread them over this many days ending now.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed (same seed, same traffic).")
    parser.add_argument("--batch", type=int, default=2000, help="Traces per insert transaction.")
    parser.add_argument("--end", type=float, default=None, help="Unix time of the last trace (default now).")
    parser.add_argument("--append", action="store_true", help="Add to a store that already holds traces.")
    parser.add_argument("--quiet", action="store_true", help="No progress bar.")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be at least 1")
    if args.days <= 0:
        parser.error("--days must be above 0")
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    end = time.time() if args.end is None else args.end
    results = generate(
        store_url(args.store),
        args.n,
        end - args.days * 86400,
        end,
        seed=args.seed,
        batch=args.batch,
        append=args.append,
        progress=not args.quiet,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "generate_traces.json").write_text(json.dumps(results, indent=2))
    files = sqlite_files(store_url(args.store))
    if files:
        # Next to the store too: the dashboard benchmark reports how that store was made.
        generation_file(files[0]).write_text(json.dumps(results, indent=2))
    size = results["store_bytes"]
    print(
        f"{results['traces']:,} traces ({results['spans']:,} spans, {results['feedback']:,} feedback, "
        f"{results['trace_scores']:,} scores; error rate {results['error_rate']:.1%}) "
        f"in {results['load_s']:.1f} s: "
        f"{results['traces_per_s']:,} traces/s, {results['rows_per_s']:,} rows/s "
        f"(store insert {results['insert_s']:.1f} s, generation {results['generate_s']:.1f} s); "
        f"ANALYZE {results['analyze_s']:.1f} s"
        + (f"; store file {size / 1e9:.2f} GB" if size is not None else "")
    )


if __name__ == "__main__":
    main()
