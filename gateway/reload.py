"""Reload triggers: SIGHUP, and changes to the config file (a cheap mtime + size + hash poll).

Each trigger calls :meth:`gateway.runtime.Gateway.reload`, which validates and builds before
it swaps, so a half-written or bad file is refused and the running config keeps serving.
"""

from __future__ import annotations

import hashlib
import signal
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import trio

if TYPE_CHECKING:
    from gateway.runtime import Gateway

log = structlog.get_logger("gateway.reload")

POLL_INTERVAL_SECS = 1.0
#: A changed file is read once it has held still this long: a writer that truncates and then
#: writes (an editor saving in place, ``echo >``, a config tool) is not caught halfway.
SETTLE_SECS = 0.2


def _content_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None  # missing for a moment: an editor replacing the file


async def _poll_file(gateway: Gateway) -> None:
    path = Path(gateway.config.path)
    if not gateway.attempted_hash:
        initial = await trio.to_thread.run_sync(_content_hash, path)
        gateway.attempted_hash = initial or ""
    last_mtime = None
    while True:
        await trio.sleep(POLL_INTERVAL_SECS)
        try:
            stat = await trio.to_thread.run_sync(path.stat)
        except OSError:
            continue
        mtime = (stat.st_mtime_ns, stat.st_size)
        if mtime == last_mtime:
            continue  # cheap check first; hash only when the file was touched
        last_mtime = await _settled(path, mtime)
        content = await trio.to_thread.run_sync(_content_hash, path)
        if content is not None and content != gateway.attempted_hash:
            await gateway.reload("file_changed")


async def _settled(path: Path, mtime: tuple[int, int]) -> tuple[int, int]:
    """Wait until the file's (mtime, size) stays ``mtime`` for :data:`SETTLE_SECS`; the last seen."""
    while True:
        await trio.sleep(SETTLE_SECS)
        try:
            stat = await trio.to_thread.run_sync(path.stat)
        except OSError:
            return mtime  # gone for a moment (replaced): the hash says what to do
        now = (stat.st_mtime_ns, stat.st_size)
        if now == mtime:
            return mtime
        mtime = now


async def _reload_on_signals(gateway: Gateway, signals: AsyncIterator[int]) -> None:
    async for _ in signals:
        await gateway.reload("sighup")


async def watch_for_reloads(
    gateway: Gateway,
    sighups: AsyncIterator[int] | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Reload on SIGHUP and whenever the config file's content changes, for ever.

    ``sighups``: a SIGHUP receiver the caller opened early (``gateway run`` does, before it
    starts anything); without one, this opens its own. Either way SIGHUP is handled by the time
    this reports started: its default action ends the process, and a reload sent right after
    the gateway said it was ready (``systemctl reload``, a config tool) must not.
    """
    with ExitStack() as stack:
        if sighups is None:
            sighups = stack.enter_context(trio.open_signal_receiver(signal.SIGHUP))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_reload_on_signals, gateway, sighups)
            nursery.start_soon(_poll_file, gateway)
            task_status.started()
