"""Rows as Arrow tables, for engines that take Arrow (DuckDB, Parquet). Needs ``pyarrow``,
which this library does not depend on: the plugins that use this module do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway_warehouse.tables import TableLoad
from gateway_warehouse.types import ColumnType

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["arrow_schema", "arrow_table", "arrow_type"]


def arrow_type(column: ColumnType) -> pa.DataType:
    """The Arrow type of a column type (timestamps: microseconds, UTC)."""
    import pyarrow as pa

    return {
        ColumnType.STRING: pa.string(),
        ColumnType.INTEGER: pa.int64(),
        ColumnType.FLOAT: pa.float64(),
        ColumnType.BOOLEAN: pa.bool_(),
        ColumnType.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    }[column]


def arrow_schema(columns: dict[str, ColumnType]) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([pa.field(name, arrow_type(kind)) for name, kind in columns.items()])


def arrow_table(table: TableLoad) -> pa.Table:
    """The rows of ``table`` (:attr:`~TableLoad.rows` then :attr:`~TableLoad.projected`) in the
    order and types of its :attr:`~TableLoad.columns`."""
    import pyarrow as pa

    schema = arrow_schema(table.columns)
    # Arrow converts the row dicts as a struct array in C++ (a missing key is a null): three
    # times faster than a Python list per column.
    rows = pa.array(list(table.rows.values()), type=pa.struct(schema))
    whole = pa.Table.from_batches([pa.RecordBatch.from_struct_array(rows)])
    if not table.projected:
        return whole
    parts = [whole]
    for part in table.projected:
        have = set(part.column_names)
        parts.append(
            pa.Table.from_arrays(
                [
                    part.column(f.name).cast(f.type) if f.name in have else pa.nulls(part.num_rows, f.type)
                    for f in schema
                ],
                schema=schema,
            )
        )
    return pa.concat_tables(parts)
