"""What ``GET /status`` answers: the gateway's health in one document (listeners, log, and each
destination's counters, backlog, errors and replays). The console's Overview renders the same."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from gateway import __version__

if TYPE_CHECKING:
    from gateway.runtime.gateway import Gateway


async def gateway_status(gateway: Gateway, started: float) -> dict[str, Any]:
    """The status of ``gateway``, whose admin API started at ``started`` (epoch seconds)."""
    backlog = {b.destination: b for b in await gateway.log.backlog(list(gateway.destinations))}
    stats = gateway.log.statistics()
    return {
        "version": __version__,
        "uptime_secs": round(time.time() - started, 1),
        "config": gateway.config.path,
        "listen": gateway.urls,
        "ready": await gateway.readiness(),
        "reloads": gateway.reloads,
        "sources": sorted(gateway.config.sources),
        "log": {"head_seq": stats.head_seq, "disk_bytes": stats.disk_bytes, "commits": stats.commits},
        "destinations": {
            did: {
                **struct_dict(running.worker.statistics()),
                "type": running.entity.core.type,
                "backlog_messages": backlog[did].messages if did in backlog else 0,
                "backlog_bytes_estimate": backlog[did].bytes_estimate if did in backlog else 0,
                "errors": [struct_dict(sample) for sample in running.worker.error_samples()],
                "details": _destination_status(running.destination),
                "replays": {
                    name: {
                        "start_seq": worker.replay.start_seq,
                        "end_seq": worker.replay.end_seq,
                        **struct_dict(worker.statistics()),
                    }
                    for name, worker in running.replays.items()
                    if worker.replay is not None
                },
            }
            for did, running in gateway.destinations.items()
        },
    }


def _destination_status(destination: Any) -> Any:
    """A destination's own ``status()``; a plugin bug there must not break ``/status``."""
    try:
        return destination.status()
    except Exception as error:
        return {"error": f"status() raised {type(error).__name__}: {error}"}


def struct_dict(value: Any) -> dict[str, Any]:
    """A msgspec Struct (or anything msgspec knows) as plain JSON-ready builtins."""
    result: dict[str, Any] = msgspec.to_builtins(value)
    return result
