"""The ``duckdb`` destination: Segment's warehouse schema in an embedded DuckDB file.

Nothing to install or start: ``path`` is a database file, created on the first load. Each load
is one transaction: the batch's rows go to DuckDB as Arrow tables, and per table the rows whose
``id`` is loaded again are deleted before the insert (``users`` and ``accounts`` are merged,
newest non-null value per column), so a batch loaded twice (a retry, a ``kill -9`` before the
cursor moved, a replay) leaves one row per message. DuckDB commits durably; a load cut short
leaves nothing behind.

Two batches are in flight by default: the next one is mapped (in one thread, against the
schema this load will leave) while this one is written (in another); the write checks in its
transaction that the file has that schema, and has the batch mapped again if not.

The file is opened for a load and closed after it (a checkpoint), so other processes can open
it between loads (``duckdb -readonly var/warehouse.duckdb``); a reader that holds it open
makes the next load wait for it (retried, with the error in ``gateway status``). While a backlog
is caught up (a write ends with the next batch already in flight) the file stays open from one
load to the next and is closed as soon as a write ends with none: each commit writes its rows
to the write-ahead log, and the checkpoint that writes them into the file runs once per
:data:`CHECKPOINT_THRESHOLD` of log rather than once per load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec
from gateway_warehouse import (
    ColumnType,
    Dialect,
    Load,
    Loader,
    Schema,
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

from gateway import DeliveryError, DestinationContext, DestinationType, hookimpl

if TYPE_CHECKING:  # imported where first used: its import cost every gateway start ~0.1 s (issue 19)
    import duckdb

__all__ = ["DIALECT", "DuckDBConfig", "DuckDBLoader"]

# SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category = 'reserved' (DuckDB 1.x-2.x)
_RESERVED = frozenset(
    """
    all analyse analyze and any array as asc asymmetric both case cast check collate column constraint
    create default deferrable desc describe distinct do else end except false fetch for foreign from
    group having in initially intersect into lambda lateral leading limit not null offset on only or
    order pivot pivot_longer pivot_wider placing primary qualify references returning select show some
    summarize symmetric table then to trailing true union unique unpivot using variadic when where
    window with
    """.split()  # noqa: SIM905 - a word list reads better than a literal of 100 strings
)
#: DuckDB has no identifier limit of its own; 63 bytes as PostgreSQL (and Jitsu's DuckDB loader)
#: keeps names portable to the engine people move to next.
#: DuckDB's catalog schemas: a schema of that name cannot be made in a database file.
DIALECT = Dialect(
    "duckdb",
    max_identifier_bytes=63,
    reserved_words=_RESERVED,
    max_columns=1000,
    reserved_schemas=frozenset({"information_schema", "pg_catalog"}),
)

_TYPES = {
    ColumnType.STRING: "VARCHAR",
    ColumnType.INTEGER: "BIGINT",
    ColumnType.FLOAT: "DOUBLE",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.TIMESTAMP: "TIMESTAMPTZ",
}
# What a column's type is read back as (an operator may have widened a column by hand: the
# warehouse is the source of truth, and anything unknown is loaded as text for DuckDB to cast).
_READ_TYPES = {
    "VARCHAR": ColumnType.STRING,
    "BIGINT": ColumnType.INTEGER,
    "INTEGER": ColumnType.INTEGER,
    "HUGEINT": ColumnType.INTEGER,
    "DOUBLE": ColumnType.FLOAT,
    "FLOAT": ColumnType.FLOAT,
    "BOOLEAN": ColumnType.BOOLEAN,
    "TIMESTAMP WITH TIME ZONE": ColumnType.TIMESTAMP,
    "TIMESTAMP": ColumnType.TIMESTAMP,
}
#: Write-ahead log past which a commit checkpoints (DuckDB's default is 16 MB, less than one
#: 50,000-message load writes: every load was checkpointed, its rows written twice). The rows
#: in the log stay in memory until the checkpoint: this bounds that memory. The checkpoint of
#: whatever a backlog's last loads left in the log runs in the last write or the close, where
#: no mapping overlaps it: 64 MB (every second or third load) rather than 128 MB (every
#: fourth) took that tail of a 200k-message backlog from 0.65 to 0.26 s of CPU, and the
#: writes of a 1M one from 10.0 to 8.2 s (bench/README.md, 2026-12-08).
CHECKPOINT_THRESHOLD = "64MB"
#: Batches in flight by default: one written while the next is mapped.
OVERLAPPED_BATCHES = 2
_STAGE = "_gateway_stage"
_MERGED = "_gateway_merged"
_TYPED = "_gateway_typed"


class DuckDBConfig(WarehouseConfig, kw_only=True):
    """``[destinations.<id>]`` keys of a DuckDB warehouse (and the shared warehouse keys)."""

    #: The database file (created on the first load, with its folder).
    path: Annotated[str, msgspec.Meta(min_length=1)]


class DuckDBLoader(Loader):
    """Loads into the DuckDB file at ``path``, opening it for each unit of work (or run of
    backlog loads). Two connections to the open file: one writes, the other reads the schemas
    for the next batch meanwhile."""

    dialect: ClassVar[Dialect] = DIALECT
    projects: ClassVar[bool] = True
    holds: ClassVar[bool] = True
    overlaps: ClassVar[bool] = True

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._con: duckdb.DuckDBPyConnection | None = None  # loads, deletions, describe
        self._reads: duckdb.DuckDBPyConnection | None = None  # read_schemas, beside a load
        self._catalog = ""  # the open file's catalog: tables are named with it (see qualified())

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            import duckdb

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = duckdb.connect(str(self.path), config={"checkpoint_threshold": CHECKPOINT_THRESHOLD})
            (self._catalog,) = self._con.execute("SELECT current_database()").fetchone() or ("",)
        return self._con

    def release(self) -> None:
        if self._reads is not None:
            reads, self._reads = self._reads, None
            reads.close()
        if self._con is not None:
            con, self._con = self._con, None
            con.close()

    close = release

    def read_schemas(self, names: Sequence[str]) -> dict[str, Schema | None]:
        if self._reads is None:
            self._reads = self._connection().cursor()
        found = _read(self._reads, names)
        return {name: found.get(name) for name in names}

    def schemas(self) -> dict[str, Schema]:
        return _read(self._connection(), None)

    def write(self, load: Load) -> None:
        self.write_unless_changed(load, None)

    def write_unless_changed(self, load: Load, schemas: Mapping[str, Schema | None] | None) -> bool:
        """:meth:`write`, unless the schemas (read in the load's transaction) are not ``schemas``
        (None: whatever they are)."""
        con = self._connection()
        con.execute("BEGIN TRANSACTION")
        try:
            if schemas is not None:
                found = _read(con, list(schemas))
                if {name: found.get(name) for name in schemas} != schemas:
                    con.execute("ROLLBACK")
                    return False
            self._write(con, load)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return True

    def _write(self, con: duckdb.DuckDBPyConnection, load: Load) -> None:
        for schema in load.schemas:
            if schema.created:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self._catalog)}.{quote(schema.schema)}")
            for table in schema.tables.values():
                target = qualified(schema.schema, table.name, self._catalog)
                if table.created:
                    columns = {c: _TYPES[t] for c, t in table.added.items()}
                    con.execute(create_table(schema.schema, table.name, columns, self._catalog))
                else:
                    for column, kind in table.added.items():
                        con.execute(f"ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {quote(column)} {_TYPES[kind]}")
                # Registered without try/finally: after a failed statement the transaction is
                # aborted and unregister would fail too, hiding the error that decides whether
                # the batch is retried; the next register replaces a stage left behind.
                con.register(_STAGE, arrow_table(table))
                names = ", ".join(quote(c) for c in table.columns)
                if table.merge == "latest":
                    # The merge compares and mixes stage and target values in CASE/COALESCE, so
                    # the stage takes the target's own types first (as PostgreSQL's LIKE does):
                    # a column an operator retyped (TIMESTAMP_NS, DECIMAL) is read back and
                    # staged as text, and DuckDB will not mix text with it.
                    con.execute(f"CREATE TEMPORARY TABLE {_TYPED} AS SELECT {names} FROM {target} LIMIT 0")
                    con.execute(f"INSERT INTO {_TYPED} ({names}) SELECT {names} FROM {_STAGE}")
                    for statement in merge_latest(target, _TYPED, _MERGED, list(table.columns), table.all_columns):
                        con.execute(statement)
                    con.execute(f"DROP TABLE {_MERGED}")
                    con.execute(f"DROP TABLE {_TYPED}")
                else:
                    key = quote(table.key)
                    con.execute(f"DELETE FROM {target} WHERE {key} IN (SELECT {key} FROM {_STAGE})")
                    con.execute(f"INSERT INTO {target} ({names}) SELECT {names} FROM {_STAGE}")
                con.unregister(_STAGE)

    def delete_user(self, user_id: str) -> int:
        con = self._connection()
        removed = 0
        con.execute("BEGIN TRANSACTION")
        try:
            for schema, tables in _read(con, None).items():
                for table, columns in tables.items():
                    names = user_columns(table, columns)
                    if not names:
                        continue
                    target = qualified(schema, table, self._catalog)
                    where = " OR ".join(f"{quote(column)} = ?" for column in names)
                    ids = [user_id] * len(names)
                    (count,) = con.execute(f"SELECT count(*) FROM {target} WHERE {where}", ids).fetchone() or (0,)
                    if count:
                        con.execute(f"DELETE FROM {target} WHERE {where}", ids)
                        removed += int(count)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return removed

    def classify(self, error: Exception) -> DeliveryError:
        import duckdb

        # Errors that come back the same on every attempt: the batch goes to the dead letters.
        permanent = isinstance(
            error,
            (duckdb.ConversionException, duckdb.BinderException, duckdb.ConstraintException, duckdb.ParserException),
        )
        kind = f"duckdb_{type(error).__name__.removesuffix('Exception').lower()}"
        return DeliveryError(f"DuckDB: {error}", retryable=not permanent, kind=kind)


def _read(con: duckdb.DuckDBPyConnection, names: Sequence[str] | None) -> dict[str, Schema]:
    """The tables and column types of the named schemas (None: every schema but DuckDB's own
    that has tables), as ``con`` sees them. Table and column names in lowercase: DuckDB's names
    are case-insensitive, and an operator's ``"Coupon"`` is the mapper's ``coupon`` (read as
    written, every later batch found the schema changed and was mapped twice)."""
    where = "WHERE catalog_name = current_database()"
    params: list[Any] = []
    if names is not None:
        where += f" AND schema_name IN ({', '.join('?' for _ in names)})"
        params = list(names)
    schemas: dict[str, Schema] = {
        name: {}
        for (name,) in con.execute(f"SELECT schema_name FROM information_schema.schemata {where}", params).fetchall()
    }
    if names is None:
        for builtin in ("main", "information_schema", "pg_catalog"):
            schemas.pop(builtin, None)
    if not schemas:
        return {}
    marks = ", ".join("?" for _ in schemas)
    rows = con.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        f"WHERE table_catalog = current_database() AND table_schema IN ({marks}) "
        "ORDER BY table_schema, table_name, ordinal_position",
        list(schemas),
    ).fetchall()
    for schema, table, column, data_type in rows:
        schemas[schema].setdefault(table.lower(), {})[column.lower()] = _READ_TYPES.get(data_type, ColumnType.STRING)
    if names is None:  # describe: the schemas a warehouse destination made (they have its tables)
        schemas = {name: tables for name, tables in schemas.items() if tables}
    return schemas


def _delivery_defaults(options: DuckDBConfig) -> dict[str, Any]:
    """The warehouse defaults with two batches in flight: the next one is mapped while this one
    is written (see :attr:`gateway_warehouse.Loader.overlaps`)."""
    return {**warehouse_delivery_defaults(options), "concurrency": OVERLAPPED_BATCHES}


def _build(config: DuckDBConfig, context: DestinationContext) -> WarehouseDestination:
    return WarehouseDestination(config, context, lambda: DuckDBLoader(config.path), engine="duckdb")


@hookimpl
def gateway_destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            name="duckdb",
            config_type=DuckDBConfig,
            factory=_build,
            description="Segment's warehouse schema in an embedded DuckDB file, loaded every sync_interval_secs",
            delivery_defaults=_delivery_defaults,
        )
    ]
