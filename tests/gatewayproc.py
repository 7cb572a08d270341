"""Run the real gateway daemon in a subprocess for end-to-end tests, wait for what it does, and
read what it delivered (the process and the reader are public in ``gateway.testing``).

Waiting is on events, not the clock: :func:`wait_booked` asks the daemon's admin API to answer
once a destination has booked everything stored so far, and ``GatewayProcess.wait_logged``
returns when a line is logged.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import trio

from gateway.config import LogConfig
from gateway.log import DeadLetter, LogReader, open_log_reader
from gateway.ops.audit import AuditReport, audit
from gateway.testing import GatewayProcess, read_jsonl

__all__ = [
    "ADMIN_TOKEN",
    "WRITE_KEY",
    "GatewayProcess",
    "audit_log",
    "config_text",
    "gateway_cli",
    "log_cursors",
    "log_dead_letters",
    "read_jsonl",
    "read_log",
    "reload",
    "wait_booked",
    "wait_until",
]

T = TypeVar("T")

WRITE_KEY = "test-write-key"
#: The admin token of ``config_text(..., admin=True)``.
ADMIN_TOKEN = "test-admin-token-0123456789"


def config_text(
    data_dir: Path, *, extra: str = "", archive: bool = True, listen: str = "127.0.0.1:0", admin: bool = False
) -> str:
    """A config with one tracking-API source (``WRITE_KEY``) and, by default, a file destination
    ``archive`` writing to ``data_dir/archive`` with short batching waits. ``admin`` adds the
    admin API (on a free port, ``ADMIN_TOKEN``), which :func:`wait_booked` needs."""
    # First: tests append keys to the last table (the archive's, or the source's without one).
    text = (
        f"""
[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"
"""
        if admin
        else ""
    )
    text += f"""
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


def admin_url(process: GatewayProcess) -> str:
    """The admin API's base URL, from the daemon's ``listener_started`` line."""
    for line in process.lines:
        if '"event": "listener_started"' in line and '"api": "admin"' in line:
            return str(json.loads(line)["listen"][0])
    raise AssertionError("the gateway runs no admin API: write its config with config_text(..., admin=True)")


def wait_booked(
    process: GatewayProcess, *destinations: str, token: str = ADMIN_TOKEN, within_secs: float = 30.0
) -> None:
    """Return once each destination has booked every message the daemon stored so far
    (delivered, filtered or dead-lettered, its cursor saved), as ``gateway destinations flush``
    does: the admin API answers when the cursor is there. Whatever the daemon acknowledged with
    a 2xx is stored, so after this the destination's output is complete, and an assertion that
    something did *not* arrive is meaningful.

    Raises:
        AssertionError: not within ``within_secs``, with how far the destination got.
    """
    base = admin_url(process)
    for destination in destinations or ("archive",):
        answer = httpx.post(
            f"{base}/destinations/{destination}/flush",
            params={"wait_secs": within_secs},
            headers={"Authorization": f"Bearer {token}"},
            timeout=within_secs + 30,
        )
        assert answer.status_code == 200, f"flush {destination}: {answer.status_code} {answer.text}"
        state = answer.json()
        if not state["done"]:
            raise AssertionError(
                f"{destination} did not book up to seq {state['upto_seq']} within {within_secs}s: cursor at "
                f"{state['cursor']}, delivered {state['delivered']}, last error {state['last_error']!r}"
            )


def reload(process: GatewayProcess) -> dict[str, Any]:
    """SIGHUP the daemon and return its answer, once logged: the ``config_reloaded`` or the
    ``config_reload_refused`` record."""
    assert process.proc is not None
    mark = len(process.lines)
    process.proc.send_signal(signal.SIGHUP)
    return process.wait_logged("config_reloaded", "config_reload_refused", after=mark)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy and return it; fail after ``timeout`` seconds,
    naming the condition (its source line) and what it last gave.

    Polling, kept for tests not yet moved to events (tests/test_replay.py): prefer
    :func:`wait_booked`, ``GatewayProcess.wait_logged`` and ``Sink.wait_until``."""
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
