"""The gateway: the OpenAI-compatible request path.

Public: ``service.Gateway`` (the request pipeline: route, limits, guards, attempts with retry and
fallback, tracing; one implementation for streams and whole answers), ``runtime`` (the live
providers and routes built from the registry), ``http.v1_routes``/``FastPath`` (the ``/v1``
endpoints), ``auth`` (keys, roles, sessions, CSRF), ``limits`` (rate limits and budgets),
``validation`` (request bodies), ``http_headers`` (security headers of everything served),
``openapi`` (the ``/v1`` schema). The gateway knows monitoring only through injected observers.
"""
