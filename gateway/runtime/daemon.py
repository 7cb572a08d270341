"""The daemon: one root nursery holding the log, the gateway's destinations and listeners,
the upkeep jobs and the reload watcher; and the signals that stop and reload it.

Shutdown order matters for durability: on SIGTERM/SIGINT the listeners stop accepting and let
requests in flight finish (their appends still commit), then the workers stop, then the log
commits what is queued.
"""

from __future__ import annotations

import gc
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import structlog
import trio

from gateway.config import GatewayConfig, load_config
from gateway.delivery.worker import REDRIVE_POLL_SECS
from gateway.ingest.redrive import redrive_source_letters
from gateway.log import open_log
from gateway.metrics import Metrics
from gateway.ops.systemd import Notifier
from gateway.plugins import Registry, build_registry, make_plugin_manager
from gateway.runtime.gateway import Gateway

log = structlog.get_logger("gateway")

# Frequent checkpoints stay small, so none of them stalls the disk for long.
CHECKPOINT_INTERVAL_SECS = 1.0
PURGE_INTERVAL_SECS = 10.0
#: How often the privacy field inventory's new and updated paths are saved to the log file.
INVENTORY_FLUSH_SECS = 5.0
#: How often the console's per-minute series are added to the log (a crash loses at most this).
SERIES_FLUSH_SECS = 5.0


async def _every(interval_secs: float, name: str, fn: Callable[[], Awaitable[object]]) -> None:
    """Run an upkeep job for ever; a failure is logged and retried at the next tick."""
    while True:
        try:
            await fn()
        except Exception:
            log.exception("log_upkeep_failed", job=name)
        await trio.sleep(interval_secs)


async def wait_for_stop_signal() -> None:
    """Return at the first SIGTERM or SIGINT (for callers that did not install handlers earlier)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        await _first_signal(signals)


async def _first_signal(signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        log.info("gateway_stopping", signal=signal.Signals(signum).name)
        return


async def serve_gateway(
    config: GatewayConfig,
    registry: Registry,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] = wait_for_stop_signal,
    watch: bool = True,
    sighups: AsyncIterator[int] | None = None,
    freeze_heap: bool = False,
    task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway on ``config`` until ``shutdown_trigger`` returns.

    ``task_status.started`` receives the :class:`Gateway` once requests can be served.
    ``sighups``: a SIGHUP receiver opened before startup, for the reload watcher.
    ``freeze_heap`` (the daemon, not tests that start many gateways in one process) exempts
    what startup allocated from garbage collection for good.
    """
    from gateway.runtime.reload import watch_for_reloads

    metrics = Metrics()
    notifier = Notifier.from_environment()
    async with (
        open_log(config.log, config.data_dir, observe_commit=metrics.commit_latency.observe) as ingest_log,
        trio.open_nursery() as nursery,
    ):
        gateway = Gateway(registry, ingest_log, config, nursery, metrics, notifier)
        binds = await gateway.start()
        if freeze_heap:
            # What startup built (modules, plugins, apps, config) lives as long as the process: move
            # it out of the collector's reach, so the full collections that batch decoding triggers
            # walk only the young objects instead of pausing requests over the whole heap.
            gc.freeze()
            gateway.heap_frozen = True
        nursery.start_soon(_every, CHECKPOINT_INTERVAL_SECS, "checkpoint", ingest_log.checkpoint)
        nursery.start_soon(_every, PURGE_INTERVAL_SECS, "purge", lambda: ingest_log.purge(gateway.cursor_holders()))
        nursery.start_soon(_every, INVENTORY_FLUSH_SECS, "inventory", gateway.flush_inventory)
        nursery.start_soon(_every, SERIES_FLUSH_SECS, "series", gateway.series.flush)
        nursery.start_soon(
            _every, REDRIVE_POLL_SECS, "source_redrive", lambda: redrive_source_letters(gateway.hub, registry.sources)
        )
        if watch:
            await nursery.start(watch_for_reloads, gateway, sighups)
        log.info(
            "gateway_started",
            listen=binds,
            sources=sorted(config.sources),
            destinations=sorted(config.destinations),
            data_dir=str(config.data_dir),
        )
        await notifier.ready(f"serving on {', '.join(binds)}")
        await nursery.start(notifier.run_watchdog)
        task_status.started(gateway)
        await shutdown_trigger()
        await notifier.stopping()
        await gateway.stop_listeners()
        await gateway.stop_destinations()
        try:
            await gateway.flush_inventory()
        except Exception:
            log.exception("log_upkeep_failed", job="inventory")
        try:
            await gateway.series.flush()
        except Exception:
            log.exception("log_upkeep_failed", job="series")
        nursery.cancel_scope.cancel()


def _after_the_receivers(signum: int, frame: object) -> None:
    """A stop or reload signal that arrives once the daemon has stopped: nothing left to do."""


def run(config_path: str | Path) -> None:
    """Load the config and serve until a stop signal. Raises on startup failure."""
    registry = build_registry(make_plugin_manager())
    config = load_config(config_path, registry)

    async def main() -> None:
        # Handlers first: a SIGTERM that arrives while starting up must still stop us cleanly,
        # and a SIGHUP must not end the process (its default action): it reloads once we run.
        # A signal still pending when the receivers close (a second SIGTERM, a reload racing the
        # stop) is raised again under the handlers they replaced: make those no-ops, or a clean
        # stop ends with 128 + signum. Blocked meanwhile, so none that arrives now is lost.
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        signal.pthread_sigmask(signal.SIG_BLOCK, handled)
        try:
            for signum in handled:
                signal.signal(signum, _after_the_receivers)
            with (
                trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals,
                trio.open_signal_receiver(signal.SIGHUP) as sighups,
            ):
                signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
                await serve_gateway(
                    config, registry, shutdown_trigger=lambda: _first_signal(signals), sighups=sighups, freeze_heap=True
                )
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)

    trio.run(main)
    # Stopped. Python's exit puts back the default action of every signal it handles, and a
    # second SIGTERM in those last milliseconds would end the clean stop with 143: ignore them.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
