"""The stages of the request pipeline, one concern each, shared by streamed and whole answers.
:class:`shipyard.gateway.service.Gateway` runs them in this order (the API key was checked at the
HTTP edge, ``gateway/http.py``, before the request got here):

1. ``trace``: the request's trace and root span (and, at the end, closing it);
2. ``guards``: the input guards (may redact the body or block the request);
3. ``plan``: the targets to try, in order, and the body each gets;
4. ``limits``: reserve the request's estimated use under its key's and route's limits;
5. ``cache``: the slot where a response cache answers instead of a provider;
6. ``attempts``: the one retry and fallback loop;
7. ``guards``: the output guards, on the whole answer or wrapped around the stream;
8. ``relay`` (streams) or ``payload`` (whole answers): the answer to the client, then the trace's
   end, the limits' settlement and the cache's store.

``context`` holds the :class:`~shipyard.gateway.stages.context.Request` they all read and extend.
"""
