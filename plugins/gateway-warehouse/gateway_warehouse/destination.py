"""A warehouse destination: the delivery contract on one side, an engine's :class:`Loader` on
the other.

:class:`WarehouseDestination` does what every engine needs: it maps each batch with a
:class:`~gateway_warehouse.mapping.Mapper` against the schema the warehouse has now, hands the
:class:`~gateway_warehouse.tables.Load` to the loader, keeps the numbers ``gateway status``
shows, and turns the engine's errors into :class:`gateway.DeliveryError`. An engine plugin
writes only its :class:`Loader`: how to read a schema, and how to write a load in one
transaction, idempotent by each table's key.

Exactly once: the core advances the destination's cursor only after :meth:`send` returns, so
a batch is loaded again after a crash, a retry or a replay. Each load replaces the rows whose
key it loads again (``users``/``accounts``: merges them), in the same transaction as everything
else it writes, so loading a batch twice leaves the warehouse as loading it once.

Threads: mapping and loading are blocking work; they run in worker threads so the event loop
stays free. Deletions and ``describe`` run alone. A load runs alone too, unless the loader
:attr:`~Loader.overlaps`: then, with two batches in flight (``concurrency = 2``), the next batch
is mapped in one thread while this one is written in another (the engine's server and our
mapping each take a core). The next batch is mapped against the schema this one leaves, and its
write checks, in its own transaction, that the warehouse has that schema; when it has not (this
load failed, or someone else changed a table), the batch is mapped again against what the
warehouse has and then written. So overlapping changes no row, only when the mapping happens.
A loader that also :attr:`~Loader.holds` is released after a write only when no other batch
is in flight (the log is caught up), under both locks: the next batch may be mapped against it.
"""

from __future__ import annotations

import abc
import copy
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, ClassVar

import msgspec
import structlog
import trio

from gateway import ComponentConfig, DeliveryError, Destination, DestinationContext, Record
from gateway_warehouse.mapping import Mapper
from gateway_warehouse.naming import Dialect
from gateway_warehouse.tables import Load, Schema, Selection

__all__ = ["Loader", "WarehouseConfig", "WarehouseDestination", "warehouse_delivery_defaults"]

log = structlog.get_logger("gateway_warehouse")

#: Messages per load unless the config says otherwise: large enough that a load's fixed costs
#: (opening the warehouse, reading its schema, a transaction, a checkpoint) are small next to
#: its rows, small enough that a load's rows stay in tens of MB (the memory a backlog load
#: needs does not grow with the backlog). 50,000 rather than 20,000 took the daemon's CPU per
#: message loading a 200k backlog into DuckDB from 65 to 46 µs (bench/warehouse.py, one run
#: each), for about 130 MiB more peak RSS.
BATCH_MAX_MESSAGES = 50_000
BATCH_MAX_BYTES = 64 * 1024 * 1024
#: A load of a large batch into a busy database may take minutes; the delivery worker's
#: default of 30 s would cut it short and load it again.
TIMEOUT_SECS = 900.0
#: How many ``table.column: reason`` entries one ``warehouse_values_discarded`` line lists.
NOTES_PER_LINE = 20
#: A load of at least this many messages is taken as one of a backlog being caught up (the
#: delivery worker reads the next batch while it loads): a loader that :attr:`Loader.holds`
#: keeps its warehouse open for the next load instead of releasing it.
BACKLOG_MESSAGES = BATCH_MAX_MESSAGES
#: A warehouse kept open is released once no load came for this long (the backlog is caught up).
#: Longer than the worker's gap between two loads of a backlog (cursor saved, the next batch
#: filtered: 0.4 s measured at a load average of 6), or each gap would checkpoint.
IDLE_RELEASE_SECS = 1.0


class WarehouseConfig(ComponentConfig, kw_only=True):
    """Keys every warehouse destination has (each engine adds its own: ``path``, ``dsn``)."""

    #: Seconds between loads (the delivery batch's longest wait): Segment loads hourly at best.
    sync_interval_secs: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    #: The schema (a folder for Parquet) every source loads into; default: one per source,
    #: named after its id, as Segment does.
    schema: str | None = None
    #: Selective sync: which tables to load, ``{ include = [...] }`` or ``{ exclude = [...] }``.
    collections: Selection = Selection()
    #: Selective sync per table: ``{ order_completed = { exclude = ["coupon"] } }``. Standard
    #: columns (``id``, ``received_at``...) are always loaded.
    properties: dict[str, Selection] = {}
    #: Columns per table past which new columns' values go to ``discards`` (default: the engine's).
    max_columns_per_table: Annotated[int, msgspec.Meta(ge=32, le=100_000)] | None = None


def warehouse_delivery_defaults(options: WarehouseConfig) -> dict[str, Any]:
    """Delivery defaults for a warehouse type (``DestinationType(delivery_defaults=...)``):
    one large batch every ``sync_interval_secs``, one load at a time; ``"All": false`` in an
    event's integrations does not keep it out (Segment loads warehouses regardless)."""
    return {
        "all_false_applies": False,
        "batch_max_wait_secs": options.sync_interval_secs,
        "batch_max_messages": BATCH_MAX_MESSAGES,
        "batch_max_bytes": BATCH_MAX_BYTES,
        "timeout_secs": TIMEOUT_SECS,
        "concurrency": 1,
        "retry_initial_secs": 5.0,
    }


class Loader(abc.ABC):
    """An engine's loading code. :class:`WarehouseDestination` calls it from one worker thread
    at a time, so it needs no locking of its own.

    A load goes: :meth:`read_schemas` (what the warehouse has), mapping (no engine work), then
    :meth:`write`; :meth:`release` follows every unit of work, success or not (an embedded
    engine closes its file there so other processes can read it between loads).
    """

    #: The engine's naming rules and limits.
    dialect: ClassVar[Dialect]
    #: Whether :meth:`read_schemas` may run in one thread while :meth:`write_unless_changed` runs
    #: in another (an engine server with its own connection for each): the destination then maps
    #: the next batch while it writes this one (see the module's docstring).
    overlaps: ClassVar[bool] = False
    #: Whether the loader reads tables with :func:`gateway_warehouse.arrow.arrow_table`, so that
    #: the rows of common shapes may come projected by DuckDB (see
    #: :mod:`gateway_warehouse.projection`) rather than as :attr:`TableLoad.rows` dicts.
    projects: ClassVar[bool] = False

    #: Whether :meth:`release` may wait while a backlog is loaded: the destination then skips
    #: it between back-to-back loads (a write that ends while the next batch is already in
    #: flight, or, one batch at a time, a full batch) and calls it once a write ends with none
    #: in flight or loads stop coming (:data:`IDLE_RELEASE_SECS`). For an engine whose release
    #: costs work per load (DuckDB checkpoints the file on close, writing each load's rows a
    #: second time).
    holds: ClassVar[bool] = False

    @abc.abstractmethod
    def read_schemas(self, names: Sequence[str]) -> dict[str, Schema | None]:
        """The tables and column types of each named schema as the warehouse has them now
        (None for a schema that does not exist)."""

    @abc.abstractmethod
    def write(self, load: Load) -> None:
        """Write ``load`` in one transaction: create the schemas and tables it marks
        ``created``, add the ``added`` columns, then per table replace the rows whose key it
        loads (``merge == "replace"``: delete, then insert) or merge them (``"latest"``: per
        column the newest non-null value by ``received_at``, the warehouse's row included).
        Raise on failure, having written nothing."""

    def write_unless_changed(self, load: Load, schemas: Mapping[str, Schema | None]) -> bool:
        """For loaders that :attr:`overlaps`: :meth:`write`, but first, in the same transaction,
        read the schemas named in ``schemas`` (what ``load`` was mapped against); when they are
        not ``schemas``, write nothing and return False."""
        raise NotImplementedError

    @abc.abstractmethod
    def delete_user(self, user_id: str) -> int:
        """Delete the rows of ``user_id`` from every table of every schema (``user_id``
        columns; ``users`` by ``id``; ``discards`` by ``user_id``); returns how many went."""

    @abc.abstractmethod
    def schemas(self) -> dict[str, Schema]:
        """Every schema this destination loaded, with its tables and column types."""

    def release(self) -> None:  # noqa: B027 - optional hook
        """Called after each unit of work (load, deletion, describe), whatever happened; for a
        loader that :attr:`holds`, after the last of back-to-back backlog loads instead."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything (connections, files). Called once, at the end."""

    def classify(self, error: Exception) -> DeliveryError:
        """The :class:`gateway.DeliveryError` an engine error stands for: retryable unless it
        will fail the same way every time (override per engine)."""
        return DeliveryError(f"{type(error).__name__}: {error}", retryable=True, kind=type(error).__name__)


class WarehouseDestination(Destination):
    """A destination that loads batches into a warehouse through a :class:`Loader`.

    Args:
        config: The destination's validated config (a :class:`WarehouseConfig`).
        context: Its id and state folder.
        loader: Builds the engine's loader (called once, in a worker thread).
    """

    def __init__(
        self, config: WarehouseConfig, context: DestinationContext, loader: Callable[[], Loader], *, engine: str
    ) -> None:
        self.id = context.id
        self.engine = engine
        self._make_loader = loader
        self._loader: Loader | None = None
        # Lock order: writing, then mapping. A load holds one or both (see the module docstring);
        # everything else holds both.
        self._writing, self._mapping = trio.Lock(), trio.Lock()
        self._mapper: Mapper | None = None
        # What the warehouse's schemas will be once the loads mapped so far are written (None:
        # unknown, read them). Only a guess: a write checks it in its own transaction.
        self._tip: dict[str, Schema | None] | None = None
        self._config = config
        self._totals: Counter[str] = Counter()
        self._last: dict[str, Any] | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        #: The loader was not released after the last load (a backlog is being loaded).
        self._held = False
        self._sends = 0  # sends in flight: two when the delivery keeps two batches going
        #: Two sends were in flight at once: a loader that holds is then released as soon as a
        #: write ends with no other batch on its way (the log is caught up), with no idle wait.
        self._overlapping = False
        self._idle_since = 0.0
        self._idle_watch = False
        self._released = trio.Event()  # set (and replaced) each time a held loader is let go

    # -- the delivery contract -----------------------------------------------------------

    async def send(self, batch: Sequence[Record]) -> None:
        """Load ``batch``; returns once it is committed."""
        rows = [(record.seq, record.source, record.body) for record in batch]
        self._sends += 1
        self._overlapping = self._overlapping or self._sends > 1
        try:
            loader = self._loader or await self._run(self._ready)
            backlog = len(rows) >= BACKLOG_MESSAGES
            if loader.overlaps:
                await self._overlapped(rows, backlog=backlog)
            else:
                await self._run(self._load, rows, hold=backlog)
        finally:
            self._sends -= 1
            self._idle_since = trio.current_time()
        if self._held and not self._idle_watch:
            self._idle_watch = True
            trio.lowlevel.spawn_system_task(self._release_when_idle, name=f"warehouse {self.id}: release when idle")

    def status(self) -> dict[str, Any]:
        """Last load, totals since the start, data lag and the last error (cheap)."""
        now = time.time()
        status: dict[str, Any] = {
            "engine": self.engine,
            "loads": self._totals["loads"],
            "messages_loaded": self._totals["messages"],
            "rows_loaded": self._totals["rows"],
            "discards": self._totals["discards"],
            "failed_loads": self._totals["failures"],
            "last_load": self._last,
            "seconds_since_last_load": round(now - self._last["at_epoch"], 1) if self._last else None,
            "last_error": self._last_error,
            # Kept open between the loads of a backlog (DuckDB: other processes cannot open the
            # file until it is released).
            "held_open": self._held,
        }
        return status

    async def describe(self) -> dict[str, Any]:
        """The status, and ``schemas``: schema -> table -> column -> type, read from the warehouse."""
        schemas = await self._run(lambda: self._ready().schemas())
        return {**self.status(), "schemas": _plain(schemas)}

    async def delete_user(self, user_id: str) -> int:
        """Delete the user's rows from every table (see :meth:`Loader.delete_user`)."""
        removed: int = await self._run(lambda: self._ready().delete_user(user_id))
        log.info("warehouse_user_deleted", destination=self.id, rows=removed)
        return removed

    async def aclose(self) -> None:
        async with self._writing, self._mapping:
            self._held = False
            if self._mapper is not None:
                mapper, self._mapper = self._mapper, None
                await trio.to_thread.run_sync(mapper.close)
            if self._loader is not None:
                loader, self._loader = self._loader, None
                await trio.to_thread.run_sync(loader.close)

    # -- the work, in worker threads -------------------------------------------------------

    async def _run(self, work: Callable[..., Any], *args: Any, hold: bool = False) -> Any:
        """``work(*args)`` in a thread, alone (no load, deletion or ``describe`` beside it)."""
        async with self._writing, self._mapping:
            return await trio.to_thread.run_sync(partial(self._guarded, work, *args, hold=hold))

    async def wait_released(self) -> None:
        """Return once the warehouse is not held open between backlog loads (see
        :attr:`Loader.holds`): for tests, and whatever must wait for the file to be free."""
        while self._held:
            await self._released.wait()

    async def _release_when_idle(self) -> None:
        """Release the loader held between backlog loads once no load came for
        :data:`IDLE_RELEASE_SECS` (a system task: it needs no nursery and ends with the run)."""
        try:
            while self._held:
                await trio.sleep(IDLE_RELEASE_SECS / 4)
                if self._held and not self._sends and trio.current_time() - self._idle_since >= IDLE_RELEASE_SECS:
                    await self._run(lambda: None)  # released after it
                    log.info("warehouse_released", destination=self.id, idle_secs=IDLE_RELEASE_SECS)
        except Exception as error:  # the next unit of work releases it again
            log.warning("warehouse_release_failed", destination=self.id, error=str(error))
        finally:
            self._idle_watch = False
            self._released.set()
            self._released = trio.Event()

    def _guarded(self, work: Callable[..., Any], *args: Any, release: bool = True, hold: bool = False) -> Any:
        """Run ``work``, then release the loader (unless ``hold``: a backlog load that went
        through, for a loader that :attr:`Loader.holds`)."""
        held = False
        try:
            result = work(*args)
            held = hold
            return result
        except DeliveryError:
            raise
        except Exception as error:
            loader = self._loader
            failure = loader.classify(error) if loader is not None else _unclassified(error)
            self._totals["failures"] += 1
            self._last_error, self._last_error_at = str(failure), time.time()
            raise failure from error
        finally:
            loader = self._loader
            if release and loader is not None:
                self._held = held and loader.holds
                if not self._held:
                    loader.release()

    async def _overlapped(self, rows: list[tuple[int, str, bytes]], *, backlog: bool) -> None:
        """Map ``rows`` (beside the write of the batch before), then write them in turn."""
        started = time.monotonic()
        async with self._mapping:
            base, load, phases = await self._map_in_thread(rows)
        waited = time.monotonic()
        async with self._writing:
            writing = time.monotonic()
            written = False
            # A loader that holds is released below, not in the writing thread: the next batch
            # may be mapped against it meanwhile.
            holds = self._ready().holds
            try:
                while not await trio.to_thread.run_sync(
                    partial(self._guarded, self._write_unless_changed, load, base, release=not holds)
                ):
                    log.info("warehouse_schema_changed", destination=self.id, hint="the batch is mapped again")
                    async with self._mapping:
                        self._tip = None
                        base, load, _ = await self._map_in_thread(rows)
                written = True
            finally:
                if not written:  # the guess assumed this load: it is wrong now
                    self._tip = None
                if holds:
                    with trio.CancelScope(shield=True):
                        await self._hold_or_release(self._more_coming(backlog), failed=not written)
        done = time.monotonic()
        self._booked(load, done - started, {**phases, "wait": writing - waited, "write": done - writing})

    def _more_coming(self, backlog: bool) -> bool:
        """Whether another load is expected at once: another batch is in flight already, or,
        when the delivery keeps one batch at a time, this one was full (a backlog)."""
        return self._sends > 1 or (backlog and not self._overlapping)

    async def _hold_or_release(self, hold: bool, *, failed: bool) -> None:
        """After a write (holding ``_writing``): keep a loader that :attr:`Loader.holds` for the
        next load, or release it unless a batch began mapping against it meanwhile. After a
        failed write it is released whatever comes next (the engine may need opening again)."""
        if hold and not failed:
            self._held = True
            return
        async with self._mapping:
            if not failed and self._more_coming(backlog=False):
                self._held = True
                return
            try:
                if self._loader is not None:
                    await trio.to_thread.run_sync(self._loader.release)
            finally:
                if self._held:
                    log.info("warehouse_released", destination=self.id, reason="failed" if failed else "caught_up")
                self._held = False
                self._released.set()
                self._released = trio.Event()

    async def _map_in_thread(
        self, rows: list[tuple[int, str, bytes]]
    ) -> tuple[dict[str, Schema | None], Load, dict[str, float]]:
        # No release(): the loader may be in the middle of a write in another thread.
        result: tuple[dict[str, Schema | None], Load, dict[str, float]]
        result = await trio.to_thread.run_sync(partial(self._guarded, self._map_next, rows, release=False))
        return result

    def _map_next(self, rows: list[tuple[int, str, bytes]]) -> tuple[dict[str, Schema | None], Load, dict[str, float]]:
        """Map ``rows`` against the schemas the loads mapped before will leave (reading those
        it does not know), and make the result the new guess."""
        started = time.monotonic()
        loader, mapper = self._ready(), self.mapper()
        names = sorted({mapper.schema_name(source) for _, source, _ in rows})
        log.info("warehouse_load_started", destination=self.id, messages=len(rows), first_seq=rows[0][0])
        tip = self._tip or {}
        base = {name: tip[name] for name in names if name in tip}
        if len(base) < len(names):
            base.update(loader.read_schemas([name for name in names if name not in base]))
        mapping = time.monotonic()
        load = mapper.map(rows, copy.deepcopy(base))
        self._tip = {**(self._tip or {}), **_after(base, load)}
        return base, load, {"read_schema": mapping - started, "map": time.monotonic() - mapping}

    def _write_unless_changed(self, load: Load, base: dict[str, Schema | None]) -> bool:
        return not load.rows or self._ready().write_unless_changed(load, base)

    def _ready(self) -> Loader:
        if self._loader is None:
            self._loader = self._make_loader()
        return self._loader

    def mapper(self) -> Mapper:
        """The destination's mapper (names are cached in it between loads)."""
        if self._mapper is None:
            config = self._config
            self._mapper = Mapper(
                self._ready().dialect,
                schema=config.schema,
                collections=config.collections,
                properties=config.properties,
                max_columns=config.max_columns_per_table,
                project=self._ready().projects,
            )
        return self._mapper

    def _load(self, batch: list[tuple[int, str, bytes]]) -> None:
        started = time.monotonic()
        loader, mapper = self._ready(), self.mapper()
        names = sorted({mapper.schema_name(source) for _, source, _ in batch})
        log.info("warehouse_load_started", destination=self.id, messages=len(batch), first_seq=batch[0][0])
        existing = loader.read_schemas(names)
        mapping = time.monotonic()
        load = mapper.map(batch, existing)
        writing = time.monotonic()
        if load.rows:
            loader.write(load)
        done = time.monotonic()
        phases = {"read_schema": mapping - started, "map": writing - mapping, "write": done - writing}
        self._booked(load, done - started, phases)

    def _booked(self, load: Load, duration: float, phases: dict[str, float]) -> None:
        now = time.time()
        added = {
            f"{schema.schema}.{table.name}": sorted(table.added)
            for schema in load.schemas
            for table in schema.tables.values()
            if table.added and not table.created
        }
        created = [f"{s.schema}.{t.name}" for s in load.schemas for t in s.tables.values() if t.created]
        lag = (now - load.newest_received_at.timestamp()) if load.newest_received_at else None
        self._last = {
            "at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "at_epoch": round(now, 3),
            "messages": load.messages,
            "rows": load.rows,
            "discards": load.discards,
            "first_seq": load.first_seq,
            "last_seq": load.last_seq,
            "duration_secs": round(duration, 3),
            "phase_secs": {name: round(secs, 3) for name, secs in phases.items()},
            "data_lag_secs": round(lag, 1) if lag is not None else None,
            "tables_created": created,
            "columns_added": added,
            "counts": {k: v for k, v in sorted(load.counts.items()) if v},
        }
        self._totals.update(loads=1, messages=load.messages, rows=load.rows, discards=load.discards)
        self._last_error = None
        log.info(
            "warehouse_loaded",
            destination=self.id,
            messages=load.messages,
            rows=load.rows,
            discards=load.discards,
            seconds=round(duration, 3),
            phase_secs={name: round(secs, 3) for name, secs in phases.items()},
            tables_created=created or None,
            columns_added=added or None,
        )
        if load.discards:
            notes = sorted(load.notes.items(), key=lambda item: -sum(item[1].values()))
            log.warning(
                "warehouse_values_discarded",
                destination=self.id,
                values=load.discards,
                by_reason={k: load.counts[k] for k in _DISCARD_REASONS if load.counts[k]},
                columns={name: dict(reasons) for name, reasons in notes[:NOTES_PER_LINE]},
                more_columns=max(0, len(notes) - NOTES_PER_LINE),
                hint="each value is in the discards table with its row id and reason",
            )


_DISCARD_REASONS = (
    "type_mismatch",
    "column_limit",
    "no_column_name",
    "name_collision",
    "value_too_long",
    "nul_character",
)


def _after(base: Mapping[str, Schema | None], load: Load) -> dict[str, Schema | None]:
    """The schemas ``base`` once ``load`` is written (its new schemas, tables and columns)."""
    after: dict[str, Schema | None] = {
        name: None if tables is None else {table: dict(columns) for table, columns in tables.items()}
        for name, tables in base.items()
    }
    if not load.rows:
        return after
    for schema in load.schemas:
        tables = after.get(schema.schema) or {}
        after[schema.schema] = tables
        for table in schema.tables.values():
            if table.created or table.added:
                tables[table.name] = {**tables.get(table.name, {}), **table.added}
    return after


def _unclassified(error: Exception) -> DeliveryError:
    return DeliveryError(f"{type(error).__name__}: {error}", retryable=True, kind=type(error).__name__)


def _plain(schemas: Mapping[str, Schema]) -> dict[str, dict[str, dict[str, str]]]:
    return {
        schema: {table: {column: str(kind) for column, kind in columns.items()} for table, columns in tables.items()}
        for schema, tables in schemas.items()
    }
