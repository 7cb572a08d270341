"""Reload triggers: SIGHUP, and changes to the config file (a cheap mtime + size + hash poll).

Each trigger calls :meth:`gateway.runtime.daemon.Gateway.reload`, which validates and builds before
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
    from gateway.runtime.gateway import Gateway

log = structlog.get_logger("gateway.reload")

POLL_INTERVAL_SECS = 1.0
#: A changed file is read once it has held still this long: a writer that truncates and then
#: writes (an editor saving in place, ``echo >``, a config tool) is not caught halfway.
SETTLE_SECS = 0.2
SETTLE_MAX_SECS = 5.0


def _content_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None  # missing for a moment: an editor replacing the file


#: What a poll compares: the file's device, inode, mtime and size. Device and inode catch a
#: replacement (an atomic rename, a Kubernetes ConfigMap's symlink swap) that kept the size and
#: copied the mtime (``cp -p``, ``rsync -a``, ``touch -r``).
Signature = tuple[int, int, int, int]


def _signature(path: Path) -> Signature | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


async def _poll_file(gateway: Gateway, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    path = Path(gateway.config.path)
    if not gateway.attempted_hash:  # a config not read from its file (GatewayConfig.digest)
        initial = await trio.to_thread.run_sync(_content_hash, path)
        gateway.attempted_hash = initial or ""
    task_status.started()  # what the running config was read from is known: any other content is a change
    last: Signature | None = None
    while True:
        await trio.sleep(POLL_INTERVAL_SECS)
        signature = await trio.to_thread.run_sync(_signature, path)
        if signature is None or signature == last:
            continue  # cheap check first; hash only when the file was touched
        settled = await _settled(path, signature)
        content = await trio.to_thread.run_sync(_content_hash, path)
        if content is None:
            continue  # unreadable for now (permissions, replaced): look again next time
        last = settled
        if content != gateway.attempted_hash:
            await gateway.reload("file_changed")


async def _settled(path: Path, signature: Signature) -> Signature:
    """Wait until the file's signature stays the same for :data:`SETTLE_SECS`, or at most
    :data:`SETTLE_MAX_SECS` (a file rewritten without a pause is read all the same); the last seen."""
    for _ in range(round(SETTLE_MAX_SECS / SETTLE_SECS)):
        await trio.sleep(SETTLE_SECS)
        now = await trio.to_thread.run_sync(_signature, path)
        if now is None or now == signature:
            return signature  # (gone for a moment: the hash says what to do)
        signature = now
    return signature


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
    the gateway said it was ready (``systemctl reload``, a config tool) must not. The file's
    content is read by then too, so a write made after that is seen as a change.
    """
    with ExitStack() as stack:
        if sighups is None:
            sighups = stack.enter_context(trio.open_signal_receiver(signal.SIGHUP))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_reload_on_signals, gateway, sighups)
            await nursery.start(_poll_file, gateway)
            task_status.started()
