"""The daemon: one root nursery holding the log, the destination workers, upkeep and HTTP.

Shutdown order matters for durability: on SIGTERM/SIGINT the HTTP server stops accepting and
lets requests in flight finish (their appends still commit, since the log is still open); then
the workers stop; then the log commits what is queued and closes.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import structlog
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from gateway.components import DestinationContext, Filter
from gateway.config import GatewayConfig, ServerConfig, load_config
from gateway.delivery import DestinationWorker
from gateway.ingest import IngestHub
from gateway.log import open_log
from gateway.plugins import Registry, build_registry, make_plugin_manager
from gateway.web import create_app, shield_sends

log = structlog.get_logger("gateway")

# Frequent checkpoints stay small, so none of them stalls the disk for long.
CHECKPOINT_INTERVAL_SECS = 1.0
PURGE_INTERVAL_SECS = 10.0


def hypercorn_config(server: ServerConfig) -> HypercornConfig:
    """Hypercorn settings from our validated ``[server]`` table, field by field."""
    config = HypercornConfig()
    config.bind = [server.listen]
    config.accesslog = None
    # A Logger instance (not "-") so hypercorn adds no handler of its own: one line per message.
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = server.graceful_shutdown_secs
    config.keep_alive_timeout = 75  # longer than the idle timeouts of common proxies
    return config


def build_filters(config: GatewayConfig, registry: Registry) -> dict[str, Filter]:
    return {fid: registry.filters[entity.core.type].factory(entity.options) for fid, entity in config.filters.items()}


async def wait_for_stop_signal() -> None:
    """Return at the first SIGTERM or SIGINT."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("gateway_stopping", signal=signal.Signals(signum).name)
            return


async def _every(interval_secs: float, name: str, fn: Callable[[], Awaitable[object]]) -> None:
    """Run an upkeep job for ever; a failure is logged and retried at the next tick."""
    while True:
        try:
            await fn()
        except Exception:
            log.exception("log_upkeep_failed", job=name)
        await trio.sleep(interval_secs)


async def serve_gateway(
    config: GatewayConfig,
    registry: Registry,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] = wait_for_stop_signal,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the gateway on ``config`` until ``shutdown_trigger`` returns.

    ``task_status.started`` receives the bound HTTP addresses once requests can be served.
    """
    filters = build_filters(config, registry)
    async with AsyncExitStack() as stack:
        ingest_log = await stack.enter_async_context(open_log(config.log, config.data_dir))
        workers = []
        for did, entity in config.destinations.items():
            destination_type = registry.destinations[entity.core.type]
            context = DestinationContext(id=did, data_dir=config.data_dir / "destinations" / did)
            destination = await stack.enter_async_context(destination_type.factory(entity.options, context))
            workers.append(
                DestinationWorker(did, entity.core, destination, ingest_log, [filters[f] for f in entity.core.filters])
            )
        hub = IngestHub(ingest_log, config, filters)
        app = create_app(hub, registry.sources.values())
        async with trio.open_nursery() as nursery:

            async def serve_then_stop(task_status: trio.TaskStatus[list[str]]) -> None:
                # serve() returns after its graceful shutdown; only then stop the workers.
                await serve(
                    shield_sends(app),
                    hypercorn_config(config.server),
                    shutdown_trigger=shutdown_trigger,
                    task_status=task_status,
                )
                nursery.cancel_scope.cancel()

            for worker in workers:
                await nursery.start(worker.run)
            destination_ids = list(config.destinations)
            nursery.start_soon(_every, CHECKPOINT_INTERVAL_SECS, "checkpoint", ingest_log.checkpoint)
            nursery.start_soon(_every, PURGE_INTERVAL_SECS, "purge", lambda: ingest_log.purge(destination_ids))
            binds = await nursery.start(serve_then_stop)
            log.info(
                "gateway_started",
                listen=binds,
                sources=sorted(config.sources),
                destinations=sorted(config.destinations),
                data_dir=str(config.data_dir),
            )
            task_status.started(binds)


def run(config_path: str | Path) -> None:
    """Load the config and serve until a stop signal. Raises on startup failure."""
    pm = make_plugin_manager()
    registry = build_registry(pm)
    config = load_config(config_path, registry)
    trio.run(serve_gateway, config, registry)
