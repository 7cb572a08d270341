"""Opening the SQLite log: the data_dir lock (one gateway process per log, held for as long as
the process lives), then the engine and its committer task."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from gateway.config import LogConfig
from gateway.errors import LogUnavailableError
from gateway.log import Clock, wall_clock_ms
from gateway.log.sqlite._engine import SQLiteLog
from gateway.log.sqlite._schema import DB_NAME

LOCK_NAME = "gateway.lock"


def lock_data_dir(data_dir: Path) -> int:
    """Hold ``data_dir`` for this process (an advisory lock the kernel drops when it exits, even
    on kill -9): two gateways writing one log would each deliver what the other stored, and
    their books would not balance. Returns the lock's file descriptor.

    Raises:
        LogUnavailableError: another process holds it.
    """
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LogUnavailableError(
                "locked", f"{data_dir} is in use by another gateway (pid {holder}): one data_dir serves one gateway"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)  # (which also lets go of the lock, if it was taken)
        raise
    return fd


@asynccontextmanager
async def open_sqlite_log(
    config: LogConfig,
    data_dir: Path,
    *,
    observe_commit: Callable[[float], None] | None = None,
    clock_ms: Clock = wall_clock_ms,
) -> AsyncIterator[SQLiteLog]:
    """Open (creating if needed) the SQLite log in ``data_dir`` and run its committer.

    Resource handling:
        On exit, new appends are refused, queued ones are committed, then the connections close.
    """

    def open_files() -> tuple[SQLiteLog, int]:
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = lock_data_dir(data_dir)
        try:
            return SQLiteLog(config, data_dir / DB_NAME, observe_commit, clock_ms=clock_ms), lock
        except BaseException as error:
            os.close(lock)
            if isinstance(error, sqlite3.Error):
                raise LogUnavailableError("log_error", f"cannot open the log {data_dir / DB_NAME}: {error}") from error
            raise

    sqlite_log, lock = await trio.to_thread.run_sync(open_files)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(sqlite_log.run_committer)
            nursery.start_soon(sqlite_log.run_filter_builder)
            try:
                yield sqlite_log
            finally:
                with trio.move_on_after(30, shield=True):
                    await sqlite_log.aclose()
                nursery.cancel_scope.cancel()
    finally:
        try:
            sqlite_log.close_connections()
        finally:
            os.close(lock)
