"""Redis clients, one per process (and per event loop for asyncio). None on the embedded default."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

import redis
import redis.asyncio as aredis
from django.conf import settings

T = TypeVar("T")

_sync: redis.Redis | None = None
_async: dict[int, aredis.Redis] = {}
_lock = threading.Lock()


def pubsub_name(name: str) -> str:
    """Redis pub/sub channels are shared by every database of a server: the name carries this
    deployment's database number, so deployments (or test runs) on one Redis never hear each other."""
    global _pubsub_db
    if _pubsub_db is None:
        _pubsub_db = int(redis.connection.parse_url(settings.REDIS_URL).get("db") or 0) if settings.REDIS_URL else 0
    return f"{_pubsub_db}/{name}"


_pubsub_db: int | None = None


def sync_client() -> redis.Redis | None:
    global _sync
    if not settings.REDIS_URL:
        return None
    with _lock:
        if _sync is None:
            _sync = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5,
                                         health_check_interval=30)
        return _sync


def async_client() -> aredis.Redis | None:
    """A client bound to the running loop (redis.asyncio connections cannot cross loops)."""
    if not settings.REDIS_URL:
        return None
    loop = asyncio.get_running_loop()
    client = _async.get(id(loop))
    if client is None:
        # redis-py's default pool refuses the 101st concurrent command (MaxConnectionsError); this
        # one makes it wait for a connection, bounded by REDIS_POOL_TIMEOUT_S.
        pool = aredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=settings.REDIS_MAX_CONNECTIONS, timeout=settings.REDIS_POOL_TIMEOUT_S,
            socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)
        client = aredis.Redis.from_pool(pool)
        _async[id(loop)] = client
    return client


def per_async_client(registry: dict[int, T], make: Callable[[aredis.Redis], T]) -> T | None:
    """`make(client)` once per loop-bound client (see async_client), None without Redis: for
    objects that wrap the client and keep state (breakers, limiters)."""
    client = async_client()
    if client is None:
        return None
    obj = registry.get(id(client))
    if obj is None:
        obj = registry[id(client)] = make(client)
    return obj
