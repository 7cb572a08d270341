"""The ``postgres`` destination: Segment's warehouse schema in a PostgreSQL database, loaded
with binary ``COPY`` (psycopg 3; Arrow encoded by pgpq).

Each load is one transaction over every table it touches: check that the schemas are those the
batch was mapped against (the next batch is mapped while this one is written: see
``gateway_warehouse.Loader.overlaps``), create the schema and tables, add columns, then per table
delete the rows whose ``id`` the batch loads again and ``COPY`` the batch's rows in (``users``
and ``accounts``: ``COPY`` into a temporary table, then merge, newest non-null value per
column), and raise the destination's load watermark in the schema (``_gateway_loads``). A batch
wholly above the watermark skips the delete: none of its rows can be there, and the primary key
on ``id`` refuses one that is anyway (a message sent again after the dedup window), which loads
the batch again with the delete. A batch loaded again (a retry, a ``kill -9`` before the cursor
moved, a replay) is at or below the watermark and leaves one row per message; a load cut short
leaves nothing.

The role needs ``CREATE`` on the database (to make one schema per source) or on the schemas
you made for it; it never needs to be a superuser. Tables it creates carry the comment
``gateway warehouse``; only those are described, and only those lose a deleted user's rows.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import structlog
from gateway_warehouse import (
    DISCARDS,
    ColumnType,
    Dialect,
    Load,
    Loader,
    Schema,
    TableLoad,
    WarehouseConfig,
    WarehouseDestination,
    create_table,
    merge_latest,
    qualified,
    quote,
    user_columns,
    warehouse_delivery_defaults,
)
from gateway_warehouse.arrow import arrow_table
from gateway_warehouse.sql import WATERMARKS, create_watermarks, raise_watermark, select_watermark

from gateway import DeliveryError, DestinationContext, DestinationType, hookimpl

if TYPE_CHECKING:  # imported where first used: their imports cost every gateway start ~0.1 s (issue 19)
    import psycopg
    import pyarrow as pa

__all__ = ["DIALECT", "PostgresConfig", "PostgresLoader"]

log = structlog.get_logger("gateway_destination_postgres")

# SELECT word FROM pg_get_keywords() WHERE catcode IN ('R', 'T'): the words a column cannot be
# called without quotes (PostgreSQL 15); on the last line the system columns, which no column
# may be called even quoted.
_RESERVED = frozenset(
    """
    all analyse analyze and any array as asc asymmetric authorization binary both case cast check
    collate collation column concurrently constraint create cross current_catalog current_date
    current_role current_schema current_time current_timestamp current_user default deferrable desc
    distinct do else end except false fetch for foreign freeze from full grant group having ilike in
    initially inner intersect into is isnull join lateral leading left like limit localtime
    localtimestamp natural not notnull null offset on only or order outer overlaps placing primary
    references returning right select session_user similar some symmetric table tablesample then to
    trailing true union unique user using variadic verbose when where window with
    tableoid xmin cmin xmax cmax ctid
    """.split()  # noqa: SIM905 - a word list reads better than a literal of 100 strings
)
#: NAMEDATALEN - 1. PostgreSQL allows 1,600 columns, but a row must fit in a page: 8,160 bytes.
#: TOAST moves a text value of more than 24 bytes out of line as an 18-byte pointer, so a text
#: value takes up to 24 bytes in the row, and 339 columns of 23-character text are the most that
#: fit (measured on PostgreSQL 15; 460 columns of 45-character text are "row is too big"): 320
#: columns fit whatever their values and nulls (320 x 24 + a 72-byte header).
#: Schemas named ``pg_...`` are the server's own (``CREATE SCHEMA`` refuses them).
#: A btree index entry takes at most 2,704 bytes (a third of a page): a longer ``users`` or
#: ``accounts`` id is kept by a hash (see ``Dialect.key``).
DIALECT = Dialect(
    "postgres",
    max_identifier_bytes=63,
    reserved_words=_RESERVED,
    max_columns=320,
    text_allows_nul=False,
    reserved_schemas=frozenset({"information_schema"}),
    reserved_schema_prefix="pg_",
    max_key_bytes=2048,
)
_TYPES = {
    ColumnType.STRING: "text",
    ColumnType.INTEGER: "bigint",
    ColumnType.FLOAT: "double precision",
    ColumnType.BOOLEAN: "boolean",
    ColumnType.TIMESTAMP: "timestamp with time zone",
}
#: The types this destination creates, as ``format_type`` writes them: columns of other types
#: (an operator changed one) are loaded as CSV, which the server casts; binary ``COPY`` is
#: read as the column's own type.
_NATIVE = frozenset(_TYPES.values())
_READ_TYPES = {
    "text": ColumnType.STRING,
    "character varying": ColumnType.STRING,
    "bigint": ColumnType.INTEGER,
    "integer": ColumnType.INTEGER,
    "smallint": ColumnType.INTEGER,
    "double precision": ColumnType.FLOAT,
    "real": ColumnType.FLOAT,
    "numeric": ColumnType.FLOAT,
    "boolean": ColumnType.BOOLEAN,
    "timestamp with time zone": ColumnType.TIMESTAMP,
    "timestamp without time zone": ColumnType.TIMESTAMP,
}
#: Batches in flight by default: one written by the server while the next is mapped.
OVERLAPPED_BATCHES = 2
#: The comment on every table the destination creates: what it describes and deletes from.
MARK = "gateway warehouse"
_COPY_CHUNK = 1 << 20
#: Rows per Arrow record batch encoded and sent at a time: the server reads one while the
#: next is encoded, and no copy of a whole table's encoding is held.
_COPY_ROWS = 8192
_STAGE = "_gateway_stage"
_MERGED = "_gateway_merged"
# Tables and columns, with whether a column alone is a unique key (the watermark's fast path
# relies on the primary key to refuse an id loaded twice). A partial index (an operator's) or
# one not valid yet refuses only some ids: it does not count.
_OURS = f"""
SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), EXISTS (
    SELECT FROM pg_index i
    WHERE i.indrelid = c.oid AND i.indisunique AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum
    AND i.indpred IS NULL AND i.indisvalid
)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.relkind = 'r' AND c.relname <> '{WATERMARKS}' AND {{where}}
ORDER BY n.nspname, c.relname, a.attnum
"""


@dataclass(frozen=True)
class _Facts:
    """What a write needs to know of the tables besides their columns."""

    #: (schema, table) -> its columns of a type the destination does not create.
    foreign: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    #: Tables whose ``id`` alone is a unique key.
    keyed: frozenset[tuple[str, str]] = frozenset()

    def replacing(self, names: Collection[str], newer: _Facts) -> _Facts:
        """These facts, with those of the schemas ``names`` replaced by ``newer``."""
        foreign = {key: columns for key, columns in self.foreign.items() if key[0] not in names}
        keyed = {key for key in self.keyed if key[0] not in names}
        return _Facts({**foreign, **newer.foreign}, frozenset(keyed | newer.keyed))


class PostgresConfig(WarehouseConfig, kw_only=True):
    """``[destinations.<id>]`` keys of a PostgreSQL warehouse (and the shared warehouse keys)."""

    #: A libpq connection string or URI; write it as ``{ env = "..." }`` or ``{ file = "..." }``.
    dsn: str


class PostgresLoader(Loader):
    """Loads into the database at ``dsn`` over two connections kept between loads: one writes,
    the other reads the schemas for the next batch meanwhile."""

    dialect: ClassVar[Dialect] = DIALECT
    projects: ClassVar[bool] = True
    overlaps: ClassVar[bool] = True

    def __init__(self, dsn: str, destination: str = "gateway") -> None:
        self._dsn = dsn
        self._destination = destination  # whose load watermark this loader keeps
        self._unmarked: set[str] = set()  # schemas it may not make the watermark table in (said once)
        self._conn: psycopg.Connection[Any] | None = None  # loads, deletions, describe
        self._reads: psycopg.Connection[Any] | None = None  # read_schemas, beside a load
        # As read_schemas last saw them (replaced whole: a write in another thread reads them).
        self._facts = _Facts()

    def _connection(self) -> psycopg.Connection[Any]:
        self._conn = _live(self._conn, self._dsn)
        return self._conn

    def release(self) -> None:
        import psycopg

        conn = self._conn
        if conn is not None and (conn.broken or conn.closed):
            self._conn = None
        elif conn is not None and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()

    def close(self) -> None:
        for conn in (self._conn, self._reads):
            if conn is not None:
                conn.close()
        self._conn = self._reads = None

    def read_schemas(self, names: Sequence[str]) -> dict[str, Schema | None]:
        self._reads = conn = _live(self._reads, self._dsn)
        with conn.transaction(), conn.cursor() as cur:
            schemas, facts = _read_schemas(cur, names)
        self._facts = self._facts.replacing(names, facts)
        return schemas

    def schemas(self) -> dict[str, Schema]:
        conn = self._connection()
        with conn.transaction():
            rows = conn.execute(_OURS.format(where="obj_description(c.oid, 'pg_class') = %s"), [MARK]).fetchall()
        found: dict[str, Schema] = {}
        for schema, table, column, data_type, _ in rows:
            found.setdefault(schema, {}).setdefault(table, {})[column] = _READ_TYPES.get(data_type, ColumnType.STRING)
        return found

    def write(self, load: Load) -> None:
        self._write_once_by_id(load, None)

    def write_unless_changed(self, load: Load, schemas: Mapping[str, Schema | None]) -> bool:
        return self._write_once_by_id(load, schemas)

    def _write_once_by_id(self, load: Load, schemas: Mapping[str, Schema | None] | None) -> bool:
        from psycopg import errors

        try:
            return self._transaction(load, schemas, trust_watermark=True)
        except errors.UniqueViolation:
            # An id this destination had not loaded by its watermark is there: a message sent
            # again after the dedup window, or loaded by another destination. Replace by id.
            log.info("warehouse_ids_already_loaded", first_seq=load.first_seq, hint="the batch replaces them by id")
            return self._transaction(load, schemas, trust_watermark=False)

    def _transaction(self, load: Load, schemas: Mapping[str, Schema | None] | None, *, trust_watermark: bool) -> bool:
        """Write ``load`` in one transaction (after checking that the warehouse has ``schemas``,
        unless None); False when it has not (nothing written)."""
        conn = self._connection()
        import psycopg

        with conn.transaction() as transaction, conn.cursor() as cur:
            facts = self._facts
            if schemas is not None:
                now, facts = _read_schemas(cur, list(schemas))
                if now != schemas:
                    raise psycopg.Rollback(transaction)
            self._write(cur, load, facts, trust_watermark=trust_watermark)
            return True
        return False

    def _write(self, cur: psycopg.Cursor[Any], load: Load, facts: _Facts, *, trust_watermark: bool) -> None:
        # CSV rows' timestamps are written as UTC without a zone (see _copy).
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        for schema in load.schemas:
            name = schema.schema
            if schema.created:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(name)}")
            kept = self._watermarks_kept(cur, name)
            watermark = None
            if kept:
                cur.execute(select_watermark(name, self._destination))
                watermark = cur.fetchone()
            # Wholly above the watermark: no row of this batch was loaded here (see WATERMARKS).
            fresh = kept and trust_watermark and (watermark is None or load.first_seq > watermark[0])
            for table in schema.tables.values():
                self._prepare(cur, name, table)
                target = qualified(name, table.name)
                binary = not facts.foreign.get((name, table.name), set()) & set(table.columns)
                if table.merge == "latest":
                    cur.execute(f"CREATE TEMPORARY TABLE {_STAGE} (LIKE {target}) ON COMMIT DROP")
                    _copy(cur, _STAGE, table, binary=binary)
                    for statement in merge_latest(target, _STAGE, _MERGED, list(table.columns), table.all_columns):
                        cur.execute(statement)
                    cur.execute(f"DROP TABLE {_MERGED}, {_STAGE}")
                    continue
                # Straight in only where the key refuses an id already there (the fallback above).
                if not (fresh and (table.created or (name, table.name) in facts.keyed)):
                    cur.execute(f"DELETE FROM {target} WHERE {quote(table.key)} = ANY(%s)", [table.keys()])
                _copy(cur, target, table, binary=binary)
            if kept:
                cur.execute(raise_watermark(name, self._destination, load.last_seq))

    def _watermarks_kept(self, cur: psycopg.Cursor[Any], schema: str) -> bool:
        """Whether ``schema`` has the :data:`WATERMARKS` table, made now if it may be. A role
        that may not create tables in the schema (its tables made for it, or before the table
        existed) loads without it: every batch then takes the delete by id."""
        import psycopg

        cur.execute("SELECT to_regclass(%s)", [qualified(schema, WATERMARKS)])
        row = cur.fetchone()
        if row is not None and row[0] is not None:
            return True
        try:
            with cur.connection.transaction():  # a savepoint: a refusal leaves the load going
                cur.execute(create_watermarks(schema))
        except psycopg.errors.InsufficientPrivilege as error:
            if schema in self._unmarked:
                return False
            self._unmarked.add(schema)
            log.warning(
                "warehouse_watermark_unavailable",
                destination=self._destination,
                schema=schema,
                reason=str(error),
                hint=f"grant CREATE on the schema or create {WATERMARKS} for the role, so first loads skip the delete",
            )
            return False
        return True

    def _prepare(self, cur: psycopg.Cursor[Any], schema: str, table: TableLoad) -> None:
        target = qualified(schema, table.name)
        if table.created:
            _free_name_of_index(cur, schema, table.name)
            columns = {c: _TYPES[t] for c, t in table.added.items()}
            statement = create_table(schema, table.name, columns)
            if table.name != DISCARDS:
                statement = statement[:-1] + f", CONSTRAINT {quote(index_name(table.name, 'pkey'))} PRIMARY KEY (id))"
            cur.execute(statement)
            cur.execute(f"COMMENT ON TABLE {target} IS '{MARK}'")
            if table.name == DISCARDS:
                cur.execute(f"CREATE INDEX IF NOT EXISTS {quote(index_name(DISCARDS, 'row_id'))} ON {target} (row_id)")
        elif table.added:
            adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {quote(c)} {_TYPES[t]}" for c, t in table.added.items())
            cur.execute(f"ALTER TABLE {target} {adds}")

    def delete_user(self, user_id: str) -> int:
        from psycopg import sql

        removed = 0
        # The id as loaded too: JSON-escaped if it holds U+0000, cut and hashed if too long.
        ids = list({self.dialect.text(user_id), self.dialect.key(user_id)})
        conn = self._connection()
        with conn.transaction(), conn.cursor() as cur:
            for schema, tables in self.schemas().items():
                if not self._usable(cur, schema):
                    # Another role's schema (another gateway's, in a shared database): its tables
                    # are not this destination's to delete from, and touching them would abort
                    # the whole deletion.
                    log.info("warehouse_schema_skipped", schema=schema, reason="no USAGE privilege for this role")
                    continue
                if DISCARDS in tables:
                    # Rows whose user column could not hold the id (U+0000: NULL there, the
                    # escaped id in discards) are found through the discards that name them.
                    cur.execute(
                        sql.SQL(
                            "SELECT DISTINCT table_name, row_id FROM {} "
                            "WHERE column_name IN ('user_id', 'previous_id') AND value = ANY(%s)"
                        ).format(sql.Identifier(schema, DISCARDS)),
                        [ids],
                    )
                    for table, row_id in cur.fetchall():
                        if table in tables and table != DISCARDS:
                            cur.execute(
                                sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(schema, table)), [row_id]
                            )
                            removed += max(cur.rowcount, 0)
                for table, columns in tables.items():
                    names = user_columns(table, columns)
                    if names:
                        where = sql.SQL(" OR ").join(
                            sql.SQL("{} = ANY(%s)").format(sql.Identifier(column)) for column in names
                        )
                        cur.execute(
                            sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(schema, table), where),
                            [ids] * len(names),
                        )
                        removed += max(cur.rowcount, 0)
        return removed

    @staticmethod
    def _usable(cur: Any, schema: str) -> bool:
        """Whether this role may use ``schema`` (look up and change its tables)."""
        cur.execute("SELECT has_schema_privilege(%s, 'USAGE')", [schema])
        row = cur.fetchone()
        return bool(row and row[0])

    def classify(self, error: Exception) -> DeliveryError:
        """Data the database will refuse every time (a value it cannot cast into a column an
        operator changed, a NOT NULL or CHECK an operator added, a row too big) is permanent,
        as DuckDB's constraint errors are; the rest (a server down, a lost connection, a
        missing grant, a lock timeout, an id another writer loaded at the same time) is retried."""
        from psycopg import errors

        state = getattr(error, "sqlstate", None) or ""
        refused = errors.DataError | errors.ProgramLimitExceeded | errors.NotNullViolation | errors.CheckViolation
        permanent = isinstance(error, refused) or (
            state.startswith("42") and not isinstance(error, errors.InsufficientPrivilege)
        )
        kind = f"postgres_{state}" if state else f"postgres_{type(error).__name__}"
        return DeliveryError(f"PostgreSQL: {str(error).strip()}", retryable=not permanent, kind=kind)


def index_name(table: str, what: str) -> str:
    """The name of the index ``what`` of ``table``: ``tracks__pkey``. Indexes and tables share
    a schema's names, and no table name holds ``__`` (see ``gateway_warehouse.naming``), so an
    event named "Tracks Pkey" (``tracks_pkey``, PostgreSQL's own name for that index) never
    finds its name taken. Cut with a hash, as names are, past the identifier limit."""
    return DIALECT.fit(table, f"__{what}")


def _free_name_of_index(cur: psycopg.Cursor[Any], schema: str, table: str) -> None:
    """Give an index of the gateway's tables named ``table`` (PostgreSQL's default index names,
    as versions before :func:`index_name` made them: ``tracks_pkey``, ``discards_row_id``) its
    :func:`index_name`, so the table can be made."""
    cur.execute(
        "SELECT t.relname FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
        "WHERE i.indexrelid = to_regclass(%s) AND obj_description(t.oid, 'pg_class') = %s",
        [qualified(schema, table), MARK],
    )
    row = cur.fetchone()
    if row is not None:
        owner = row[0]
        what = table[len(owner) + 1 :] if table.startswith(owner + "_") else table
        cur.execute(f"ALTER INDEX {qualified(schema, table)} RENAME TO {quote(index_name(owner, what))}")
        log.info("warehouse_index_renamed", schema=schema, index=table, hint="a table takes its name")


def _live(conn: psycopg.Connection[Any] | None, dsn: str) -> psycopg.Connection[Any]:
    """``conn``, or a new connection when it is closed or broken."""
    import psycopg

    if conn is None or conn.closed or conn.broken:
        return psycopg.connect(dsn, application_name="gateway-warehouse", connect_timeout=10)
    return conn


def _read_schemas(cur: psycopg.Cursor[Any], names: Sequence[str]) -> tuple[dict[str, Schema | None], _Facts]:
    """The named schemas' tables and column types (None: no such schema), and their facts."""
    cur.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", [list(names)])
    present = {n for (n,) in cur.fetchall()}
    cur.execute(_OURS.format(where="n.nspname = ANY(%s)"), [list(present)])
    schemas: dict[str, Schema | None] = {name: ({} if name in present else None) for name in names}
    foreign: dict[tuple[str, str], set[str]] = {}
    keyed = set()
    for schema, table, column, data_type, is_key in cur.fetchall():
        tables = schemas[schema]
        assert tables is not None
        tables.setdefault(table, {})[column] = _READ_TYPES.get(data_type, ColumnType.STRING)
        if data_type not in _NATIVE:
            foreign.setdefault((schema, table), set()).add(column)
        if is_key and column == "id":
            keyed.add((schema, table))
    return schemas, _Facts(foreign, frozenset(keyed))


def _copy(cur: psycopg.Cursor[Any], target: str, table: TableLoad, *, binary: bool) -> None:
    """``COPY`` the rows of ``table`` into ``target``: binary when every column it writes has
    the type this destination gives it (no text to format or parse; a 50,000-message load of
    the benchmark's mix: the server's ``COPY`` 1.34 s against 1.90 s as CSV, as fast as the
    text format of a bare ``COPY``), else CSV, which the server casts to the column's type."""
    import pgpq
    import pyarrow.csv as csv

    names = ", ".join(quote(c) for c in table.columns)
    rows = arrow_table(table)
    if binary:
        encoder = pgpq.ArrowToPostgresBinaryEncoder(rows.schema)
        with cur.copy(f"COPY {target} ({names}) FROM STDIN (FORMAT binary)") as copy:
            copy.write(encoder.write_header())
            for batch in rows.to_batches(max_chunksize=_COPY_ROWS):
                copy.write(encoder.write_batch(batch))
            copy.write(encoder.finish())
        return
    # Arrow writes the CSV in C++ (a row at a time through psycopg costs four times as much):
    # an empty string is quoted, NULL is empty, floats keep every digit, timestamps are in UTC
    # with microseconds and no zone, which the transaction's ``TimeZone = 'UTC'`` reads as UTC
    # (Arrow formats a zoned timestamp through the time zone database, 2-4 µs a value).
    data = io.BytesIO()
    csv.write_csv(_zoneless(rows), data, csv.WriteOptions(include_header=False, quoting_style="needed"))
    view = data.getbuffer()
    with cur.copy(f"COPY {target} ({names}) FROM STDIN (FORMAT csv)") as copy:
        for offset in range(0, len(view), _COPY_CHUNK):
            copy.write(view[offset : offset + _COPY_CHUNK])
    del view


def _zoneless(rows: pa.Table) -> pa.Table:
    """``rows`` with its timestamp columns (UTC) as timestamps without a zone (the same instants)."""
    import pyarrow as pa

    columns = [
        column.cast(pa.timestamp(column.type.unit)) if pa.types.is_timestamp(column.type) else column
        for column in rows.columns
    ]
    return pa.Table.from_arrays(columns, names=rows.column_names)


def _build(config: PostgresConfig, context: DestinationContext) -> WarehouseDestination:
    return WarehouseDestination(config, context, lambda: PostgresLoader(config.dsn, context.id), engine="postgres")


def _delivery_defaults(options: PostgresConfig) -> dict[str, Any]:
    """The warehouse defaults with two batches in flight: the next one is mapped while the
    server writes this one (see :attr:`gateway_warehouse.Loader.overlaps`)."""
    return {**warehouse_delivery_defaults(options), "concurrency": OVERLAPPED_BATCHES}


@hookimpl
def gateway_destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            name="postgres",
            config_type=PostgresConfig,
            factory=_build,
            description="Segment's warehouse schema in PostgreSQL, loaded with COPY every sync_interval_secs",
            delivery_defaults=_delivery_defaults,
        )
    ]
