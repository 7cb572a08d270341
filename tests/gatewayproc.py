"""Run the real gateway daemon in a subprocess for end-to-end tests, and read what it delivered
(the process and the reader are public in ``gateway.testing``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.testing import GatewayProcess, read_jsonl

__all__ = ["WRITE_KEY", "GatewayProcess", "config_text", "gateway_cli", "read_jsonl", "wait_until"]

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
    """Poll until ``predicate()`` is truthy and return it; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
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
