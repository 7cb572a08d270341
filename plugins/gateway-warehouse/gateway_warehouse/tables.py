"""Segment's warehouse tables and their standard columns (segment-api.md §9), and what one
load writes into them (:class:`Load`), as :mod:`gateway_warehouse.mapping` makes it and an
engine's :class:`~gateway_warehouse.destination.Loader` writes it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from gateway_warehouse.types import ColumnType, parse_timestamp

__all__ = [
    "DISCARDS",
    "STANDARD_TABLES",
    "Load",
    "Schema",
    "SchemaLoad",
    "Selection",
    "TableLoad",
    "standard_columns",
    "user_columns",
]

#: A schema as the warehouse has it: table -> column -> type, in column order.
Schema = dict[str, dict[str, ColumnType]]

S, TS = ColumnType.STRING, ColumnType.TIMESTAMP
_COMMON = {
    "id": S,
    "anonymous_id": S,
    "user_id": S,
    "received_at": TS,
    "sent_at": TS,
    "timestamp": TS,
    "original_timestamp": TS,
    "uuid_ts": TS,
}
# Standard columns per call type: message field -> column (segment-api.md §9.2).
_FIELDS = {
    "messageId": "id",
    "anonymousId": "anonymous_id",
    "userId": "user_id",
    "receivedAt": "received_at",
    "sentAt": "sent_at",
    "timestamp": "timestamp",
    "originalTimestamp": "original_timestamp",
}
_EXTRA_FIELDS: dict[str, dict[str, str]] = {
    "track": {"event": "event_text"},  # `event` is the table's name, set apart
    "page": {"name": "name", "category": "category"},
    "screen": {"name": "name", "category": "category"},
    "group": {"groupId": "group_id"},
    "alias": {"previousId": "previous_id"},
    "identify": {},
}
_EXTRA_COLUMNS: dict[str, dict[str, ColumnType]] = {
    "track": {"event": S, "event_text": S},
    "page": {"name": S, "category": S},
    "screen": {"name": S, "category": S},
    "group": {"group_id": S},
    "alias": {"previous_id": S},
    "identify": {},
}
_OBJECT_COLUMNS = {"id": S, "received_at": TS, "uuid_ts": TS}
#: The discards table: one row per value that could not be loaded where it belonged.
DISCARDS = "discards"
_DISCARD_COLUMNS = {
    "table_name": S,
    "column_name": S,
    "row_id": S,
    "user_id": S,
    "value": S,
    "reason": S,
    "received_at": TS,
    "uuid_ts": TS,
}
_TABLE_OF_TYPE = {
    "identify": "identifies",
    "track": "tracks",
    "page": "pages",
    "screen": "screens",
    "group": "groups",
    "alias": "aliases",
}
#: Tables the library makes; an event table that would take one of these names gets a ``_``.
STANDARD_TABLES = frozenset({*_TABLE_OF_TYPE.values(), "users", "accounts", DISCARDS})
_PAYLOAD = {
    "identify": "traits",
    "group": "traits",
    "track": "properties",
    "page": "properties",
    "screen": "properties",
}


def user_columns(table: str, columns: Iterable[str]) -> list[str]:
    """The columns of ``table`` (which has ``columns``) whose value is a user's id, for a
    deletion request: ``users.id``, ``user_id`` wherever it is, and an alias's
    ``previous_id`` (the user's earlier id)."""
    if table == "users":
        return ["id"]
    have = set(columns)
    return [column for column in ("user_id", "previous_id" if table == "aliases" else "") if column in have]


def standard_columns(table: str) -> dict[str, ColumnType]:
    """The standard columns of ``table`` (an event table: those of ``tracks``)."""
    if table == DISCARDS:
        return dict(_DISCARD_COLUMNS)
    if table in ("users", "accounts"):
        return dict(_OBJECT_COLUMNS)
    call = next((call for call, name in _TABLE_OF_TYPE.items() if name == table), "track")
    return {**_COMMON, **_EXTRA_COLUMNS[call]}


class Selection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Selective sync: which tables (or which columns of a table) are loaded. Give ``include``
    (only these) or ``exclude`` (all but these), by their names in the warehouse."""

    include: list[str] | None = None
    exclude: list[str] = []

    def __post_init__(self) -> None:
        if self.include is not None and self.exclude:
            raise ValueError("give include or exclude, not both")

    def allows(self, name: str) -> bool:
        if self.include is not None:
            return name in self.include
        return name not in self.exclude


@dataclass
class TableLoad:
    """One table's part of a load.

    Attributes:
        name: The table.
        key: The column that identifies a row (``id``; ``row_id`` in ``discards``).
        merge: ``replace``: rows whose key is loaded again are replaced (delete by key, then
            insert). ``latest``: ``users`` and ``accounts``; per column, the newest non-null
            value by ``received_at`` wins, over the row in the warehouse too.
        columns: The columns this load writes, with their types, in table order.
        added: Columns the table lacks (all of them when ``created``): add them first.
        created: The table does not exist yet.
        all_columns: Every column the table has once this load is written, in order (a merge
            of ``latest`` rows carries the ones this load does not write over).
        rows: One dict per row (column -> value; a missing column is NULL), one per key.
        projected: More rows, as Arrow tables that DuckDB built from the messages' JSON (see
            :mod:`gateway_warehouse.projection`): some of the :attr:`columns`, in their types;
            their keys are not in :attr:`rows` and appear once. Use
            :func:`gateway_warehouse.arrow.arrow_table` for all the rows.
    """

    name: str
    key: str
    merge: str
    columns: dict[str, ColumnType] = field(default_factory=dict)
    added: dict[str, ColumnType] = field(default_factory=dict)
    created: bool = False
    all_columns: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    projected: list[Any] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many rows the table gets (:attr:`rows` and :attr:`projected`)."""
        return len(self.rows) + sum(part.num_rows for part in self.projected)

    def keys(self) -> list[Any]:
        """The key of every row, once each."""
        keys = [row[self.key] for row in self.rows.values()]
        for part in self.projected:
            keys += part.column(self.key).to_pylist()
        return list(dict.fromkeys(keys))

    def values(self, column: str) -> list[Any]:
        """The column's values, row by row (None for NULL)."""
        return [row.get(column) for row in self.rows.values()]

    def tuples(self) -> list[tuple[Any, ...]]:
        """The rows as tuples in the order of :attr:`columns`."""
        names = list(self.columns)
        return [tuple(row.get(name) for name in names) for row in self.rows.values()]


@dataclass
class SchemaLoad:
    """What one load writes into one schema (one source's, by default)."""

    schema: str
    created: bool
    tables: dict[str, TableLoad] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(table.count for table in self.tables.values())


@dataclass
class Load:
    """What one batch becomes: the rows for each schema, and what happened on the way.

    Attributes:
        schemas: Per schema, its tables' rows (tables with no rows are left out).
        messages: Messages mapped.
        first_seq: The first log position of the batch.
        last_seq: The last log position of the batch.
        uuid_ts: The load's time, written into every row's ``uuid_ts``.
        counts: What was counted, by reason: ``type_mismatch``, ``column_limit``,
            ``no_column_name``, ``name_collision``, ``value_too_long``, ``unsupported_type``,
            ``excluded``...; ``discards`` is their total of rows in ``discards``.
        notes: Per ``table.column``, reasons and how many values each, for the log.
        newest_received_at: The latest ``receivedAt`` in the batch (for the lag).
    """

    schemas: list[SchemaLoad]
    messages: int
    first_seq: int
    last_seq: int
    uuid_ts: datetime
    counts: Counter[str] = field(default_factory=Counter)
    notes: dict[str, Counter[str]] = field(default_factory=dict)
    newest_received_at: datetime | None = None
    _timestamps: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def rows(self) -> int:
        return sum(schema.rows for schema in self.schemas)

    def timestamp(self, text: str) -> Any:
        """``text`` parsed (a datetime), or ``text`` itself when it is no timestamp. Cached for
        the load: a batch's messages share their ``receivedAt`` and ``sentAt``."""
        cache = self._timestamps
        value = cache.get(text)
        if value is None:
            if len(cache) > 10_000:
                cache.clear()
            parsed = parse_timestamp(text)
            value = cache[text] = text if parsed is None else parsed
        return value

    @property
    def discards(self) -> int:
        return self.counts["discards"]
