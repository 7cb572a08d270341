"""Column types: what a JSON value's column becomes, and whether a later value fits it.

Segment's five types (segment-api.md §9.4): ``timestamp``, ``integer``, ``float``, ``boolean``,
``string``. A column's type is fixed by the first non-null value it ever gets:

==================================  ===========
first value                         column type
==================================  ===========
true / false                        boolean
whole number within 64 bits         integer
other number                        float
ISO-8601 date or date-time string   timestamp
other string, array (JSON text)     string
==================================  ===========

A later value is converted only where nothing is lost: a whole float into an integer column, an
integer into a float column (below 2**53), any scalar or array into a string column (as JSON
text). Anything else does not fit (:data:`NO_FIT`): the row gets NULL there and the value goes
to the discards table, as RudderStack does, rather than failing the load or vanishing.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

__all__ = ["NO_FIT", "ColumnType", "convert", "infer", "parse_timestamp", "to_text"]


class ColumnType(enum.StrEnum):
    """A warehouse column's type, as the mapping library knows it (each engine maps it to its
    own: PostgreSQL ``bigint``, DuckDB ``BIGINT``, Parquet ``int64``...)."""

    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"


#: What :func:`convert` returns for a value that does not fit a column.
NO_FIT: Final = object()

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EXACT_FLOAT = 2**53
# ISO-8601 dates and date-times, the shapes RudderStack documents (date only, space or T,
# fractions, Z or an offset with or without a colon); anything else stays a string.
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?", re.ASCII
)
_encode = msgspec.json.encode


def parse_timestamp(text: str) -> datetime | None:
    """``text`` as an aware UTC datetime when it is an ISO-8601 date or date-time (no zone:
    UTC), else None."""
    if len(text) > 35 or not _TIMESTAMP.fullmatch(text):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:  # 2019-02-30, hour 25...
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00
        return None


def to_text(value: Any) -> str:
    """A value as a string column holds it: strings as they are, a timestamp (a server field
    in a column an operator made text) as its RFC 3339 text, anything else as JSON text."""
    if type(value) is str:
        return value
    if type(value) is datetime:
        return _encode(value).decode()[1:-1]  # no JSON quotes: the text DuckDB and PostgreSQL cast
    return _encode(value).decode()


def infer(value: Any) -> ColumnType:
    """The type of a new column whose first non-null value is ``value`` (already flattened:
    never a dict)."""
    kind = type(value)
    if kind is bool:
        return ColumnType.BOOLEAN
    if kind is int:
        return ColumnType.INTEGER if _INT64_MIN <= value <= _INT64_MAX else ColumnType.STRING
    if kind is float:
        return ColumnType.FLOAT
    if kind is str and parse_timestamp(value) is not None:
        return ColumnType.TIMESTAMP
    return ColumnType.STRING


def convert(value: Any, column: ColumnType) -> Any:
    """``value`` as ``column`` stores it (a datetime for a timestamp), or :data:`NO_FIT`."""
    kind = type(value)
    if column is ColumnType.STRING:
        return value if kind is str else to_text(value)
    if column is ColumnType.INTEGER:
        if kind is int:
            return value if _INT64_MIN <= value <= _INT64_MAX else NO_FIT
        if kind is float and value.is_integer() and _INT64_MIN <= value <= _INT64_MAX:
            return int(value)
        return NO_FIT
    if column is ColumnType.FLOAT:
        if kind is float:
            return value
        if kind is int and -_EXACT_FLOAT <= value <= _EXACT_FLOAT:
            return float(value)
        return NO_FIT
    if column is ColumnType.BOOLEAN:
        return value if kind is bool else NO_FIT
    if column is ColumnType.TIMESTAMP:
        if kind is str:
            parsed = parse_timestamp(value)
            return NO_FIT if parsed is None else parsed
        return NO_FIT
    raise AssertionError(f"unknown column type {column!r}")  # pragma: no cover
