"""The limits stage: reserve what a request may use under its key's and its route's rate limits and
budgets before any provider is called (429 when it does not fit), and settle the reservation with
what it really cost when it ends.

It runs after the input guards and the route plan, not before them: a request the guards block
spends none of its key's requests per minute, and the reservation is priced on the redacted body
and on the most expensive target the plan may try.
"""

from __future__ import annotations

import logging

from shipyard.gateway.limits import Limiter, estimate, subjects_for
from shipyard.gateway.stages.context import Request

log = logging.getLogger("shipyard.gateway")


class Limits:
    """Admission and settlement against one :class:`~shipyard.gateway.limits.Limiter`; with none
    (the in-process gateways of eval runs) every request passes."""

    def __init__(self, limiter: Limiter | None = None) -> None:
        self.limiter = limiter

    def applies(self, req: Request) -> bool:
        """Whether the request has limits to pass: a plain check, so that unlimited traffic awaits
        nothing on its way through."""
        if self.limiter is None:
            return False
        principal = req.principal
        return req.route.limits is not None or (principal is not None and principal.limits is not None)

    async def admit(self, req: Request) -> None:
        """Reserve the request's estimated demand (``req.ticket``), or raise RateLimited having
        reserved nothing. Only for requests that :meth:`applies` to."""
        assert self.limiter is not None
        subjects = subjects_for(req.route, req.principal)
        if subjects:
            req.ticket = await self.limiter.admit(subjects, estimate(req.op, req.body, req.plan))

    def settle(self, req: Request, abandoned: bool = False) -> None:
        """Replace the reservation by what the request cost: the priced usage when it got any; the
        prompt's estimate when the client left while a provider was working (providers bill the
        prompt once they start); nothing when every attempt failed."""
        ticket = req.ticket
        if ticket is None:
            return
        assert self.limiter is not None
        trace = req.trace
        if trace.cost_usd is not None:
            usd = trace.cost_usd
            tokens = (trace.input_tokens or 0) + (trace.output_tokens or 0)
        elif abandoned:
            usd, tokens = ticket.demand.prompt_usd, ticket.demand.prompt_tokens
        else:
            usd, tokens = 0.0, 0
        try:
            self.limiter.settle(ticket, usd, tokens)
        except Exception:
            log.exception("settling usage for trace %s failed", trace.trace_id)
