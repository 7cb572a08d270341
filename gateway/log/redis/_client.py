"""Connecting to Redis (a URL, TLS, Sentinel), what its errors mean for the gateway, and the
durability check at start."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.config import LogConfig
from gateway.errors import CursorLostError, LogUnavailableError

#: A Redis call that takes longer than this fails (and the log reports ``redis_unreachable``).
SOCKET_TIMEOUT_SECS = 5.0
#: Connections per gateway: the committer, the head watcher, and the limiter's readers.
MAX_CONNECTIONS = 12


def connect(url: str, *, max_connections: int = MAX_CONNECTIONS, timeout: float = SOCKET_TIMEOUT_SECS) -> redis.Redis:
    """A client for ``url``: ``redis://``, ``rediss://``, ``unix://`` (redis-py's own URL forms),
    or ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`` for the primary
    a Sentinel group watches (its password, if any, is the primary's too).

    No retries: a write whose reply is lost must not be sent again behind the caller's back
    (its books would count it twice); the caller answers 503 and the client retries, which
    dedup turns into a duplicate.
    """
    options = {
        "socket_timeout": timeout,
        "socket_connect_timeout": min(timeout, 3.0),
        "retry": Retry(NoBackoff(), 0),
        "retry_on_error": [],
        "health_check_interval": 0,
    }
    if url.startswith("redis+sentinel://"):
        return _sentinel_primary(url, options)
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=timeout, **options)
    return redis.Redis(connection_pool=pool)


def _sentinel_primary(url: str, options: dict[str, Any]) -> redis.Redis:
    from redis.sentinel import Sentinel

    parts = urlsplit(url)
    hosts = []
    for address in parts.netloc.rpartition("@")[2].split(","):
        host, _, port = address.rpartition(":")
        hosts.append((host.strip("[]"), int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("a redis+sentinel:// URL names the service: redis+sentinel://host:26379/mymaster")
    db = int(path[1]) if len(path) > 1 else 0
    password = unquote(parts.password) if parts.password else None
    query = parse_qs(parts.query)
    sentinel = Sentinel(hosts, sentinel_kwargs={"password": password, **options} if password else options, **options)
    primary: redis.Redis = sentinel.master_for(
        path[0], db=db, password=password, ssl=query.get("ssl", ["false"])[0] == "true", redis_class=redis.Redis
    )
    return primary


def describe(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def unavailable(error: Exception) -> LogUnavailableError:
    """What a failed Redis call means for the caller: a reason code ``/ready`` and the 503 name."""
    text = str(error)
    if isinstance(error, redis.ResponseError) and text.startswith("CURSOR_LOST"):
        # "CURSOR_LOST held by <holder>" (the script's error, maybe prefixed by Redis's own words).
        return CursorLostError("?", text.rpartition(" ")[2])
    if "CURSOR_LOST" in text:
        return CursorLostError("?", text.rpartition(" ")[2])
    if isinstance(error, redis.ConnectionError | redis.TimeoutError):
        return LogUnavailableError("redis_unreachable", f"Redis does not answer ({text})")
    if text.startswith("OOM") or "maxmemory" in text:
        return LogUnavailableError("redis_full", f"Redis is at its maxmemory and refuses writes ({text})")
    if text.startswith(("READONLY", "MASTERDOWN", "NOREPLICAS", "NOMASTERLINK")) or "failover" in text.lower():
        return LogUnavailableError("redis_failover", f"Redis is failing over, or its primary is unknown ({text})")
    if text.startswith("LOADING"):
        return LogUnavailableError("redis_loading", f"Redis is loading its data after a restart ({text})")
    if text.startswith("MISCONF"):
        return LogUnavailableError("redis_persistence", f"Redis cannot persist its data and refuses writes ({text})")
    return LogUnavailableError("log_error", f"the log cannot be written ({type(error).__name__}: {text})")


def check_durability(client: redis.Redis, config: LogConfig) -> None:
    """Refuse to start on a Redis whose persistence is weaker than ``log.synchronous`` asks for,
    or that may evict the log's keys.

    Raises:
        LogUnavailableError: ``redis_not_durable`` naming the setting, or ``durability_unknown``
            when CONFIG is refused (managed Redis: set ``log.redis_durability_checked = false``
            once its persistence is known to meet the requirement).
    """
    try:
        settings: dict[str, str] = {}
        for name in ("appendonly", "appendfsync", "maxmemory-policy"):
            for key, value in client.config_get(name).items():
                settings[_text(key)] = _text(value)
    except redis.ResponseError as error:
        raise LogUnavailableError(
            "durability_unknown",
            f"Redis refuses CONFIG GET ({error}), so the gateway cannot check that it persists every write: "
            'if its persistence meets log.synchronous (AOF with appendfsync always for "full", everysec for '
            '"normal"), set log.redis_durability_checked = false',
        ) from error
    except redis.RedisError as error:
        raise unavailable(error) from error
    if settings.get("appendonly") != "yes":
        raise LogUnavailableError(
            "redis_not_durable",
            f"Redis has appendonly {settings.get('appendonly', '?')}: set appendonly yes (the AOF), or an "
            "acknowledged message could be lost when Redis restarts",
        )
    wanted = ("always",) if config.synchronous == "full" else ("always", "everysec")
    if settings.get("appendfsync") not in wanted:
        raise LogUnavailableError(
            "redis_not_durable",
            f"Redis has appendfsync {settings.get('appendfsync', '?')}, weaker than log.synchronous = "
            f'"{config.synchronous}" asks for: set appendfsync {" or ".join(wanted)}',
        )
    if settings.get("maxmemory-policy", "noeviction") != "noeviction":
        raise LogUnavailableError(
            "redis_not_durable",
            f"Redis has maxmemory-policy {settings['maxmemory-policy']}: it could evict the log's keys; "
            "set maxmemory-policy noeviction",
        )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
