"""Redis clients for the state gateway workers share (rate limits and budgets, the response cache).

Each client has one bounded pool of connections. A request that finds every connection busy
waits for one (up to ``redis_pool_timeout`` seconds) instead of failing: a burst of requests must
queue for Redis, not be refused because of it. redis-py's default pool does the opposite (it
raises "Too many connections" once its 100 connections are in use), which under 500 concurrent
requests turned most of them into 503s.
"""

from __future__ import annotations

from typing import Any

POOL_SIZE = 50
POOL_TIMEOUT_S = 10.0
SOCKET_TIMEOUT_S = 5.0


def async_client(url: str, max_connections: int = POOL_SIZE, timeout: float = POOL_TIMEOUT_S) -> Any:
    """A ``redis.asyncio.Redis`` on its own blocking pool of ``max_connections`` connections."""
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
    )
    return aioredis.Redis.from_pool(pool)
