"""A real ``redis-server`` (Debian's) for the tests: its own temporary directory and port, the
persistence a test asks for (AOF with ``appendfsync always`` by default), started and restarted
by the test, and killed with SIGKILL when a test wants a crash.

Readiness is Redis's own "Ready to accept connections" line, never a sleep.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process in ``directory``, restartable on the same data and port."""

    def __init__(
        self, directory: Path, *, appendfsync: str = "always", appendonly: str = "yes", **settings: str
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.settings = {"appendonly": appendonly, "appendfsync": appendfsync, **settings}
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        argv = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--daemonize",
            "no",
            "--loglevel",
            "notice",
        ]
        for key, value in self.settings.items():
            argv += [f"--{key.replace('_', '-')}", value]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()

        def pump(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                self.lines.append(line)
                if "Ready to accept connections" in line:
                    ready.set()
            ready.set()  # it ended

        threading.Thread(target=pump, args=(self.proc,), daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            raise RuntimeError("redis-server did not start:\n" + "".join(self.lines[-20:]))
        return self

    def kill(self) -> None:
        """SIGKILL: whatever Redis had not written to its AOF is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()


def need_redis() -> None:
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is not installed (apt-get install -y redis-server; .ci/run does it)")
