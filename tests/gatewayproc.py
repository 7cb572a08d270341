"""Run the real gateway daemon in a subprocess for end-to-end tests, and read what it delivered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


class GatewayProcess:
    """``python -m gateway run`` on a config file; ``url`` is known once it logged its start."""

    def __init__(self, config_path: Path, *, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.lines: list[str] = []

    def start(self, timeout: float = 20.0) -> GatewayProcess:
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        started = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if '"gateway_started"' in line:
                    self.url = json.loads(line)["listen"][0]
                    started.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not started.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("gateway did not start:\n" + "".join(self.lines))
        return self

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                self.kill()


def read_jsonl(folder: Path) -> list[dict[str, Any]]:
    """Every message in the JSON Lines files of a file destination, in file order."""
    messages = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                messages.append(json.loads(line))
    return messages


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
