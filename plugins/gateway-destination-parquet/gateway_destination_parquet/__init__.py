"""The ``parquet`` destination: a data lake of Parquet files in Segment Data Lakes' layout.

    <path>/<schema>/<table>/day=<YYYY-MM-DD>/part-<first seq>-<last seq>.parquet

One folder per source (``schema``), per table (Segment's "collection": ``identifies``, ``pages``,
one per track event...) and per day the messages were received (UTC), so DuckDB, pandas
(pyarrow) and Spark read a table with hive partitioning::

    SELECT * FROM read_parquet('lake/web/order_completed/*/*.parquet', hive_partitioning = true, union_by_name = true)

As in Segment Data Lakes there is no ``tracks``, ``users`` or ``accounts`` table (files are
never updated in place), names keep a leading digit, and a property named ``day`` becomes
``_day`` (the partition column). A column's type never changes: ``<schema>/_schema.json``
keeps every table's columns and types, so files of one table always agree.

Each file is written under a hidden temporary name, fsynced, then renamed: readers see a whole
file or none. Exactly once: a file's name holds the log positions of the batch it came from; a
batch loaded again (a retry, a ``kill -9`` before the cursor moved, a replay) first reads the
ids of the partition's files whose range overlaps its own and leaves out the rows already there.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from gateway_warehouse import (
    ColumnType,
    Dialect,
    Load,
    Loader,
    Schema,
    TableLoad,
    WarehouseConfig,
    WarehouseDestination,
    user_columns,
    warehouse_delivery_defaults,
)
from gateway_warehouse.arrow import arrow_schema, arrow_table

from gateway import DeliveryError, DestinationContext, DestinationType, hookimpl

# pyarrow is imported where it is first used: its import cost every gateway start ~0.1 s (issue 19).

__all__ = ["DIALECT", "ParquetConfig", "ParquetLoader"]

#: Glue (Segment Data Lakes' catalog) takes column names of up to 250 characters; ``day`` is
#: the partition key.
DIALECT = Dialect(
    "parquet",
    max_identifier_bytes=250,
    reserved_words=frozenset({"day"}),
    prefix_leading_digit=False,
    max_columns=1000,
    object_tables=False,
    tracks_table=False,
)
SCHEMA_FILE = "_schema.json"
_PART = re.compile(r"part-(\d+)-(\d+)(?:-\d+)?\.parquet")
_TEMP_PREFIX = ".tmp-"


class ParquetConfig(WarehouseConfig, kw_only=True):
    """``[destinations.<id>]`` keys of a Parquet data lake (and the shared warehouse keys)."""

    #: The lake's folder (created on the first load).
    path: Annotated[str, msgspec.Meta(min_length=1)]
    #: Parquet compression: ``zstd``, ``snappy`` (what Spark writes), ``gzip`` or ``none``.
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"


class ParquetLoader(Loader):
    """Writes a batch's rows as new Parquet files under ``path``."""

    dialect: ClassVar[Dialect] = DIALECT

    def __init__(self, path: str, compression: str = "zstd") -> None:
        self.root = Path(path)
        self.compression = None if compression == "none" else compression

    # -- schemas -----------------------------------------------------------------------------

    def read_schemas(self, names: Sequence[str]) -> dict[str, Schema | None]:
        return {name: self._schema(name) for name in names}

    def schemas(self) -> dict[str, Schema]:
        if not self.root.is_dir():
            return {}
        found = {}
        for folder in sorted(self.root.iterdir()):
            schema = self._schema(folder.name) if folder.is_dir() else None
            if schema:
                found[folder.name] = schema
        return found

    def _schema(self, name: str) -> Schema | None:
        path = self.root / name / SCHEMA_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return self._schema_of_files(name)
        return {table: {c: ColumnType(t) for c, t in columns.items()} for table, columns in raw.items()}

    def _schema_of_files(self, name: str) -> Schema | None:
        """The schema the files have (when ``_schema.json`` was removed): each file's columns."""
        folder = self.root / name
        if not folder.is_dir():
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema: Schema = {}
        types = {str(pa.string()): ColumnType.STRING, "int64": ColumnType.INTEGER, "double": ColumnType.FLOAT}
        types |= {"bool": ColumnType.BOOLEAN, str(pa.timestamp("us", tz="UTC")): ColumnType.TIMESTAMP}
        for path in sorted(folder.glob("*/day=*/part-*.parquet")):
            table = schema.setdefault(path.parent.parent.name, {})
            for field in pq.read_schema(path):
                table.setdefault(field.name, types.get(str(field.type), ColumnType.STRING))
        return schema

    def _save_schema(self, name: str, schema: Schema) -> None:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        data = json.dumps({t: {c: str(k) for c, k in cols.items()} for t, cols in schema.items()}, indent=1)
        _write_atomically(folder / SCHEMA_FILE, data.encode())

    # -- loads -------------------------------------------------------------------------------

    def write(self, load: Load) -> None:
        for schema_load in load.schemas:
            schema = self._schema(schema_load.schema) or {}
            changed = False
            for table in schema_load.tables.values():
                columns = schema.setdefault(table.name, {})
                for column, kind in table.added.items():
                    if column not in columns:
                        columns[column] = kind
                        changed = True
            if changed:  # before any file that uses the new columns
                self._save_schema(schema_load.schema, schema)
            for table in schema_load.tables.values():
                for day, rows in _by_day(table).items():
                    self._write_partition(self.root / schema_load.schema / table.name / f"day={day}", table, rows, load)
                self._widen_first_file(self.root / schema_load.schema / table.name, schema[table.name])

    def _widen_first_file(self, folder: Path, columns: dict[str, ColumnType]) -> None:
        """Give the table's first file (in path order) every column of the table, as nulls where
        it has none: pyarrow's dataset reader (``pandas.read_parquet``) and Spark without
        ``mergeSchema`` take a table's schema from its first file, so a column a later load
        added would read as missing. Checked on every load (a footer read), so a crash between
        the load and the rewrite, or a deletion that removed the first file, is mended."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        first = min(folder.glob("day=*/part-*.parquet"), default=None)
        if first is None:
            return
        have = pq.read_schema(first).names
        if not set(columns) - set(have):
            return
        table = pq.read_table(first)
        full = arrow_schema({**{name: columns[name] for name in have if name in columns}, **columns})
        arrays = [table.column(f.name) if f.name in have else pa.nulls(len(table), f.type) for f in full]
        temp = first.with_name(_TEMP_PREFIX + first.name)
        pq.write_table(pa.Table.from_arrays(arrays, schema=full), temp, compression=self.compression)
        _fsync(temp)
        os.replace(temp, first)
        _fsync(first.parent)

    def _write_partition(self, folder: Path, table: TableLoad, rows: dict[str, dict[str, Any]], load: Load) -> None:
        import pyarrow.parquet as pq

        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob(f"{_TEMP_PREFIX}*"):
            leftover.unlink()  # a file a crash interrupted before its rename: never visible
        present = self._keys_loaded_before(folder, table.key, load.first_seq, load.last_seq)
        if present:
            rows = {k: row for k, row in rows.items() if row[table.key] not in present}
        if not rows:
            return
        part = TableLoad(table.name, table.key, table.merge, columns=table.columns, rows=rows)
        name = f"part-{load.first_seq:012d}-{load.last_seq:012d}.parquet"
        n = 0
        while (folder / name).exists():  # the same range again with rows that were not there
            n += 1
            name = f"part-{load.first_seq:012d}-{load.last_seq:012d}-{n}.parquet"
        temp = folder / f"{_TEMP_PREFIX}{name}"
        pq.write_table(arrow_table(part), temp, compression=self.compression)
        _fsync(temp)
        os.replace(temp, folder / name)
        _fsync(folder)

    def _keys_loaded_before(self, folder: Path, key: str, first: int, last: int) -> set[str]:
        """The keys in this partition's files from batches whose range overlaps ``first..last``."""
        import pyarrow.parquet as pq

        keys: set[str] = set()
        for path in folder.iterdir():
            match = _PART.fullmatch(path.name)
            if match and int(match[1]) <= last and first <= int(match[2]):
                keys.update(pq.read_table(path, columns=[key]).column(key).to_pylist())
        return keys

    def release(self) -> None:
        pass

    def delete_user(self, user_id: str) -> int:
        """Rewrite every file that holds rows of ``user_id`` without them (atomically, file by file)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        removed = 0
        if not self.root.is_dir():
            return 0
        for path in sorted(self.root.glob("*/*/day=*/part-*.parquet")):
            columns = user_columns(path.parent.parent.name, pq.read_schema(path).names)
            if not columns:
                continue
            table = pq.read_table(path)
            matches = [pc.fill_null(pc.equal(table[column], user_id), False) for column in columns]
            keep = pc.invert(functools.reduce(pc.or_, matches))
            gone = len(table) - pc.sum(keep.cast(pa.int64())).as_py()
            if not gone:
                continue
            removed += gone
            kept = table.filter(keep)
            if len(kept):
                temp = path.with_name(_TEMP_PREFIX + path.name)
                pq.write_table(kept, temp, compression=self.compression)
                _fsync(temp)
                os.replace(temp, path)
            else:
                path.unlink()
            _fsync(path.parent)
        return removed

    def classify(self, error: Exception) -> DeliveryError:
        """A full or read-only disk may pass; a value Arrow cannot hold never will."""
        import pyarrow as pa

        permanent = isinstance(error, pa.ArrowInvalid | pa.ArrowTypeError)
        return DeliveryError(f"Parquet: {error}", retryable=not permanent, kind=f"parquet_{type(error).__name__}")


def _by_day(table: TableLoad) -> dict[str, dict[str, dict[str, Any]]]:
    days: dict[str, dict[str, dict[str, Any]]] = {}
    for key, row in table.rows.items():
        when: datetime | None = row.get("received_at") or row.get("uuid_ts")
        day = when.strftime("%Y-%m-%d") if when is not None else "unknown"
        days.setdefault(day, {})[key] = row
    return days


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(_TEMP_PREFIX + path.name)
    with open(temp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    _fsync(path.parent)


def _build(config: ParquetConfig, context: DestinationContext) -> WarehouseDestination:
    return WarehouseDestination(
        config, context, lambda: ParquetLoader(config.path, config.compression), engine="parquet"
    )


@hookimpl
def gateway_destination_types() -> list[DestinationType]:
    return [
        DestinationType(
            name="parquet",
            config_type=ParquetConfig,
            factory=_build,
            description="a Parquet data lake in Segment Data Lakes' layout (source/table/day), written atomically",
            delivery_defaults=warehouse_delivery_defaults,
        )
    ]
