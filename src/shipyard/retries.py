"""One rule for waiting before another attempt, used by every retry in Shipyard: the gateway's
provider attempts, OTLP export, alert webhooks, the trace writer's store retries.

The wait doubles with each attempt from ``base``, is jittered to half to one-and-a-half times that
(so many clients retrying at once spread out), is capped, and never undercuts a ``Retry-After``
the other side asked for (itself capped, so a hostile or broken server cannot park us for hours).

Why not tenacity or stamina: what they would own is this function's ten lines. The loops around
it are where the work is, and each is different in ways a retry decorator does not express: the
gateway's attempts move on to the next target of a route between retries and record a span per
attempt (``gateway/stages/attempts.py``); a webhook delivery records its attempts, last status
and last error and stops at once on a 4xx other than 408/429; the OTLP exporter keeps a bounded
queue and counts what it dropped; the trace writer retries a batch a few times and then counts it
as dropped rather than stall the queue. Each calls this one rule for the wait, so the policy is
still written once.
"""

from __future__ import annotations

import random


def backoff(
    attempt: int,
    base: float,
    cap: float = 30.0,
    retry_after: float | None = None,
    *,
    jitter: bool = True,
    retry_after_cap: float | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
    delay = base * (2 ** max(0, attempt))
    if jitter:
        delay *= 0.5 + random.random()
    delay = min(delay, cap)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap if retry_after_cap is None else retry_after_cap))
    return max(0.0, delay)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header given in seconds; None when absent or not a number
    (the HTTP-date form is rare from APIs and is ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if seconds == seconds else None  # NaN is not a wait
