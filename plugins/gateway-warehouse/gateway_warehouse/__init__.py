"""Segment's warehouse schema for any engine: the mapping (flattening, naming, types, schema
evolution, discards) and a destination base that runs an engine's loader.

An engine plugin subclasses :class:`Loader` (read a schema, write a load in one transaction,
delete a user) and builds a :class:`WarehouseDestination` around it; see the README.
"""

from __future__ import annotations

from gateway_warehouse.destination import Loader, WarehouseConfig, WarehouseDestination, warehouse_delivery_defaults
from gateway_warehouse.mapping import Mapper
from gateway_warehouse.naming import Dialect, snakecase
from gateway_warehouse.sql import (
    WATERMARKS,
    create_table,
    create_watermarks,
    merge_latest,
    qualified,
    quote,
    raise_watermark,
    select_watermark,
)
from gateway_warehouse.tables import (
    DISCARDS,
    STANDARD_TABLES,
    Load,
    Schema,
    SchemaLoad,
    Selection,
    TableLoad,
    standard_columns,
    user_columns,
)
from gateway_warehouse.types import NO_FIT, ColumnType, convert, infer, parse_timestamp, to_text

__all__ = [
    "DISCARDS",
    "NO_FIT",
    "STANDARD_TABLES",
    "WATERMARKS",
    "ColumnType",
    "Dialect",
    "Load",
    "Loader",
    "Mapper",
    "Schema",
    "SchemaLoad",
    "Selection",
    "TableLoad",
    "WarehouseConfig",
    "WarehouseDestination",
    "convert",
    "create_table",
    "create_watermarks",
    "infer",
    "merge_latest",
    "parse_timestamp",
    "qualified",
    "quote",
    "raise_watermark",
    "select_watermark",
    "snakecase",
    "standard_columns",
    "to_text",
    "user_columns",
    "warehouse_delivery_defaults",
]
