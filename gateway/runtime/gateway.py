"""The running components of one gateway process (the ingest hub, the destinations, the
listeners) and how a config is applied to them, at start and on each reload.

A new config is validated and its components built before anything running is touched, then
swapped in between requests; what did not change keeps running untouched.
"""

from __future__ import annotations

import gc
import hashlib
import time
from contextlib import AsyncExitStack
from pathlib import Path

import msgspec
import structlog
import trio
from quart_trio import QuartTrio

from gateway.components import Destination, Filter
from gateway.config import DestinationConfig, Entity, GatewayConfig, parse_config_bytes
from gateway.delivery.replay import Replay
from gateway.delivery.worker import DestinationWorker
from gateway.errors import ConfigError
from gateway.http.app import Readiness, configure_app_limits, create_app
from gateway.http.connection import Limits
from gateway.http.server import fit_open_files, limits_from_config
from gateway.ingest.hub import IngestHub
from gateway.kit.mapping import forget_mapped_contexts
from gateway.log import BacklogInfo, IngestLog, user_spellings
from gateway.log.series import SeriesRecorder
from gateway.metrics import Metrics
from gateway.ops.admin import create_admin_app
from gateway.ops.systemd import Notifier
from gateway.plugins import Registry
from gateway.privacy.classifier import Classifier
from gateway.runtime.deletion import DestinationDeletion, UserDeletion, delete_at_destination
from gateway.runtime.destinations import (
    WORKER_STOP_GRACE_SECS,
    RunningDestination,
    close_all,
    open_destination,
    replay_of,
    same_destination,
)
from gateway.runtime.listeners import Listener, in_the_way, open_listener, wanted_listeners

log = structlog.get_logger("gateway")

#: How long a deletion waits for the sends under way to land before it calls each destination's
#: own ``delete_user`` (so what they carried is deleted there too).
DELETE_SETTLE_SECS = 10.0


def build_filters(config: GatewayConfig, registry: Registry) -> dict[str, Filter]:
    """Build every filter of ``config``.

    Raises:
        ConfigError: a filter's factory failed (a function that does not import), naming it.
    """
    filters = {}
    for fid, entity in config.filters.items():
        try:
            filters[fid] = registry.filters[entity.core.type].factory(entity.options)
        except Exception as error:  # a plugin's own check, or its bug: refuse the config, say which
            raise ConfigError(config.path, f"filters.{fid}", f"cannot be built: {error}") from error
    return filters


class Gateway:
    """The running components of one gateway process, and how a config is applied to them."""

    def __init__(
        self,
        registry: Registry,
        ingest_log: IngestLog,
        config: GatewayConfig,
        nursery: trio.Nursery,
        metrics: Metrics,
        notifier: Notifier | None = None,
    ) -> None:
        self.registry = registry
        self.notifier = notifier or Notifier(None)
        self.log = ingest_log
        self.config = config
        self.metrics = metrics
        self._nursery = nursery
        self.filters = build_filters(config, registry)
        self.classifier = Classifier([*registry.matchers.values(), *config.custom_matchers], config.privacy)
        #: The console's per-minute series (destinations' deliveries, sources' refusals).
        self.series = SeriesRecorder(ingest_log)
        self.hub = IngestHub(ingest_log, config, self.filters, metrics, self.classifier, series=self.series)
        self._backlog: list[BacklogInfo] = []
        metrics.watch_backlog(lambda: self._backlog)
        metrics.watch_filters(lambda: self.filters)
        self.app: QuartTrio = create_app(
            self.hub, registry.sources.values(), readiness=self.readiness, refresh_metrics=self.refresh_metrics
        )
        configure_app_limits(self.app, config.server)
        self.destinations: dict[str, RunningDestination] = {}
        self.listeners: dict[tuple[str, str], Listener] = {}
        self.admin_app = create_admin_app(self)
        self.admin_urls: list[str] = []
        self._apply_lock = trio.Lock()
        self._reload_lock = trio.Lock()
        self.reloads = {"ok": 0, "failed": 0}
        self._reload_ended = trio.Event()  # set (and replaced) as each reload ends
        #: sha256 of the config file content last loaded or tried, so a file watcher does not
        #: apply (or refuse) the same content twice.
        self.attempted_hash = config.digest
        #: The addresses the HTTP listener is bound to.
        self.urls: list[str] = []
        #: Whether serve_gateway froze the startup heap (gc.freeze), so a reload freezes again.
        self.heap_frozen = False
        #: server.max_connections, or less when the open files limit cannot hold that many.
        self.max_connections = config.server.max_connections

    async def readiness(self) -> Readiness:
        """What ``/ready`` reports: the log takes writes and a config is loaded, and why not.

        After a failed commit the log's checkpoint (every second) tries a small write, so it
        follows the disk within about a second of space coming back."""
        failure = self.log.unavailable()
        checks = {"log_writable": failure is None, "config_loaded": bool(self.listeners)}
        reasons = []
        if failure is not None:
            reason = f"log ({failure.reason}): {failure.detail}; ingestion answers 503 with Retry-After"
            if failure.reason == "disk_full":
                reason += (
                    "; delivery is paused too, since destination cursors cannot be saved"
                    " (nothing is lost: both resume when space returns)"
                )
            reasons.append(reason)
        if not self.listeners:
            reasons.append("config: no listener is running")
        return Readiness(ready=all(checks.values()), checks=checks, reasons=reasons)

    async def refresh_metrics(self) -> None:
        self._backlog = await self.log.backlog(list(self.destinations))

    # -- starting and stopping pieces ------------------------------------------------------

    async def _start_worker(
        self,
        did: str,
        entity: Entity[DestinationConfig],
        destination: Destination,
        stack: AsyncExitStack,
        filters: dict[str, Filter],
    ) -> None:
        worker = DestinationWorker(
            did,
            entity.core,
            destination,
            self.log,
            [(f, filters[f]) for f in entity.core.filters],
            self.metrics,
            self.classifier,
            series=self.series,
            secrets=self.config.secrets_of("destinations", did),
        )
        running = RunningDestination(entity=entity, worker=worker, destination=destination)
        resumed = [
            replay
            for name, (_, start) in (await self.log.cursors()).items()
            if (replay := Replay.parse(name, start)) is not None and replay.destination == did
        ]

        async def run(task_status: trio.TaskStatus[None]) -> None:
            try:
                async with stack:
                    with running.scope:
                        async with trio.open_nursery() as nursery:
                            running.nursery = nursery
                            await nursery.start(worker.run)
                            task_status.started()
                            for replay in resumed:
                                running.start_replay(
                                    replay, self.log, self.filters, self.metrics, self.classifier, self.series
                                )
            finally:
                running.done.set()

        await self._nursery.start(run)
        self.destinations[did] = running

    async def replay(self, did: str, since_ms: int, until_ms: int | None = None) -> Replay | None:
        """Send destination ``did`` again the stored messages received in ``[since_ms,
        until_ms)``, beside its live delivery, through its filters and privacy settings as they
        are now. Returns None when there is nothing to send.

        Raises:
            KeyError: ``did`` is not a running destination.
        """
        async with self._apply_lock:
            running = self.destinations[did]
            after, upto = await self.log.seq_range(since_ms, until_ms)
            if upto <= after:
                return None
            created = int(time.time() * 1000)
            names = await self.log.cursors()
            while (replay := Replay(did, after, upto, created)).name in names:
                created += 1
            await self.log.set_cursor(replay.name, after)
            running.start_replay(replay, self.log, self.filters, self.metrics, self.classifier, self.series)
        log.info("replay_started", destination=did, replay=replay.name, messages_at_most=upto - after)
        return replay

    async def cancel_replays(self, did: str) -> int:
        """Stop the replays of ``did`` and forget them; returns how many there were."""
        async with self._apply_lock:
            running = self.destinations.get(did)
            names = [name for name, (_, start) in (await self.log.cursors()).items() if replay_of(name, start) == did]
            if running is not None:
                for name in names:  # a send under way is abandoned: the replay is over
                    if name in running.replay_scopes:
                        running.replay_scopes[name].cancel()
                while any(name in running.replays for name in names):
                    await running.replay_ended.wait()
            for name in names:
                await self.log.forget_cursor(name)
        log.info("replays_cancelled", destination=did, replays=names)
        return len(names)

    async def _forget_replays_of_gone_destinations(self) -> None:
        for name, (_, start) in (await self.log.cursors()).items():
            did = replay_of(name, start)
            if did is not None and did not in self.config.destinations:
                await self.log.forget_cursor(name)
                log.warning("replay_dropped", replay=name, reason=f"destination {did!r} is no longer configured")

    def cursor_holders(self) -> list[str]:
        """The cursors the log must keep messages for: every configured destination's (running
        or not: a destination being restarted by a reload still needs its backlog) and every
        replay's of one."""
        configured = self.config.destinations
        return [
            *configured,
            *(
                name
                for name in self.log.statistics().cursors
                if (did := replay_of(name, 0)) is not None and did in configured
            ),
        ]

    def connection_limits(self) -> Limits:
        """The limits on each connection, from the config in force (listeners read it per connection)."""
        return limits_from_config(self.config.server, max_connections=self.max_connections)

    def _fit_connections(self, config: GatewayConfig) -> None:
        self.max_connections = fit_open_files(len(wanted_listeners(config)), config.server.max_connections)

    async def _start_listener(self, name: str, listen: str) -> list[str]:
        app = self.app if name == "http" else self.admin_app
        listener, binds = await open_listener(
            self._nursery, name, listen, app, self.config, self.connection_limits, self.metrics
        )
        self.listeners[(name, listen)] = listener
        if name == "http":
            self.urls = binds
        else:
            self.admin_urls = binds
        return binds

    async def stop_listeners(self) -> None:
        """Stop accepting; wait for the requests in flight (bounded by the graceful timeout)."""
        for listener in self.listeners.values():
            listener.stop.set()
        self.hub.tap.close_subscribers()  # console streams never end by themselves
        for listener in self.listeners.values():
            await listener.done.wait()

    async def stop_destinations(self) -> None:
        grace = min(WORKER_STOP_GRACE_SECS, self.config.server.graceful_shutdown_secs)
        async with trio.open_nursery() as nursery:
            for running in self.destinations.values():
                nursery.start_soon(running.stop, grace)

    # -- applying a config -----------------------------------------------------------------

    async def start(self) -> list[str]:
        """Start everything for the initial config; returns the bound HTTP addresses."""
        self.hub.inventory.load(await self.log.load_inventory())
        await self._forget_replays_of_gone_destinations()
        for did, entity in self.config.destinations.items():
            stack = AsyncExitStack()
            destination = await open_destination(self.registry, self.config, did, entity, stack)
            await self._start_worker(did, entity, destination, stack, self.filters)
        self._fit_connections(self.config)
        for name, listen in sorted(wanted_listeners(self.config), reverse=True):
            await self._start_listener(name, listen)
        return self.urls

    async def apply(self, new: GatewayConfig) -> None:
        """Swap to ``new``: build first, then swap what changed; on any error nothing changes.

        Raises:
            ConfigError: ``new`` changes something that needs a restart, or a component fails to build.
        """
        async with self._apply_lock:
            old = self.config
            for key in ("data_dir",):
                if getattr(new.server, key) != getattr(old.server, key):
                    raise ConfigError(new.path, f"server.{key}", "changing it needs a restart")
            for key in ("engine", "synchronous", "url", "prefix", "redis_durability_checked"):
                if getattr(new.log, key) != getattr(old.log, key):
                    raise ConfigError(new.path, f"log.{key}", "changing it needs a restart")
            filters = build_filters(new, self.registry)

            # Build: open every added or changed destination before stopping anything.
            opened: dict[str, tuple[Destination, AsyncExitStack]] = {}
            try:
                for did, entity in new.destinations.items():
                    running = self.destinations.get(did)
                    if running is None or not same_destination(running.entity, entity):
                        stack = AsyncExitStack()
                        await stack.__aenter__()
                        opened[did] = (await open_destination(self.registry, self.config, did, entity, stack), stack)
            except BaseException as error:
                await close_all(opened)
                if isinstance(error, Exception) and not isinstance(error, ConfigError):
                    raise ConfigError(new.path, "destinations", f"a destination failed to open: {error}") from error
                raise
            started: list[tuple[str, str]] = []
            displaced: list[tuple[str, str]] = []  # old listeners on a port a new one takes
            urls, admin_urls = self.urls, self.admin_urls
            wanted = wanted_listeners(new)
            try:
                for name, listen in sorted(wanted - set(self.listeners)):
                    for same_port in in_the_way(listen, self.listeners, wanted):
                        await self.listeners.pop(same_port).close()
                        displaced.append(same_port)
                    await self._start_listener(name, listen)
                    started.append((name, listen))
            except BaseException:
                await close_all(opened)
                for opened_listener in started:  # the swap is off: the listeners it opened go too
                    await self.listeners.pop(opened_listener).close()
                for name, listen in displaced:  # and the ones it closed come back
                    await self._start_listener(name, listen)
                self.urls, self.admin_urls = urls, admin_urls
                raise

            # Swap: sources and filters between requests (no await in between).
            self.config = new
            self.filters = filters
            if new.privacy != old.privacy:  # custom matchers are built from it
                self.classifier = Classifier([*self.registry.matchers.values(), *new.custom_matchers], new.privacy)
            self.hub.use_config(new, filters, self.classifier)
            configure_app_limits(self.app, new.server)
            self._fit_connections(new)
            self.log.reconfigure(new.log)
            for did, running in self.destinations.items():
                if did in new.destinations and did not in opened:
                    running.entity = new.destinations[did]
                    for worker in running.workers():
                        worker.set_filters(
                            [(f, filters[f]) for f in new.destinations[did].core.filters], self.classifier
                        )
            # Destinations: stop removed and changed ones, then start the changed and added ones
            # (each resumes from its persisted cursor, so nothing is skipped or sent twice).
            for did in [d for d in self.destinations if d not in new.destinations or d in opened]:
                await self.destinations.pop(did).stop()
            await self._forget_replays_of_gone_destinations()
            for did, (destination, stack) in opened.items():
                await self._start_worker(did, new.destinations[did], destination, stack, filters)
            # Listeners: new ones are already open; now close the ones no longer wanted.
            for unwanted in set(self.listeners) - wanted_listeners(new):
                self.listeners.pop(unwanted).stop.set()

    # -- privacy -----------------------------------------------------------------------------

    async def delete_user(self, user_id: str, *, keep_collecting: bool = False) -> UserDeletion:
        """Carry out a deletion request: suppress the user's later events (unless
        ``keep_collecting``), remove their messages and dead letters from the log, let the
        sends under way land, then call ``delete_user`` on every running destination."""
        spellings = user_spellings(user_id)
        async with self._apply_lock:  # the set of destinations holds still meanwhile
            if not keep_collecting:
                await self.log.set_suppressed(user_id, True)
            # The console's copies go too: the debugger's kept calls, and the error samples
            # (what was sent, the request and the answer) in memory and in the log.
            with self.series.withholding(user_id):
                report = await self.log.delete_user(user_id, list(self.destinations))
                deletions = self.log.deletions
                # Sends already under way may still carry the user's messages: let them land
                # first, so the destination's own deletion covers them. Later ones leave them out.
                with trio.move_on_after(DELETE_SETTLE_SECS):
                    for running in self.destinations.values():
                        for worker in running.workers():
                            await worker.wait_sends_from_before(deletions)
                for running in self.destinations.values():
                    for worker in running.workers():
                        worker.forget_samples_of(spellings)
            self.hub.tap.forget_user(spellings)
            forget_mapped_contexts()
            self.classifier.forget_values()
            results: dict[str, DestinationDeletion] = {}
            for did, running in self.destinations.items():
                settled = not any(worker.sending_from_before(deletions) for worker in running.workers())
                results[did] = await delete_at_destination(running, user_id, settled)
        log.info(
            "user_deletion_done",
            messages_removed=report.messages_removed,
            dead_letters_deleted=report.dead_letters_deleted,
            destinations={did: msgspec.to_builtins(result) for did, result in results.items()},
            suppressed=not keep_collecting,
        )
        return UserDeletion(
            user_id=user_id,
            messages_deleted=report.messages_deleted,
            tombstoned=report.tombstoned,
            dead_letters_deleted=report.dead_letters_deleted,
            pending=report.pending,
            destinations=results,
            suppressed=user_id in self.log.suppressed,
        )

    async def flush_inventory(self) -> None:
        """Save the field paths the inventory saw since the last flush (new or updated)."""
        rows = self.hub.inventory.changes()
        if rows:
            await self.log.save_inventory(rows)
            self.hub.inventory.saved(rows)

    async def reload(self, reason: str) -> bool:
        """Load the config file again and apply it; a bad one is refused and the old one stays.

        One at a time, read to apply: two at once (a SIGHUP while the watcher parses) could
        apply the older file last, and leave it running with the newer one's hash recorded."""
        async with self._reload_lock:
            try:
                return await self._reload(reason)
            finally:
                self._reload_ended.set()
                self._reload_ended = trio.Event()

    async def wait_reloads(self, count: int) -> None:
        """Return once ``count`` reloads have ended since startup, applied or refused (they are
        counted in :attr:`reloads`): for whoever triggered one it cannot await, by a SIGHUP or
        by writing the config file."""
        while sum(self.reloads.values()) < count:
            await self._reload_ended.wait()

    async def _reload(self, reason: str) -> bool:
        path = Path(self.config.path)
        try:
            text = await trio.to_thread.run_sync(path.read_bytes)
        except OSError as error:
            self.reloads["failed"] += 1
            log.error("config_reload_refused", reason=reason, path=str(path), error=f"cannot read it: {error}")
            return False
        self.attempted_hash = hashlib.sha256(text).hexdigest()
        await self.notifier.reloading()
        try:
            # Off the event loop: validating a large file must not hold up requests (a 14 MB one
            # stalled them for 20 s). Validation is pure; what imports code (the function
            # filter) does it when the filter is built, on the loop, in apply().
            new = await trio.to_thread.run_sync(
                lambda: parse_config_bytes(text, self.registry, path=str(path)), abandon_on_cancel=True
            )
            await self.apply(new)
        except ConfigError as error:
            await self.notifier.ready("reload refused; serving the previous config")
            self.reloads["failed"] += 1
            self.metrics.reloads.labels("failed").inc()
            log.error("config_reload_refused", reason=reason, path=error.path, where=error.where, error=error.problem)
            return False
        self.reloads["ok"] += 1
        self.metrics.reloads.labels("ok").inc()
        if self.heap_frozen:
            # The old config's objects were frozen with the rest at startup: free what the swap
            # let go of (cycles included), then freeze what is left again.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        await self.notifier.ready(f"serving on {', '.join(self.urls)}")
        log.info("config_reloaded", reason=reason, sources=sorted(new.sources), destinations=sorted(new.destinations))
        return True
