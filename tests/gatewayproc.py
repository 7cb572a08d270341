"""Run the real gateway daemon in a subprocess for end-to-end tests, and read what it delivered
(the process and the reader are public in ``gateway.testing``)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from gateway.config import LogConfig
from gateway.log import DeadLetter, LogReader, open_log_reader
from gateway.ops.audit import AuditReport, audit
from gateway.testing import GatewayProcess, read_jsonl

__all__ = [
    "WRITE_KEY",
    "GatewayProcess",
    "audit_log",
    "config_text",
    "gateway_cli",
    "log_cursors",
    "log_dead_letters",
    "read_jsonl",
    "read_log",
    "wait_until",
]

T = TypeVar("T")

WRITE_KEY = "test-write-key"


def config_text(data_dir: Path, *, extra: str = "", archive: bool = True, listen: str = "127.0.0.1:0") -> str:
    """A config with one tracking-API source (``WRITE_KEY``) and, by default, a file destination
    ``archive`` writing to ``data_dir/archive`` with short batching waits."""
    text = f"""
[server]
listen = "{listen}"
data_dir = "{data_dir}"
graceful_shutdown_secs = 5

[sources.web]
write_key = "{WRITE_KEY}"
"""
    if archive:
        text += f"""
[destinations.archive]
type = "file"
path = "{data_dir / "archive"}"
batch_max_wait_secs = 0.05
"""
    return text + extra


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy and return it; fail after ``timeout`` seconds,
    naming the condition (its source line) and what it last gave."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            try:
                condition = inspect.getsource(predicate).strip()
            except (OSError, TypeError):
                condition = repr(predicate)
            raise AssertionError(f"condition not met within {timeout}s (last {value!r}): {condition}")
        time.sleep(interval)


def gateway_cli(config_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m gateway ARGS --config CONFIG_PATH``, its output captured (``env`` added to ours)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def read_log(data_dir: Path, read: Callable[[LogReader], Awaitable[T]]) -> T:
    """``read`` the log in ``data_dir`` as the offline commands do (read-only; the daemon may run)."""

    async def main() -> T:
        async with open_log_reader(LogConfig(), data_dir) as reader:
            return await read(reader)

    return trio.run(main)


def audit_log(data_dir: Path, since_ms: int | None = None) -> AuditReport:
    """``gateway audit`` of the log in ``data_dir``."""
    return audit(read_log(data_dir, lambda reader: reader.books(since_ms)))


def log_dead_letters(data_dir: Path, destination: str | None = None) -> list[DeadLetter]:
    """The dead letters in the log in ``data_dir`` (at most 10,000)."""
    return read_log(data_dir, lambda reader: reader.dead_letters(destination=destination, limit=10_000))


def log_cursors(data_dir: Path) -> dict[str, tuple[int, int]]:
    """Every cursor of the log in ``data_dir``: name -> (seq, start_seq)."""
    return read_log(data_dir, lambda reader: reader.cursors())
