"""The daemon: one root nursery holding the log, the destination workers, upkeep, the HTTP
listeners and the reload watcher.

Startup is "apply a config to an empty gateway"; a reload applies the next one. Either way the
new config is validated and its components are built before anything running is touched, then
swapped in between requests; what did not change keeps running untouched. Shutdown order matters
for durability: on SIGTERM/SIGINT the listeners stop accepting and let requests in flight finish
(their appends still commit), then the workers stop, then the log commits what is queued.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import structlog
import trio
from hypercorn.config import Config as HypercornConfig
from quart_trio import QuartTrio

from gateway.components import Destination, DestinationContext, Filter
from gateway.config import (
    DestinationConfig,
    Entity,
    GatewayConfig,
    load_config,
    parse_config_bytes,
)
from gateway.delivery.replay import Replay
from gateway.delivery.worker import REDRIVE_POLL_SECS, DestinationWorker
from gateway.errors import ConfigError, DeliveryError, exception_leaves
from gateway.http.app import Readiness, configure_app_limits, create_app, shield_sends, without_lifespan
from gateway.http.connection import Limits
from gateway.http.server import fit_open_files, limits_from_config, serve_http
from gateway.ingest.hub import IngestHub
from gateway.ingest.redrive import redrive_source_letters
from gateway.log import BacklogInfo, IngestLog, open_log
from gateway.metrics import Metrics
from gateway.ops.admin import create_admin_app
from gateway.ops.systemd import Notifier
from gateway.plugins import Registry, build_registry, make_plugin_manager
from gateway.privacy.classifier import Classifier

log = structlog.get_logger("gateway")

# Frequent checkpoints stay small, so none of them stalls the disk for long.
CHECKPOINT_INTERVAL_SECS = 1.0
PURGE_INTERVAL_SECS = 10.0
#: How often the privacy field inventory's new and updated paths are saved to the log file.
INVENTORY_FLUSH_SECS = 5.0
#: How long a deletion waits for the sends under way to land before it calls each destination's
#: own ``delete_user`` (so what they carried is deleted there too).
DELETE_SETTLE_SECS = 10.0
#: How long a stopping destination may take to finish the batches it has in flight.
WORKER_STOP_GRACE_SECS = 10.0


def hypercorn_config(listen: str) -> HypercornConfig:
    """Hypercorn's settings for one listener, field by field. The limits from ``[server]`` are
    not among them: gateway.http.connection applies those (keep-alive included), reading them
    for each connection."""
    config = HypercornConfig()
    config.bind = [listen]
    config.accesslog = None
    # A Logger instance (not "-") so hypercorn adds no handler of its own: one line per message.
    config.errorlog = logging.getLogger("hypercorn.error")
    # Connections the kernel queues before accept (hypercorn's default is 100): a burst of
    # thousands of clients connecting at once overflowed it, and some waited a minute.
    config.backlog = 4096
    return config


def reuse_port_socket(listen: str) -> socket.socket:
    """A TCP socket bound to ``listen`` (HOST:PORT) with SO_REUSEPORT, so that several gateway
    processes (``server.reuse_port``) accept on one address; the kernel hashes each new
    connection to one of them."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, int(port)))
    except BaseException:
        sock.close()
        raise
    return sock


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


def _same_destination(a: Entity[DestinationConfig], b: Entity[DestinationConfig]) -> bool:
    """Same type, delivery settings and options: the worker can go on (filters are swapped in place)."""
    # start_at only matters to a destination without a cursor, so it never restarts a worker.
    same_core = msgspec.structs.replace(a.core, filters=[], start_at="end") == msgspec.structs.replace(
        b.core, filters=[], start_at="end"
    )
    return same_core and (a.options == b.options)


class DestinationDeletion(msgspec.Struct, frozen=True):
    """What one destination's ``delete_user`` did: ``removed`` items, or the ``error`` it
    raised; ``supported`` is false when its type has no ``delete_user``. ``settled`` is false
    when a send that started before the deletion was still under way at the call."""

    removed: int = 0
    supported: bool = True
    settled: bool = True
    error: str | None = None


class UserDeletion(msgspec.Struct, frozen=True):
    """What ``gateway privacy delete`` removed, for the admin API and the command."""

    user_id: str = msgspec.field(name="userId")
    messages_deleted: int
    tombstoned: int
    dead_letters_deleted: int
    pending: dict[str, int]
    destinations: dict[str, DestinationDeletion]
    suppressed: bool


@dataclass
class _RunningDestination:
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


@dataclass
class _Listener:
    listen: str
    stop: trio.Event = field(default_factory=trio.Event)
    done: trio.Event = field(default_factory=trio.Event)


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
        self.hub = IngestHub(ingest_log, config, self.filters, metrics, self.classifier)
        self._backlog: list[BacklogInfo] = []
        metrics.watch_backlog(lambda: self._backlog)
        metrics.watch_filters(lambda: self.filters)
        self.app: QuartTrio = create_app(
            self.hub, registry.sources.values(), readiness=self.readiness, refresh_metrics=self.refresh_metrics
        )
        configure_app_limits(self.app, config.server)
        self.destinations: dict[str, _RunningDestination] = {}
        self.listeners: dict[tuple[str, str], _Listener] = {}
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

    async def _open_destination(
        self, did: str, entity: Entity[DestinationConfig], stack: AsyncExitStack
    ) -> Destination:
        destination_type = self.registry.destinations[entity.core.type]
        context = DestinationContext(id=did, data_dir=Path(self.config.server.data_dir) / "destinations" / did)
        return await stack.enter_async_context(destination_type.factory(entity.options, context))

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
        )
        running = _RunningDestination(entity=entity, worker=worker, destination=destination)
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
                                self._start_replay(running, replay)
            finally:
                running.done.set()

        await self._nursery.start(run)
        self.destinations[did] = running

    def _start_replay(self, running: _RunningDestination, replay: Replay) -> None:
        entity = running.entity
        worker = DestinationWorker(
            replay.destination,
            msgspec.structs.replace(entity.core, start_at="end"),
            running.destination,
            self.log,
            [(f, self.filters[f]) for f in entity.core.filters],
            self.metrics,
            self.classifier,
            replay=replay,
        )
        running.replays[replay.name] = worker

        async def run() -> None:
            scope = running.replay_scopes[replay.name] = trio.CancelScope()
            try:
                with scope:
                    await worker.run()
            finally:
                del running.replays[replay.name], running.replay_scopes[replay.name]
                running.replay_ended.set()
                running.replay_ended = trio.Event()
            # Stopped (a reload, a shutdown): the cursor stays and the replay resumes later.
            if worker.statistics().cursor >= replay.end_seq:
                await self.log.forget_cursor(replay.name)
                log.info("replay_finished", destination=replay.destination, replay=replay.name)

        assert running.nursery is not None
        running.nursery.start_soon(run)

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
            self._start_replay(running, replay)
        log.info("replay_started", destination=did, replay=replay.name, messages_at_most=upto - after)
        return replay

    async def cancel_replays(self, did: str) -> int:
        """Stop the replays of ``did`` and forget them; returns how many there were."""
        async with self._apply_lock:
            running = self.destinations.get(did)
            names = [name for name, (_, start) in (await self.log.cursors()).items() if _replay_of(name, start) == did]
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
            did = _replay_of(name, start)
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
                if (did := _replay_of(name, 0)) is not None and did in configured
            ),
        ]

    def _wanted_listeners(self, config: GatewayConfig) -> set[tuple[str, str]]:
        """(app, address) pairs a config asks for: the HTTP API, and the admin API if it has a token."""
        wanted = {("http", config.server.listen)}
        if config.admin.token:
            wanted.add(("admin", config.admin.listen))
        return wanted

    def connection_limits(self) -> Limits:
        """The limits on each connection, from the config in force (listeners read it per connection)."""
        return limits_from_config(self.config.server, max_connections=self.max_connections)

    def _fit_connections(self, config: GatewayConfig) -> None:
        self.max_connections = fit_open_files(len(self._wanted_listeners(config)), config.server.max_connections)

    async def _start_listener(self, name: str, listen: str) -> list[str]:
        listener = _Listener(listen)
        app = self.app if name == "http" else self.admin_app
        settings = hypercorn_config(listen)
        shared: socket.socket | None = None
        if name == "http" and self.config.server.reuse_port:
            try:
                shared = reuse_port_socket(listen)
            except OSError as error:
                raise ConfigError(self.config.path, "server.listen", f"cannot listen on {listen}: {error}") from error
            # hypercorn takes a socket as fd://N (it keeps a duplicate; ours closes with the listener).
            settings.bind = [f"fd://{shared.fileno()}"]

        async def run(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await serve_http(
                    without_lifespan(shield_sends(app)),
                    settings,
                    api=name,
                    limits=self.connection_limits,
                    metrics=self.metrics,
                    shutdown_trigger=listener.stop.wait,
                    task_status=task_status,
                )
            finally:
                if shared is not None:
                    shared.close()
                listener.done.set()

        try:
            binds: list[str] = await self._nursery.start(run)
        except Exception as error:  # (not Cancelled or KeyboardInterrupt: those go on up)
            failure = _failure_in(error)  # (a nursery may wrap it in an exception group)
            key = "server.listen" if name == "http" else "admin.listen"
            raise ConfigError(self.config.path, key, f"cannot listen on {listen}: {failure}") from error
        self.listeners[(name, listen)] = listener
        if name == "http":
            self.urls = binds
        else:
            self.admin_urls = binds
        log.info("listener_started", api=name, listen=binds)
        return binds

    async def stop_listeners(self) -> None:
        """Stop accepting; wait for the requests in flight (bounded by the graceful timeout)."""
        for listener in self.listeners.values():
            listener.stop.set()
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
            destination = await self._open_destination(did, entity, stack)
            await self._start_worker(did, entity, destination, stack, self.filters)
        self._fit_connections(self.config)
        for name, listen in sorted(self._wanted_listeners(self.config), reverse=True):
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
                    if running is None or not _same_destination(running.entity, entity):
                        stack = AsyncExitStack()
                        await stack.__aenter__()
                        opened[did] = (await self._open_destination(did, entity, stack), stack)
            except BaseException as error:
                await _close_all(opened)
                if isinstance(error, Exception) and not isinstance(error, ConfigError):
                    raise ConfigError(new.path, "destinations", f"a destination failed to open: {error}") from error
                raise
            started: list[tuple[str, str]] = []
            urls, admin_urls = self.urls, self.admin_urls
            try:
                for name, listen in sorted(self._wanted_listeners(new) - set(self.listeners)):
                    await self._start_listener(name, listen)
                    started.append((name, listen))
            except BaseException:
                await _close_all(opened)
                for opened_listener in started:  # the swap is off: the listeners it opened go too
                    self.listeners.pop(opened_listener).stop.set()
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
                    for worker in (running.worker, *running.replays.values()):
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
            for unwanted in set(self.listeners) - self._wanted_listeners(new):
                self.listeners.pop(unwanted).stop.set()

    # -- privacy -----------------------------------------------------------------------------

    async def delete_user(self, user_id: str, *, keep_collecting: bool = False) -> UserDeletion:
        """Carry out a deletion request: suppress the user's later events (unless
        ``keep_collecting``), remove their messages and dead letters from the log, let the
        sends under way land, then call ``delete_user`` on every running destination."""
        async with self._apply_lock:  # the set of destinations holds still meanwhile
            if not keep_collecting:
                await self.log.set_suppressed(user_id, True)
            report = await self.log.delete_user(user_id, list(self.destinations))
            deletions = self.log.deletions
            # Sends already under way may still carry the user's messages: let them land first,
            # so the destination's own deletion covers them. Later ones leave them out.
            with trio.move_on_after(DELETE_SETTLE_SECS):
                for running in self.destinations.values():
                    for worker in (running.worker, *running.replays.values()):
                        await worker.wait_sends_from_before(deletions)
            results: dict[str, DestinationDeletion] = {}
            for did, running in self.destinations.items():
                settled = not any(
                    worker.sending_from_before(deletions) for worker in (running.worker, *running.replays.values())
                )
                results[did] = await _delete_at_destination(running, user_id, settled)
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


async def _delete_at_destination(running: _RunningDestination, user_id: str, settled: bool) -> DestinationDeletion:
    destination = running.destination
    if type(destination).delete_user is Destination.delete_user:
        return DestinationDeletion(supported=False, settled=settled)
    try:
        with trio.fail_after(running.entity.core.timeout_secs):
            removed = await destination.delete_user(user_id)
    except trio.TooSlowError:
        error = f"timed out after {running.entity.core.timeout_secs}s"
    except Exception as failure:  # a plugin error: report it, the log side is done already
        error = str(failure) if isinstance(failure, DeliveryError) else f"{type(failure).__name__}: {failure}"
    else:
        return DestinationDeletion(removed=removed, settled=settled)
    log.error("destination_delete_user_failed", destination=running.worker.id, error=error)
    return DestinationDeletion(settled=settled, error=error)


def _replay_of(cursor_name: str, start_seq: int) -> str | None:
    """The destination a replay cursor belongs to, or None when the cursor is not a replay's."""
    replay = Replay.parse(cursor_name, start_seq)
    return replay.destination if replay is not None else None


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
        nursery.cancel_scope.cancel()


def _failure_in(error: BaseException) -> BaseException:
    """What went wrong inside ``error``'s exception groups: the first OSError (a busy port, a
    host that does not resolve) if any, else the first error."""
    leaves = exception_leaves(error)
    return next((leaf for leaf in leaves if isinstance(leaf, OSError)), leaves[0])


async def _close_all(opened: dict[str, tuple[Destination, AsyncExitStack]]) -> None:
    """Close the destinations a refused reload opened."""
    for _, stack in opened.values():
        with trio.CancelScope(shield=True):
            await stack.aclose()


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
