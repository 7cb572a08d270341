"""The log engines the conformance suite (tests/log_conformance.py) holds to the protocol's
promises, each behind a small harness. A new engine joins by adding a harness here and its
factory to ``ENGINES``.

Run as ``python -m tests.log_engines DATA_DIR`` (or ``--redis URL``): the conformance traffic on
the SQLite log in DATA_DIR (or the Redis log at URL), printing the ids of each append once it
returned, until killed.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import msgspec
import redis
import trio

from gateway.config import LogConfig
from gateway.log import Clock, IngestLog, LogReader, open_log_reader, wall_clock_ms
from gateway.log.memory import MemoryLog, MemoryStore, open_memory_log, open_memory_reader
from gateway.log.redis import RedisLog, open_redis_log
from gateway.log.sqlite import DB_NAME, SQLiteLog, open_sqlite_log
from tests.redis_server import RedisServer, need_redis

REPO = Path(__file__).resolve().parent.parent


class LogEngine(Protocol):
    """How the conformance suite runs one engine, on storage of its own."""

    name: str
    #: Whether several gateways (processes, machines) may open the same log at once.
    shared: bool

    def open(
        self, config: LogConfig | None = None, *, clock_ms: Clock | None = None
    ) -> AbstractAsyncContextManager[IngestLog]:
        """The log on this harness's storage. Opening it again, after a close or a crash, must
        find everything that was committed."""
        ...

    def open_reader(self) -> AbstractAsyncContextManager[LogReader]:
        """The offline reader (what :func:`gateway.log.open_log_reader` gives) on the same storage."""
        ...

    def failing_commits(self, log: IngestLog) -> AbstractContextManager[None]:
        """Inside the block, the log's writes fail as the engine's do when its storage refuses
        them (a full disk, a lock held by another process); after it, they work again."""
        ...

    def vanish(self, log: IngestLog) -> None:
        """(Shared engines.) The gateway of ``log`` stops dead, as on SIGKILL: the cursors it
        holds are neither renewed nor let go."""
        ...

    async def crash_during_traffic(self, acks: int) -> set[str]:
        """Run :func:`tests.log_conformance.traffic` on the log where it can end without warning
        (SQLite: a subprocess, SIGKILLed), once at least ``acks`` message ids were acknowledged
        (their append returned); return every id acknowledged before the end."""
        ...


class SQLiteEngine:
    """The embedded SQLite engine, in a directory of its own."""

    name = "sqlite"
    shared = False

    def __init__(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path / "sqlite-log"

    def open(
        self, config: LogConfig | None = None, *, clock_ms: Clock | None = None
    ) -> AbstractAsyncContextManager[SQLiteLog]:
        return open_sqlite_log(config or LogConfig(), self.data_dir, clock_ms=clock_ms or wall_clock_ms)

    def open_reader(self) -> AbstractAsyncContextManager[LogReader]:
        return open_log_reader(LogConfig(), self.data_dir)

    @contextmanager
    def failing_commits(self, log: IngestLog) -> Iterator[None]:
        # Another process holds the write lock; the log gives up after 50 ms instead of 30 s.
        blocker = sqlite3.connect(self.data_dir / DB_NAME, timeout=0, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        writer: sqlite3.Connection = log._writer  # type: ignore[attr-defined]
        writer.execute("PRAGMA busy_timeout = 50")
        try:
            yield
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
            writer.execute("PRAGMA busy_timeout = 30000")

    async def crash_during_traffic(self, acks: int) -> set[str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return await _traffic_process([str(self.data_dir)], acks)


async def _traffic_process(args: list[str], acks: int) -> set[str]:
    """Run the conformance traffic in a process of its own (``python -m tests.log_engines
    ARGS``), SIGKILL it once ``acks`` ids were acknowledged; return every id it acknowledged."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tests.log_engines", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert process.stdout is not None and process.stderr is not None
    acked: set[str] = set()
    output = b""
    try:
        with trio.fail_after(60):
            while len(acked) < acks:
                chunk = await process.stdout.receive_some()
                if not chunk:
                    error = await process.stderr.receive_some()
                    raise AssertionError(f"the traffic process ended on its own: {error.decode()}")
                output += chunk
                *lines, output = output.split(b"\n")
                acked.update(mid for line in lines for mid in line.decode().split())
    finally:
        process.kill()  # SIGKILL, mid-commit most likely: the traffic's commits never pause
        await process.wait()
    # What it printed before the kill was acknowledged too.
    while chunk := await process.stdout.receive_some():
        output += chunk
    *lines, _ = output.split(b"\n")  # a line cut short by the kill is not an acknowledgement
    acked.update(mid for line in lines for mid in line.decode().split())
    return acked


class MemoryEngine:
    """The in-memory engine; its :class:`MemoryStore` is what a restart finds."""

    name = "memory"
    shared = False

    def __init__(self, tmp_path: Path) -> None:
        self.store = MemoryStore()

    def open(
        self, config: LogConfig | None = None, *, clock_ms: Clock | None = None
    ) -> AbstractAsyncContextManager[MemoryLog]:
        return open_memory_log(config, self.store, clock_ms=clock_ms)

    def open_reader(self) -> AbstractAsyncContextManager[LogReader]:
        return open_memory_reader(self.store)

    @contextmanager
    def failing_commits(self, log: IngestLog) -> Iterator[None]:
        assert isinstance(log, MemoryLog)
        log.fail_commits("disk_full")
        try:
            yield
        finally:
            log.fail_commits(None)

    async def crash_during_traffic(self, acks: int) -> set[str]:
        from tests.log_conformance import traffic

        acked: set[str] = set()
        with trio.CancelScope() as crash:

            def ack(ids: list[str]) -> None:
                acked.update(ids)
                if len(acked) >= acks:
                    crash.cancel()  # every task stops at its next checkpoint, mid-whatever

            log = MemoryLog(LogConfig(), self.store, clock_ms=wall_clock_ms)  # never closed
            await traffic(log, ack)
        return acked


class RedisEngine:
    """The Redis Streams engine on a redis-server of its own (AOF, ``appendfsync always``),
    which its crash test kills with SIGKILL too and restarts from the AOF."""

    name = "redis"
    shared = True

    def __init__(self, tmp_path: Path) -> None:
        need_redis()
        self.server = RedisServer(tmp_path / "redis").start()

    def config(self, config: LogConfig | None = None) -> LogConfig:
        return msgspec.structs.replace(config or LogConfig(), engine="redis", url=self.server.url, lease_secs=0.5)

    def open(
        self, config: LogConfig | None = None, *, clock_ms: Clock | None = None
    ) -> AbstractAsyncContextManager[RedisLog]:
        return open_redis_log(self.config(config), clock_ms=clock_ms or wall_clock_ms)

    def open_reader(self) -> AbstractAsyncContextManager[LogReader]:
        return open_log_reader(self.config(), Path("unused"))

    @contextmanager
    def failing_commits(self, log: IngestLog) -> Iterator[None]:
        # Redis at its maxmemory: it refuses every write (OOM), as a full Redis does.
        client = redis.Redis.from_url(self.server.url)
        client.config_set("maxmemory", 1)
        try:
            yield
        finally:
            client.config_set("maxmemory", 0)
            client.close()

    def vanish(self, log: IngestLog) -> None:
        assert isinstance(log, RedisLog)
        log._held.clear()  # neither renewed nor let go: as a gateway killed with SIGKILL

    async def crash_during_traffic(self, acks: int) -> set[str]:
        acked = await _traffic_process(["--redis", self.server.url], acks)
        # Redis itself dies too, and comes back from its AOF.
        await trio.to_thread.run_sync(self.server.restart)
        return acked


#: Every engine the conformance suite runs against, by name.
ENGINES: dict[str, Callable[[Path], LogEngine]] = {"sqlite": SQLiteEngine, "memory": MemoryEngine, "redis": RedisEngine}


def _print_ack(ids: list[str]) -> None:
    sys.stdout.write(" ".join(ids) + "\n")
    sys.stdout.flush()


async def _run_traffic(argv: list[str]) -> None:
    from tests.log_conformance import traffic

    if argv[0] == "--redis":
        async with open_redis_log(LogConfig(engine="redis", url=argv[1])) as redis_log:
            await traffic(redis_log, _print_ack)
        return
    async with open_sqlite_log(LogConfig(), Path(argv[0])) as log:
        await traffic(log, _print_ack)


if __name__ == "__main__":
    trio.run(_run_traffic, sys.argv[1:])
