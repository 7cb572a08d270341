"""Opening the Redis log: connect, check Redis's durability, load the shared state, and run the
committer, the head watcher and the renewal of the cursors this gateway holds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import redis
import trio

from gateway.config import LogConfig
from gateway.errors import LogUnavailableError
from gateway.log import Clock, wall_clock_ms
from gateway.log.redis._client import check_durability, connect, describe, unavailable
from gateway.log.redis._engine import RedisLog


def _open_client(config: LogConfig, *, max_connections: int = 12) -> redis.Redis:
    try:
        client = connect(config.url, max_connections=max_connections)
        client.ping()
    except redis.RedisError as error:
        failure = unavailable(error)
        raise LogUnavailableError(
            failure.reason, f"cannot reach the log at {describe(config.url)}: {failure.detail}"
        ) from error
    except ValueError as error:
        raise LogUnavailableError("log_error", f"log.url {describe(config.url)}: {error}") from error
    return client


@asynccontextmanager
async def open_redis_log(
    config: LogConfig,
    *,
    observe_commit: Callable[[float], None] | None = None,
    clock_ms: Clock = wall_clock_ms,
) -> AsyncIterator[RedisLog]:
    """Open the log on the Redis ``config.url`` names, shared with every gateway using it.

    Raises:
        LogUnavailableError: Redis cannot be reached, or its persistence is weaker than
            ``log.synchronous`` asks for (``redis_not_durable``, naming the setting).

    Resource handling:
        On exit, new appends are refused, queued ones are committed, the cursors this gateway
        holds are let go (another gateway takes them over at once), then the connections close.
    """
    client = await trio.to_thread.run_sync(_open_client, config)
    watcher = None
    try:
        if config.redis_durability_checked:
            await trio.to_thread.run_sync(check_durability, client, config)
        watcher = await trio.to_thread.run_sync(lambda: _open_client(config, max_connections=1))
        redis_log = RedisLog(config, client, clock_ms=clock_ms, observe_commit=observe_commit)
        await redis_log.load()
        async with trio.open_nursery() as nursery:
            await nursery.start(redis_log.run_committer)
            await nursery.start(redis_log.run_watcher, watcher)
            await nursery.start(redis_log.run_renewer)
            try:
                yield redis_log
            finally:
                with trio.move_on_after(30, shield=True):
                    await redis_log.aclose()
                nursery.cancel_scope.cancel()
    finally:
        client.close()
        if watcher is not None:
            watcher.close()


@asynccontextmanager
async def open_redis_reader(config: LogConfig) -> AsyncIterator[RedisLog]:
    """A read-only view of the log on Redis (the offline commands: ``gateway audit``...).

    Raises:
        LogUnavailableError: Redis cannot be reached, or holds no log under ``log.prefix``
            (``missing``: a wrong URL or prefix must not pass for a clean bill).
    """
    client = await trio.to_thread.run_sync(_open_client, config)
    try:
        prefix = "{" + config.prefix + "}"
        if not await trio.to_thread.run_sync(client.exists, f"{prefix}:created"):
            raise LogUnavailableError(
                "missing", f"no log under the prefix {prefix} at {describe(config.url)}: no gateway has run with it"
            )
        reader = RedisLog(config, client, clock_ms=wall_clock_ms, read_only=True)
        await reader.load()
        yield reader
    finally:
        client.close()
