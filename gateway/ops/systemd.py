"""The systemd notify protocol (sd_notify), spoken directly over ``NOTIFY_SOCKET``.

READY=1 once the listeners are open and the log is recovered; RELOADING=1 / READY=1 around a
reload; STOPPING=1 on shutdown; WATCHDOG=1 pings from the trio loop itself, so a stuck loop
stops the pings and systemd restarts the service. Without ``NOTIFY_SOCKET`` every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time

import structlog
import trio

log = structlog.get_logger("gateway.systemd")


class Notifier:
    """Sends state lines to systemd. Build it with :meth:`from_environment`."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        # "@name" is Linux's abstract namespace, spelled with a leading NUL on the wire.
        self._address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_interval = watchdog_usec / 2_000_000 if watchdog_usec else None

    @classmethod
    def from_environment(cls) -> Notifier:
        watchdog_pid = os.environ.get("WATCHDOG_PID")
        watchdog = os.environ.get("WATCHDOG_USEC")
        own = watchdog_pid is None or watchdog_pid == str(os.getpid())
        return cls(os.environ.get("NOTIFY_SOCKET"), int(watchdog) if watchdog and watchdog.isdigit() and own else None)

    async def notify(self, *lines: str) -> None:
        """Send ``KEY=value`` lines in one datagram; failures are logged, never raised."""
        if not self._address:
            return
        payload = "\n".join(lines).encode()
        try:
            with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                await sock.sendto(payload, self._address)
        except OSError as error:
            log.warning("sd_notify_failed", error=str(error))

    async def ready(self, status: str) -> None:
        await self.notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    async def reloading(self) -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        await self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    async def stopping(self) -> None:
        await self.notify("STOPPING=1")

    async def run_watchdog(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ping the watchdog at half its timeout, for ever (nothing to do without one)."""
        task_status.started()
        if self.watchdog_interval is None:
            return
        while True:
            await self.notify("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval)
