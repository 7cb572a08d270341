"""Rows of a batch's common shapes built by DuckDB from the messages' JSON, not value by value
in Python.

Why: mapping a message in Python (decode, flatten, names, types, a row dict, then Arrow) costs
about 40 µs; an engine's whole bulk load of the same rows about 16. Most messages of a batch
share a few shapes (the same keys, the same kinds of values), and a shape's mapping does not
depend on its values. So :class:`Projector` finds the shapes and the messages that have them,
the :class:`~gateway_warehouse.mapping.Mapper` maps the first message of each shape as it maps
any other (the naming, types, limits and discards stay in one place) and writes down where each
value went (a *recipe*), and DuckDB's JSON functions apply the recipe to the rest in C++.

Exactness: a message is projected only when it is shaped exactly as its group's first message
(the same keys in every object, the same JSON type at every leaf, by ``json_keys`` and
``json_type``), its id is unique in the batch, and every value is one the recipe treats as the
Python mapping would: a timestamp where the first one had a timestamp (in the strict ISO form
both read alike), integers within 64 bits, text the engine takes. Everything else (and any
group whose first message needed a conversion or a discard) goes through the Python mapping,
in log order. Needs ``duckdb`` and ``pyarrow``, which this library does not depend on.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway_warehouse.arrow import arrow_type
from gateway_warehouse.naming import Dialect
from gateway_warehouse.types import ColumnType

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["Group", "ProjectionError", "Projector", "Recipe", "pointer"]

#: A shape needs this many messages in a batch to be worth its queries.
MIN_GROUP = 32
#: At most this many shapes per batch are projected (the largest).
MAX_GROUPS = 64
# Timestamps both Python's ``parse_timestamp`` and DuckDB's cast read, to the same instant (no
# year 0-999 or 9000+, whose offsets overflow in Python, no leap seconds, no more than 6 digits).
_STRICT_TS = (
    r"[1-8]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)"
)
_STRICT_TS_RE = re.compile(_STRICT_TS, re.ASCII)
_JSON_TYPES = {str: ("VARCHAR",), bool: ("BOOLEAN",), int: ("UBIGINT", "BIGINT"), float: ("DOUBLE",)}
_JSON_TYPES[type(None)] = ("NULL",)
_JSON_TYPES[list] = ("ARRAY",)
#: The output column a leaf's value has for each column type (``s3``: leaf 3 as text).
_PREFIX = {
    ColumnType.STRING: "s",
    ColumnType.TIMESTAMP: "t",
    ColumnType.INTEGER: "n",
    ColumnType.FLOAT: "f",
    ColumnType.BOOLEAN: "b",
}


class ProjectionError(Exception):
    """DuckDB failed on a batch (a body it cannot read, say): the mapper maps it in Python."""


def pointer(keys: Sequence[str]) -> str:
    """The JSON pointer (RFC 6901) of the value at ``keys``."""
    return "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in keys)


@dataclass
class Recipe:
    """Where one row's values come from: per column, its type and a JSON pointer into the
    message, or a constant (the load's ``uuid_ts``, a track's event table)."""

    table: str
    columns: list[tuple[str, ColumnType, str | None, Any]]  # (column, type, pointer or None, constant)


@dataclass
class Group:
    """Messages of one source, call type and event, in log order: the first is the sample.

    ``values`` holds, for the group's messages that have the sample's shape (``conforming``),
    every leaf value in each type a recipe may want (``s3``: leaf 3 as text, ``t3`` as a
    timestamp...), for the sample's messages after it."""

    source: str
    positions: list[int]
    leaves: list[str] = field(default_factory=list)
    conforming: set[int] = field(default_factory=set)
    values: Any = None
    recipes: list[Recipe] | None = None
    #: Set once the sample is mapped: whether its rows can be projected.
    usable: bool = False

    @property
    def sample(self) -> int:
        return self.positions[0]

    def covers(self, recipes: Sequence[Recipe]) -> bool:
        """Whether every value the recipes take was read, in the column's type, from every
        message of the group."""
        index = {leaf: i for i, leaf in enumerate(self.leaves, 1)}
        names = set(self.values.column_names)
        return all(
            path in index and f"{_PREFIX[column_type]}{index[path]}" in names
            for recipe in recipes
            for _, column_type, path, _ in recipe.columns
            if path is not None
        )

    def project(self, recipe: Recipe) -> pa.Table:
        """The rows of ``recipe`` for the group's conforming messages but the sample."""
        import pyarrow as pa

        index = {leaf: i for i, leaf in enumerate(self.leaves, 1)}
        rows = self.values
        arrays, names = [], []
        for column, column_type, path, constant in recipe.columns:
            names.append(column)
            if path is None:
                arrays.append(pa.array([constant] * rows.num_rows, arrow_type(column_type)))
            else:
                arrays.append(rows.column(f"{_PREFIX[column_type]}{index[path]}").cast(arrow_type(column_type)))
        return pa.Table.from_arrays(arrays, names=names)


class Projector:
    """A DuckDB database in memory that groups a batch's messages by shape and reads their
    values from the JSON. One per destination, used by one thread at a time."""

    def __init__(self, dialect: Dialect) -> None:
        import duckdb

        self._con = duckdb.connect(":memory:")
        self._con.execute("SET TimeZone = 'UTC'")
        self._text_checks: list[str] = []
        if not dialect.text_allows_nul:
            self._text_checks.append("NOT contains({}, chr(0))")
        if dialect.max_string_bytes is not None:
            self._text_checks.append(f"strlen({{}}) <= {int(dialect.max_string_bytes)}")

    def close(self) -> None:
        self._con.close()

    def groups(
        self, bodies: Sequence[bytes], sources: Sequence[str], decode: Any
    ) -> tuple[dict[int, Group], list[int]]:
        """The batch's groups worth projecting (by number), each with the positions that
        conform to its sample and their values, and the group number of each position (-1:
        none)."""
        import duckdb

        try:
            return self._groups(bodies, sources, decode)
        except duckdb.Error as error:
            raise ProjectionError(str(error)) from error
        finally:
            for name in ("_gw_bodies", "_gw_stage"):
                with contextlib.suppress(duckdb.Error):
                    self._con.unregister(name)

    def _groups(
        self, bodies: Sequence[bytes], sources: Sequence[str], decode: Any
    ) -> tuple[dict[int, Group], list[int]]:
        import pyarrow as pa

        con = self._con
        body = pa.array(bodies, pa.binary()).view(pa.string())
        con.register("_gw_bodies", pa.table({"body": body}))
        keys = con.sql(
            "SELECT k[1] AS c, k[2] AS e, k[3] AS i FROM "
            "(SELECT json_extract_string(body, ['$.type', '$.event', '$.messageId']) AS k FROM _gw_bodies)"
        ).to_arrow_table()
        con.unregister("_gw_bodies")
        calls, events, ids = (keys.column(name).to_pylist() for name in ("c", "e", "i"))
        seen = Counter(ids)
        by_key: dict[tuple[Any, ...], list[int]] = {}
        for position, (source, call, event, message_id) in enumerate(zip(sources, calls, events, ids, strict=True)):
            if message_id is None or seen[message_id] > 1 or call in ("identify", "group"):
                continue  # users and accounts rows merge in Python; ids seen twice: the last wins
            by_key.setdefault((source, call, event), []).append(position)
        chosen = sorted((p for p in by_key.values() if len(p) >= MIN_GROUP), key=len, reverse=True)[:MAX_GROUPS]
        chosen.sort(key=lambda positions: positions[0])
        of = [-1] * len(bodies)
        for k, positions in enumerate(chosen):
            for position in positions:
                of[position] = k
        positions = pa.array(range(len(bodies)), pa.int32())
        stage = pa.table({"pos": positions, "grp": pa.array(of, pa.int32()), "body": body})
        con.register("_gw_stage", stage)
        groups = {}
        for k, positions in enumerate(chosen):
            group = self._read(k, Group(sources[positions[0]], positions), decode(bodies[positions[0]]))
            if group is not None:
                groups[k] = group
        return groups, of

    def _read(self, k: int, group: Group, sample: dict[str, Any]) -> Group | None:
        """The group's messages shaped as ``sample`` (its first), with their values."""
        objects: list[str] = ["$"]
        kinds: list[type] = []
        _walk(sample, (), objects, group.leaves, kinds)
        leaves = group.leaves
        # Every value's JSON type, objects' too (json_keys reads a text or a number as no keys).
        typed = leaves + objects[1:]
        found = self._con.execute(
            "SELECT json_keys(body, ?), json_type(body, ?), json_extract_string(body, ?) FROM _gw_stage WHERE pos = ?",
            [objects, typed, leaves, group.sample],
        ).fetchall()
        if not found or not leaves:
            return None
        [(object_keys, all_types, texts)] = found
        if any(len(set(keys)) < len(keys) for keys in object_keys):
            return None  # a key written twice: msgspec keeps the last, a pointer finds the first
        types = all_types[: len(leaves)]
        if any(t not in _JSON_TYPES[kind] for t, kind in zip(types, kinds, strict=True)) or any(
            t != "OBJECT" for t in all_types[len(leaves) :]
        ):
            return None  # msgspec and DuckDB read the sample differently: Python maps the group
        checks = ["json_keys(body, $objects) IS NOT DISTINCT FROM $keys", "json_type(body, $typed) = $types"]
        selects = ["pos"]
        for i, (kind, text) in enumerate(zip(types, texts, strict=True), 1):
            value = f"v[{i}]"
            if kind == "VARCHAR" and _STRICT_TS_RE.fullmatch(text):
                # A timestamp, as the sample's: read as one only (a text column of timestamps
                # is rare enough for Python to map).
                selects.append(f"TRY_CAST({value} AS TIMESTAMPTZ) AS t{i}")
                checks.append(f"regexp_full_match({value}, '{_STRICT_TS}') AND t{i} IS NOT NULL")
            elif kind == "VARCHAR":
                selects.append(f"{value} AS s{i}")
                checks.extend(check.format(value) for check in self._text_checks)
            elif kind in ("UBIGINT", "BIGINT"):
                selects.append(f"TRY_CAST({value} AS BIGINT) AS n{i}")
                checks.append(f"n{i} IS NOT NULL")
            elif kind == "DOUBLE":
                # A number past 64 bits is a DOUBLE to DuckDB and an int to msgspec: only
                # numbers written as floats (msgspec writes a '.' or an exponent) pass.
                selects.append(f"TRY_CAST({value} AS DOUBLE) AS f{i}")
                checks.append(f"({value} LIKE '%.%' OR {value} LIKE '%e%' OR {value} LIKE '%E%')")
            elif kind == "BOOLEAN":
                selects.append(f"{value} = 'true' AS b{i}")
        rows = self._con.sql(
            f"SELECT * EXCLUDE (body, v) FROM (SELECT {', '.join(selects)}, body, v FROM "
            f"(SELECT pos, body, json_extract_string(body, $leaves) AS v FROM _gw_stage WHERE grp = {k})) "
            f"WHERE COALESCE({' AND '.join(checks)}, false) ORDER BY pos",
            params={"objects": objects, "keys": object_keys, "leaves": leaves, "typed": typed, "types": all_types},
        ).to_arrow_table()
        positions = rows.column("pos").to_pylist()
        group.conforming = set(positions)
        if group.sample not in group.conforming:
            return None
        group.values = rows.slice(1)  # the sample is the first
        return group


def _walk(obj: dict[str, Any], keys: tuple[str, ...], objects: list[str], leaves: list[str], kinds: list[type]) -> None:
    """Every object below ``obj`` (pointers into ``objects``) and every other value (pointers
    into ``leaves``, Python types into ``kinds``)."""
    for key, value in obj.items():
        path = (*keys, key)
        if type(value) is dict:
            objects.append(pointer(path))
            _walk(value, path, objects, leaves, kinds)
        else:
            leaves.append(pointer(path))
            kinds.append(type(value))
