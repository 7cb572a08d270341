"""The destinations the daemon runs: opening one from its config, its worker and replays, and
telling whether a reload may keep it running."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import structlog
import trio

from gateway.components import Destination, DestinationContext, Filter
from gateway.config import DestinationConfig, Entity, GatewayConfig
from gateway.delivery.replay import Replay
from gateway.delivery.worker import DestinationWorker
from gateway.log import IngestLog
from gateway.log.series import SeriesRecorder
from gateway.metrics import Metrics
from gateway.plugins import Registry
from gateway.privacy.classifier import Classifier

log = structlog.get_logger("gateway")

#: How long a stopping destination may take to finish the batches it has in flight.
WORKER_STOP_GRACE_SECS = 10.0


@dataclass
class RunningDestination:
    """A destination the daemon runs: its worker, and the replays under way beside it, in a
    nursery of their own, so a reload can stop one destination without touching the others."""

    entity: Entity[DestinationConfig]
    worker: DestinationWorker
    destination: Destination
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    #: Replays under way, by cursor name; they run beside the worker, in this nursery.
    replays: dict[str, DestinationWorker] = field(default_factory=dict)
    replay_scopes: dict[str, trio.CancelScope] = field(default_factory=dict)
    replay_ended: trio.Event = field(default_factory=trio.Event)  # set (and replaced) as each one ends
    nursery: trio.Nursery | None = None

    async def stop(self, grace_secs: float = WORKER_STOP_GRACE_SECS) -> None:
        """Finish the batches in flight (bounded), then close the destination. Replays stop
        too; their cursors stay, so they resume when the destination starts again."""
        self.worker.stop()
        for replay in self.replays.values():
            replay.stop()
        with trio.move_on_after(grace_secs):
            await self.done.wait()
        self.scope.cancel()  # still retrying: the batch stays unrecorded and is sent again later
        await self.done.wait()

    def start_replay(
        self,
        replay: Replay,
        ingest_log: IngestLog,
        filters: dict[str, Filter],
        metrics: Metrics,
        classifier: Classifier,
        series: SeriesRecorder | None = None,
    ) -> None:
        """Run ``replay`` beside the live worker; its cursor is forgotten once it reached its end."""
        worker = DestinationWorker(
            replay.destination,
            msgspec.structs.replace(self.entity.core, start_at="end"),
            self.destination,
            ingest_log,
            [(f, filters[f]) for f in self.entity.core.filters],
            metrics,
            classifier,
            replay=replay,
            series=series,
            secrets=self.worker.secrets,
        )
        self.replays[replay.name] = worker

        async def run() -> None:
            scope = self.replay_scopes[replay.name] = trio.CancelScope()
            try:
                with scope:
                    await worker.run()
            finally:
                del self.replays[replay.name], self.replay_scopes[replay.name]
                self.replay_ended.set()
                self.replay_ended = trio.Event()
            # Stopped (a reload, a shutdown): the cursor stays and the replay resumes later.
            if worker.statistics().cursor >= replay.end_seq:
                await ingest_log.forget_cursor(replay.name)
                log.info("replay_finished", destination=replay.destination, replay=replay.name)

        assert self.nursery is not None
        self.nursery.start_soon(run)

    def workers(self) -> tuple[DestinationWorker, ...]:
        """The live worker and every replay's."""
        return (self.worker, *self.replays.values())


async def open_destination(
    registry: Registry, config: GatewayConfig, did: str, entity: Entity[DestinationConfig], stack: AsyncExitStack
) -> Destination:
    """Build destination ``did`` from its config; ``stack`` closes it."""
    destination_type = registry.destinations[entity.core.type]
    context = DestinationContext(id=did, data_dir=Path(config.server.data_dir) / "destinations" / did)
    return await stack.enter_async_context(destination_type.factory(entity.options, context))


def same_destination(a: Entity[DestinationConfig], b: Entity[DestinationConfig]) -> bool:
    """Same type, delivery settings and options: the worker can go on (filters are swapped in place)."""
    # start_at only matters to a destination without a cursor, so it never restarts a worker.
    same_core = msgspec.structs.replace(a.core, filters=[], start_at="end") == msgspec.structs.replace(
        b.core, filters=[], start_at="end"
    )
    return same_core and (a.options == b.options)


async def close_all(opened: dict[str, tuple[Destination, AsyncExitStack]]) -> None:
    """Close the destinations a refused reload opened."""
    for _, stack in opened.values():
        with trio.CancelScope(shield=True):
            await stack.aclose()


def replay_of(cursor_name: str, start_seq: int) -> str | None:
    """The destination a replay cursor belongs to, or None when the cursor is not a replay's."""
    replay = Replay.parse(cursor_name, start_seq)
    return replay.destination if replay is not None else None
