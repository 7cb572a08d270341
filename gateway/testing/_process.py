"""The real daemon in a subprocess (:class:`GatewayProcess`), for tests that kill it or need it
alone in its process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from gateway.testing._waiting import DEFAULT_WAIT_SECS


class GatewayProcess:
    """The real daemon, ``python -m gateway run`` on a config file, in a subprocess: for tests
    that kill it (``kill -9`` mid-delivery) or need it alone in its process. ``url`` is known
    once it logged its start; ``lines`` holds what it logged, and :meth:`wait_logged` waits for
    a line as it comes (no polling)."""

    def __init__(self, config_path: Path, *, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.lines: list[str] = []
        self._logged = threading.Condition()  # notified at each line, and when the output ends
        self._ended = False
        self._pump_thread: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> GatewayProcess:
        """Start the daemon and return once it logged ``gateway_started`` (it serves then).

        Raises:
            RuntimeError: it exited, or did not start within ``timeout`` seconds (with its output).
        """
        if self._pump_thread is not None and self.proc is not None and self.proc.poll() is not None:
            # The previous run's reader must have seen its end of output before this run
            # starts: otherwise its late "ended" would cut the new run's wait short.
            self._pump_thread.join(30)
        with self._logged:
            self.lines = []
            self._ended = False
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        self._pump_thread = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._pump_thread.start()
        try:
            started = self.wait_logged("gateway_started", within_secs=timeout)
        except AssertionError:
            self.kill()
            raise RuntimeError("gateway did not start:\n" + "".join(self.lines)) from None
        self.url = started["listen"][0]
        return self

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._logged:
                if self.proc is proc:
                    self.lines.append(line)
                self._logged.notify_all()
        with self._logged:
            if self.proc is proc:
                self._ended = True
            self._logged.notify_all()

    def wait_logged(self, *events: str, after: int = 0, within_secs: float = DEFAULT_WAIT_SECS) -> dict[str, Any]:
        """The first JSON log record named one of ``events`` among ``lines[after:]``, once the
        daemon logged it. Take ``after = len(process.lines)`` before acting, to wait for the
        line that the action causes rather than an earlier one.

        Raises:
            AssertionError: the daemon's output ended, or ``within_secs`` passed, first (with
                the last lines it logged).
        """
        names = {f'"event": "{event}"' for event in events}
        found: list[str] = []

        def logged() -> bool:
            found[:] = [line for line in self.lines[after:] if any(name in line for name in names)][:1]
            return bool(found) or self._ended

        with self._logged:
            self._logged.wait_for(logged, timeout=within_secs)
            if found:
                record: dict[str, Any] = json.loads(found[0])
                return record
            why = "the daemon's output ended" if self._ended else f"not within {within_secs}s"
            tail = "".join(self.lines[-20:])
        raise AssertionError(f"waited for {' or '.join(events)} in the gateway's log: {why}; it logged last:\n{tail}")

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
