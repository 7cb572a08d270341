"""From messages to warehouse rows: Segment's tables and columns (segment-api.md §9).

:class:`Mapper` turns a batch of messages into a :class:`Load`: per schema (one per source, by
default), the rows of each table, the columns each table needs added, and the discards. It is
pure: no I/O, so every engine shares it and tests can run it alone.

Tables: ``identifies`` (+ ``users``, latest traits per user), ``tracks`` (+ one table per event),
``pages``, ``screens``, ``groups`` (+ ``accounts``, latest traits per group), ``aliases``, and
``discards``. Columns: the standard ones of each table (``id`` = messageId, ``received_at``,
``sent_at``, ``timestamp``, ``original_timestamp``, ``uuid_ts``, ...), ``context`` flattened under
``context_``, and properties or traits as un-prefixed columns. Objects are flattened with ``_``,
arrays are JSON text. A property whose column would be a standard column, or start with
``context_``, gets a leading ``_`` (Segment's Redshift rule: nothing is dropped).

Nothing is lost: a value without a usable name (an empty or non-ASCII key), past the table's
column limit, whose column another key of the same message already took, or that does not fit
its column's type (:mod:`gateway_warehouse.types`) leaves NULL in its row and one row in
``discards`` (table, column, row id, value as text, reason, received_at), counted by reason.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog

from gateway_warehouse.naming import Dialect, snakecase
from gateway_warehouse.projection import Group, ProjectionError, Projector, Recipe, pointer
from gateway_warehouse.tables import (
    _COMMON,
    _DISCARD_COLUMNS,
    _EXTRA_FIELDS,
    _FIELDS,
    _PAYLOAD,
    _TABLE_OF_TYPE,
    DISCARDS,
    STANDARD_TABLES,
    TS,
    Load,
    S,
    Schema,
    SchemaLoad,
    Selection,
    TableLoad,
    standard_columns,
)
from gateway_warehouse.types import NO_FIT, ColumnType, convert, infer, to_text

__all__ = ["Mapper"]

log = structlog.get_logger("gateway_warehouse")

_SEP = "\x1f"  # joins raw key paths in caches (never in a name: snakecase drops it)
_MAX_CACHED_NAMES = 100_000
#: Shapes of message remembered per load (each is a few tuples).
_MAX_PLANS = 10_000


class _SchemaState:
    """The column types of one schema while a load is mapped: the warehouse's, plus what this
    load adds."""

    def __init__(self, name: str, existing: Schema | None) -> None:
        self.existing = existing or {}
        self.load = SchemaLoad(schema=name, created=existing is None)
        self.types: Schema = {table: dict(columns) for table, columns in self.existing.items()}
        self.plans: dict[tuple[Any, ...], _Plan] = {}

    def plan(self, key: tuple[Any, ...], plan: _Plan) -> None:
        if len(self.plans) < _MAX_PLANS:
            self.plans[key] = plan

    def table(self, name: str, key: str, merge: str) -> TableLoad:
        table = self.load.tables.get(name)
        if table is None:
            table = self.load.tables[name] = TableLoad(name, key, merge, created=name not in self.existing)
            types = self.types.setdefault(name, {})
            for column, column_type in standard_columns(name).items():
                if column not in types:
                    types[column] = column_type
                    table.added[column] = column_type
        return table


class Mapper:
    """Maps batches of messages to :class:`Load` s for one destination. Keep one per
    destination: it caches names (bounded) between batches.

    Args:
        dialect: The engine's naming rules and limits.
        schema: The schema every source loads into, or None: one per source, named after the
            source id (snake-cased).
        collections: Which tables to load (by their warehouse names).
        properties: Per table, which of its columns to load.
        max_columns: Columns per table past which values go to ``discards`` (default: the
            dialect's).
        shape_plans: Map a message shaped like one mapped before in the same load by that
            one's plan (the default; off only to check that plans change nothing).
        project: Have DuckDB build the rows of a batch's common shapes from the messages' JSON
            (:mod:`gateway_warehouse.projection`; needs ``duckdb`` and ``pyarrow``). Their rows
            are then in :attr:`TableLoad.projected`, not in :attr:`TableLoad.rows`.
    """

    def __init__(
        self,
        dialect: Dialect,
        *,
        schema: str | None = None,
        collections: Selection | None = None,
        properties: Mapping[str, Selection] | None = None,
        max_columns: int | None = None,
        shape_plans: bool = True,
        project: bool = False,
    ) -> None:
        self.dialect = dialect
        self.shape_plans = shape_plans
        self._project = project and shape_plans
        self._projector: Projector | None = None
        self._schema = schema
        self._collections = collections or Selection()
        self._properties = dict(properties or {})
        self.max_columns = max_columns or dialect.max_columns
        self._check_text = dialect.max_string_bytes is not None or not dialect.text_allows_nul
        self._names: dict[tuple[str, str], str | None] = {}
        self._tables: dict[str, str] = {}
        self._schemas: dict[str, str] = {}
        self._decode = msgspec.json.Decoder(dict[str, Any]).decode

    # -- naming --------------------------------------------------------------------------

    def schema_name(self, source: str) -> str:
        """The schema a source's messages load into."""
        name = self._schemas.get(source)
        if name is None:
            base = self._schema if self._schema is not None else source
            name = self._schemas[source] = self.dialect.schema_identifier(snakecase(base) or "source")
        return name

    def event_table(self, event: str) -> str:
        """The table of a track event: its snake-cased name (``Order Completed`` →
        ``order_completed``); one that is a standard table's gets a ``_``; one with no ASCII
        letter or digit is named ``event_`` and a hash of the name."""
        table = self._tables.get(event)
        if table is None:
            name = snakecase(event)
            if not name:
                name = "event_" + hashlib.sha1(event.encode()).hexdigest()[:8]
            elif name in STANDARD_TABLES:
                name = "_" + name
            if len(self._tables) >= _MAX_CACHED_NAMES:
                self._tables.clear()
            table = self._tables[event] = self.dialect.identifier(name)
        return table

    def column_name(self, call: str, path: Sequence[str]) -> str | None:
        """The column of a property or trait at ``path`` (its keys from ``properties`` or
        ``traits`` down) in tables of ``call`` (``track``, ``identify``, ``users``...), or None
        when a key of the path has no ASCII letter or digit (an empty key, say)."""
        return self._column(call, _SEP.join(path))

    def _column(self, call: str, raw: str) -> str | None:
        cache_key = (call, raw)
        if cache_key in self._names:
            return self._names[cache_key]
        parts = raw.split(_SEP)
        name: str | None
        if not all(snakecase(part) for part in parts):
            name = None
        elif call == "context":
            name = self.dialect.identifier(snakecase("_".join(["context", *parts])))
        else:
            name = snakecase("_".join(parts))
            if name in _reserved_columns(call) or name.startswith("context_"):
                name = "_" + name
            name = self.dialect.identifier(name)
        if len(self._names) >= _MAX_CACHED_NAMES:
            self._names.clear()
        self._names[cache_key] = name
        return name

    # -- mapping -------------------------------------------------------------------------

    def map(
        self,
        batch: Iterable[tuple[int, str, bytes]],
        schemas: Mapping[str, Schema | None],
        *,
        now: datetime | None = None,
    ) -> Load:
        """Map ``batch`` (``(seq, source, JSON body)`` per message, in log order) against the
        warehouse's ``schemas`` (by schema name; None or absent: the schema does not exist).
        Use :meth:`schema_name` to know which schemas a batch touches."""
        uuid_ts = now or datetime.now(UTC)
        batch = list(batch)
        if self._project:
            if self._projector is None:
                self._projector = Projector(self.dialect)
            try:
                return self._map(batch, schemas, uuid_ts, self._projector)
            except ProjectionError as error:
                log.warning("warehouse_projection_failed", error=str(error), hint="the batch is mapped in Python")
        return self._map(batch, schemas, uuid_ts, None)

    def close(self) -> None:
        """Release the projector's database, if any."""
        if self._projector is not None:
            self._projector.close()
            self._projector = None

    def _map(
        self,
        batch: list[tuple[int, str, bytes]],
        schemas: Mapping[str, Schema | None],
        uuid_ts: datetime,
        projector: Projector | None,
    ) -> Load:
        states: dict[str, _SchemaState] = {}
        load = Load(schemas=[], messages=len(batch), first_seq=0, last_seq=0, uuid_ts=uuid_ts)
        if batch:
            load.first_seq, load.last_seq = batch[0][0], batch[-1][0]
        for source in dict.fromkeys(source for _, source, _ in batch):
            name = self.schema_name(source)
            if name not in states:
                states[name] = _SchemaState(name, schemas.get(name))
        groups: dict[int, Group] = {}
        group_of: list[int] = []
        if projector is not None:
            groups, group_of = projector.groups([b for _, _, b in batch], [s for _, s, _ in batch], self._decode)
        # The positions DuckDB read, but each group's sample: projected if the sample gives
        # recipes (it comes first in log order, so that is known when they come).
        projected = bytearray(len(batch))
        for group in groups.values():
            for position in group.conforming:
                projected[position] = 1
            projected[group.sample] = 0
        # Per group of identify calls: its users rows, projected, merged here in log order.
        merges: dict[int, tuple[TableLoad, Iterator[dict[str, Any]]]] = {}
        for position, (_, source, body) in enumerate(batch):
            if projected[position] and groups[group_of[position]].usable:
                merge = merges.get(group_of[position])
                if merge is not None:
                    table, merged = merge
                    row = next(merged)
                    _merge_latest(table, row["id"], row, row.get("received_at"))
                continue
            state = states[self.schema_name(source)]
            try:
                message = self._decode(body)
            except msgspec.DecodeError:
                load.counts["undecodable"] += 1
                continue
            mapped = _Message(self, state, load, message)
            group = groups.get(group_of[position]) if groups else None
            if group is not None and position == group.sample:
                discards = load.counts["discards"]
                mapped.recipes = []
                mapped.map()
                group.recipes = mapped.recipes
                group.usable = (
                    bool(mapped.recipes) and load.counts["discards"] == discards and group.covers(mapped.recipes)
                )
                for recipe in mapped.recipes or () if group.usable else ():
                    table = state.load.tables[recipe.table]
                    if table.merge == "latest":
                        merges[position] = (table, iter(group.project(recipe).to_pylist()))
            else:
                mapped.map()
        if groups:
            self._projected(groups, states, load)
        load.schemas = [state.load for state in states.values() if state.load.tables]
        for schema in load.schemas:
            for table in schema.tables.values():
                types = states[schema.schema].types[table.name]
                table.columns = {column: types[column] for column in types if column in table.columns}
                table.all_columns = list(types)
        return load

    def _projected(self, groups: Mapping[int, Group], states: Mapping[str, _SchemaState], load: Load) -> None:
        """The rows of the groups whose first message gave recipes, from their values."""
        for group in groups.values():
            if not group.usable or group.recipes is None or not group.values.num_rows:
                continue
            tables = states[self.schema_name(group.source)].load.tables
            for recipe in group.recipes:
                if tables[recipe.table].merge == "latest":
                    continue  # merged in log order (see _map)
                rows = group.project(recipe)
                tables[recipe.table].projected.append(rows)
                if "received_at" in rows.column_names:
                    import pyarrow.compute as pc

                    newest = pc.max(rows.column("received_at")).as_py()
                    if newest is not None and (load.newest_received_at is None or newest > load.newest_received_at):
                        load.newest_received_at = newest


def _reserved_columns(call: str) -> frozenset[str]:
    found = _RESERVED.get(call)
    if found is None:
        found = _RESERVED[call] = frozenset(standard_columns(_TABLE_OF_TYPE.get(call, call)))
    return found


_RESERVED: dict[str, frozenset[str]] = {}


class _Common:
    """What the rows of one message share: the standard columns and the flattened context; and
    their shape (names and kinds of values), worked out once for the plan key of each row."""

    __slots__ = ("_shape", "context_paths", "context_values", "keys", "values")

    def __init__(self, keys: list[str], values: list[Any], context_paths: list[str], context_values: list[Any]) -> None:
        self.keys, self.values = keys, values
        self.context_paths, self.context_values = context_paths, context_values
        self._shape: tuple[Any, ...] | None = None

    def shape(self) -> tuple[Any, ...]:
        if self._shape is None:
            self._shape = (
                tuple(self.keys),
                tuple(self.context_paths),
                tuple(map(type, self.values)),
                tuple(map(type, self.context_values)),
            )
        return self._shape


class _Message:
    """Maps one message into its rows (a helper of :meth:`Mapper.map`)."""

    __slots__ = ("call", "id", "load", "mapper", "message", "received_at", "recipes", "state", "user_id")

    def __init__(self, mapper: Mapper, state: _SchemaState, load: Load, message: dict[str, Any]) -> None:
        self.mapper = mapper
        self.state = state
        self.load = load
        self.message = message
        self.call = message.get("type")
        self.id = to_text(message.get("messageId", ""))
        user_id = message.get("userId")
        self.user_id = None if user_id is None else to_text(user_id)
        self.received_at: datetime | None = None
        #: Recording: one recipe per row this message made; None once a row cannot have one.
        self.recipes: list[Recipe] | None = None

    def map(self) -> None:
        call, message, load = self.call, self.message, self.load
        if call not in _TABLE_OF_TYPE:
            load.counts["unsupported_type"] += 1
            return
        received = message.get("receivedAt")
        received = load.timestamp(received) if type(received) is str else None
        self.received_at = received if type(received) is datetime else None
        if self.received_at is not None and (
            load.newest_received_at is None or self.received_at > load.newest_received_at
        ):
            load.newest_received_at = self.received_at
        table_name = _TABLE_OF_TYPE[call]
        mapper = self.mapper
        # Standard columns (timestamps parsed once: both rows of a track share them). A value
        # that does not parse stays text: the fill discards it.
        common_keys: list[str] = ["uuid_ts"]
        common_values: list[Any] = [load.uuid_ts]
        get = message.get
        for field_name, column, is_timestamp in _STANDARD_FIELDS[call]:
            value = get(field_name)
            if value is not None:
                if is_timestamp and type(value) is str:
                    value = load.timestamp(value)
                common_keys.append(column)
                common_values.append(value)
        context = get("context")
        context_paths: list[str] = []
        context_values: list[Any] = []
        if isinstance(context, dict):
            _flatten(context, None, context_paths, context_values)
        common = _Common(common_keys, common_values, context_paths, context_values)

        paths: list[str] = []
        values: list[Any] = []
        if call == "track":
            event = message.get("event")
            event_table = mapper.event_table(to_text(event) if event is not None else "")
            common.keys.append("event")
            common.values.append(event_table)
            if mapper.dialect.tracks_table:
                self._row(table_name, "track", common, paths, values)
            properties = message.get("properties")
            if isinstance(properties, dict):
                _flatten(properties, None, paths, values)
            self._row(event_table, "track", common, paths, values)
            return
        payload_key = _PAYLOAD.get(call)
        if payload_key is not None:
            payload = message.get(payload_key)
            if isinstance(payload, dict):
                _flatten(payload, None, paths, values)
        self._row(table_name, call, common, paths, values)
        if not mapper.dialect.object_tables:
            return
        if call == "identify" and self.user_id:
            self._object("users", self.user_id, list(zip(paths, values, strict=True)))
        elif call == "group" and message.get("groupId") is not None:
            self._object("accounts", to_text(message["groupId"]), list(zip(paths, values, strict=True)))

    def _allowed(self, table: str) -> bool:
        if self.mapper._collections.allows(table):
            return True
        self.load.counts["excluded"] += 1
        return False

    def _row(
        self,
        table_name: str,
        call: str,
        common: _Common,
        paths: list[str],
        values: list[Any],
    ) -> None:
        """One row of ``table_name``: the standard columns, the context, then the payload
        (properties or traits) at ``paths``.

        A message shaped like one already mapped in this load (the same table, keys and kinds
        of values) takes that message's :class:`_Plan`: its values go straight to the columns
        the first one found, with no naming or type checks (those held for every value of the
        first one, and types never change within a load)."""
        if not self._allowed(table_name):
            self.recipes = None
            return
        state, mapper = self.state, self.mapper
        table = state.table(table_name, "id", "replace")
        common_keys, common_values, context_paths, context_values = (
            common.keys,
            common.values,
            common.context_paths,
            common.context_values,
        )
        every = common_values + context_values + values
        selection = mapper._properties.get(table_name)
        key: tuple[Any, ...] | None = None
        if selection is None and mapper.shape_plans:
            key = (table_name, common.shape(), tuple(paths), tuple(map(type, values)))
            plan = state.plans.get(key)
            if plan is not None and plan.takes(every, self):
                table.rows[self.id] = dict(zip(plan.columns, every, strict=True))
                if self.recipes is not None:
                    self._recipe(table_name, plan.columns, common, paths)
                return
        items = [(column, value, column) for column, value in zip(common_keys, common_values, strict=True)]
        items += [
            (mapper._column("context", raw), value, raw)
            for raw, value in zip(context_paths, context_values, strict=True)
        ]
        payload = [(mapper._column(call, raw), value, raw) for raw, value in zip(paths, values, strict=True)]
        row: dict[str, Any] = {}
        discards = self.load.counts["discards"]
        self._fill(table, row, items[: len(common_keys)], "", None)
        self._fill(table, row, items[len(common_keys) :], "context", selection)
        self._fill(table, row, payload, _PAYLOAD.get(call, "properties"), selection)
        table.rows[self.id] = row  # the same id again (a replay): the last one wins
        if key is not None and self.load.counts["discards"] == discards and len(row) == len(every):
            columns = [column for column, _, _ in items] + [column for column, _, _ in payload]
            if all(row.get(column) is value for column, value in zip(columns, every, strict=True)):
                state.plan(key, _Plan(columns, every, check_text=mapper._check_text))
                if self.recipes is not None:
                    self._recipe(table_name, columns, common, paths)
                    return
        self.recipes = None

    def _recipe(self, table_name: str, columns: Sequence[str], common: _Common, paths: list[str]) -> None:
        """Note where each value of this row came from (see :mod:`gateway_warehouse.projection`)."""
        assert self.recipes is not None
        call = self.call
        fields = _FIELD_OF[call]
        sources: list[tuple[str | None, Any]] = []
        for column, value in zip(common.keys, common.values, strict=True):
            field_name = fields.get(column)
            sources.append((None, value) if field_name is None else (pointer([field_name]), None))
        sources += [(pointer(["context", *raw.split(_SEP)]), None) for raw in common.context_paths]
        payload = _PAYLOAD.get(call, "properties")
        sources += [(pointer([payload, *raw.split(_SEP)]), None) for raw in paths]
        types = self.state.types[table_name]
        self.recipes.append(
            Recipe(
                table_name,
                [
                    (column, types[column], path, constant)
                    for column, (path, constant) in zip(columns, sources, strict=True)
                ],
            )
        )

    def _object(self, table_name: str, key: str, payload: Sequence[tuple[str, Any]]) -> None:
        recorded, self.recipes = self.recipes, None
        if not self._allowed(table_name):
            return
        table = self.state.table(table_name, "id", "latest")
        key = self._storable_key(table_name, key)
        row: dict[str, Any] = {}
        selection = self.mapper._properties.get(table_name)
        standard: list[tuple[str | None, Any, str]] = [("id", key, "id"), ("uuid_ts", self.load.uuid_ts, "uuid_ts")]
        if self.received_at is not None:
            standard.append(("received_at", self.received_at, "received_at"))
        discards = self.load.counts["discards"]
        self._fill(table, row, standard, "", None)
        named = [(self.mapper._column("users", raw), value, raw) for raw, value in payload]
        self._fill(table, row, named, "traits", selection)
        _merge_latest(table, key, row, self.received_at)
        if (
            recorded is not None
            and table_name == "users"
            and selection is None
            and type(self.message.get("userId")) is str
            and key == self.message["userId"]  # not a stand-in (see _storable_key)
            and self.load.counts["discards"] == discards
            and len(row) == len(standard) + len(named)
            and all(row.get(column) is value for column, value, _ in (*standard, *named))
        ):
            # Every value went to its column as it was: the group's other identify calls can
            # take their users row from the projection, merged here in log order (see _map).
            types = self.state.types[table_name]
            sources: list[tuple[str | None, Any]] = [(pointer(["userId"]), None), (None, self.load.uuid_ts)]
            if self.received_at is not None:
                sources.append((pointer(["receivedAt"]), None))
            sources += [(pointer(["traits", *raw.split(_SEP)]), None) for _, _, raw in named]
            columns = [(column, types[column]) for column, _, _ in (*standard, *named) if column is not None]
            sourced = [(c, kind, path, constant) for (c, kind), (path, constant) in zip(columns, sources, strict=True)]
            self.recipes = [*recorded, Recipe(table_name, sourced)]

    def _storable_key(self, table_name: str, key: str) -> str:
        """``key`` (a ``users`` or ``accounts`` id) as the engine keeps it (:meth:`Dialect.key`):
        never dropped, since the row cannot exist without it. Text with U+0000 is JSON-escaped
        where the engine's text cannot hold it, as discards keep such values (``users.id`` is
        then the ``discards.value`` of that ``identifies.user_id``); a key past the engine's
        key limit is cut and hashed. Either way the original goes to discards."""
        stored = self.mapper.dialect.key(key)
        if stored != key:
            nul = "\x00" in key and not self.mapper.dialect.text_allows_nul
            self._discard(table_name, "id", key, "nul_character" if nul else "key_too_long")
        return stored

    def _fill(
        self,
        table: TableLoad,
        row: dict[str, Any],
        items: Sequence[tuple[str | None, Any, str]],
        origin: str,
        selection: Selection | None,
    ) -> None:
        """Put each (column, value, raw path) into ``row``: the common case (the column exists
        and the value is of its type) right here, the rest through :meth:`_put`."""
        types = self.state.types[table.name]
        written = table.columns
        check_text = self.mapper._check_text
        for column, value, raw in items:
            if column is not None and (selection is None or selection.allows(column)):
                column_type = types.get(column)
                kind = type(value)
                # Identity tests, not a set of (type, kind) pairs: hashing an enum member runs
                # Python code, and this runs for every value.
                if column not in row and (
                    (kind is str and column_type is S and not (check_text and self._bad_text(value)))
                    or (kind is datetime and column_type is TS)
                    or (kind is int and column_type is _I and _INT64_MIN <= value <= _INT64_MAX)
                    or (kind is float and column_type is _F)
                    or (kind is bool and column_type is _B)
                ):
                    row[column] = value
                    if column not in written:
                        written[column] = column_type  # type: ignore[assignment]
                    continue
                self._put(table, row, column, value, raw)
            elif column is None:
                self._discard(table.name, f"{origin}.{raw.replace(_SEP, '.')}", value, "no_column_name")

    def _bad_text(self, text: str) -> bool:
        dialect = self.mapper.dialect
        return not self._text_fits(text) or (not dialect.text_allows_nul and "\x00" in text)

    def _put(self, table: TableLoad, row: dict[str, Any], column: str, value: Any, raw: str) -> None:
        """Put one value that needs more than the common case: a new column (its type from this
        value), a conversion, or a discard."""
        types = self.state.types[table.name]
        column_type = types.get(column)
        new = column_type is None
        if column_type is None:
            if len(types) >= self.mapper.max_columns:
                self._discard(table.name, column, value, "column_limit")
                return
            column_type = infer(value)
        if column_type is S and type(value) is str:
            converted: Any = value
        elif column_type is TS and type(value) is datetime:
            converted = value
        else:
            converted = convert(value, column_type)
            if converted is NO_FIT:
                self._discard(table.name, column, value, "type_mismatch")
                return
        if type(converted) is str:
            if not self._text_fits(converted):
                self._discard(table.name, column, value, "value_too_long")
                return
            if "\x00" in converted and not self.mapper.dialect.text_allows_nul:
                self._discard(table.name, column, value, "nul_character")
                return
        if column in row:
            self._discard(table.name, column, value, "name_collision")
            return
        if new:  # a column is made only for a value that lands in it
            types[column] = table.added[column] = column_type
        row[column] = converted
        table.columns[column] = column_type

    def _text_fits(self, text: str) -> bool:
        dialect = self.mapper.dialect
        if dialect.max_string_bytes is not None and len(text) * 4 > dialect.max_string_bytes:
            return len(text.encode()) <= dialect.max_string_bytes
        return True

    def _discard(self, table: str, column: str, value: Any, reason: str) -> None:
        load = self.load
        load.counts[reason] += 1
        load.counts["discards"] += 1
        load.notes.setdefault(f"{table}.{column}", Counter())[reason] += 1
        discards = self.state.table(DISCARDS, "row_id", "replace")
        dialect = self.mapper.dialect
        row = {
            "table_name": table,
            "column_name": column,
            "row_id": self.id,
            "user_id": None if self.user_id is None else dialect.text(self.user_id),
            "value": dialect.text(to_text(value)),  # U+0000 kept, JSON-escaped
            "reason": reason,
            "received_at": self.received_at,
            "uuid_ts": load.uuid_ts,
        }
        for name in row:
            discards.columns[name] = _DISCARD_COLUMNS[name]
        # Keyed by row id, column and position: one message may discard several values.
        discards.rows[f"{self.id}{_SEP}{table}{_SEP}{column}{_SEP}{len(discards.rows)}"] = row


#: Per call type, the message fields that are standard columns: (field, column, is a timestamp).
_STANDARD_FIELDS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    call: tuple((field_name, column, _COMMON.get(column) is TS) for field_name, column in {**_FIELDS, **extra}.items())
    for call, extra in _EXTRA_FIELDS.items()
}
#: Per call type, the message field of each standard column (the others are constants).
_FIELD_OF: dict[str, dict[str, str]] = {
    call: {column: field_name for field_name, column, _ in fields} for call, fields in _STANDARD_FIELDS.items()
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_I, _F, _B = ColumnType.INTEGER, ColumnType.FLOAT, ColumnType.BOOLEAN
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _flatten(obj: dict[str, Any], prefix: str | None, paths: list[str], values: list[Any]) -> None:
    """The leaves of ``obj``: their raw paths (keys joined by ``_SEP``) into ``paths``, their
    values into ``values``; nested objects walked, arrays kept whole (their column holds JSON
    text), nulls left out."""
    for key, value in obj.items():
        path = key if prefix is None else f"{prefix}{_SEP}{key}"
        if type(value) is dict:
            if value:
                _flatten(value, path, paths, values)
        elif value is not None:
            paths.append(path)
            values.append(value)


def _merge_latest(table: TableLoad, key: str, row: dict[str, Any], received_at: datetime | None) -> None:
    """Put the ``users``/``accounts`` row of ``key`` (received at ``received_at``) into
    ``table``: the same key twice in a batch keeps the newest non-null values (a tie: the later)."""
    earlier = table.rows.get(key)
    if earlier is not None:
        if _instant(earlier.get("received_at")) > _instant(received_at):
            row, earlier = earlier, row
        row = {**earlier, **row}
    table.rows[key] = row


def _instant(received_at: Any) -> datetime:
    """``received_at`` as the row holds it, as an instant to compare: a datetime, or its text
    when the warehouse's column is not a timestamp it knows (an operator's TIMESTAMP_NS or
    VARCHAR: loaded as text for the engine to cast)."""
    if isinstance(received_at, datetime):
        return received_at
    if isinstance(received_at, str):
        try:
            instant = datetime.fromisoformat(received_at.strip('"'))  # a datetime's JSON text
        except ValueError:
            return _EPOCH
        return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)
    return _EPOCH


class _Plan:
    """Where the values of messages of one shape go: the columns, in the order of the values,
    and which values still need a look (integers past 64 bits, text an engine cannot hold)."""

    __slots__ = ("columns", "integers", "texts")

    def __init__(self, columns: list[str], values: list[Any], *, check_text: bool) -> None:
        self.columns = tuple(columns)
        self.integers = tuple(i for i, value in enumerate(values) if type(value) is int)
        self.texts = tuple(i for i, value in enumerate(values) if type(value) is str) if check_text else ()

    def takes(self, values: list[Any], message: _Message) -> bool:
        for i in self.integers:
            if not _INT64_MIN <= values[i] <= _INT64_MAX:
                return False
        return not any(message._bad_text(values[i]) for i in self.texts)
