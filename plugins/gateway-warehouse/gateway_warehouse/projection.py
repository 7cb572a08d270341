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
(its body is the first one's with other values in their places: the same keys in the same
order, none twice, the same JSON type at every leaf, no escapes; one JSON parse reads the
values' texts), its id is unique in the batch, and every value is one the recipe treats as the
Python mapping would: a timestamp where the first one had a timestamp (in the strict ISO form
both read alike), integers within 64 bits, text the engine takes. Everything else (and any
group whose first message needed a conversion or a discard) goes through the Python mapping,
in log order. Needs ``duckdb`` and ``pyarrow``, which this library does not depend on.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

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
#: A JSON number with a fraction or an exponent (what msgspec reads as a float).
_JSON_FLOAT = r"-?(0|[1-9][0-9]*)(\.[0-9]+([eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)"
_encode = msgspec.json.Encoder().encode
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
    """Messages of one source, call type and event, in log order, named by the first one's
    position: the sample.

    ``values`` holds, for the group's messages that have the sample's shape (``conforming``),
    every leaf value in each type a recipe may want (``s3``: leaf 3 as text, ``t3`` as a
    timestamp...), for the sample's messages after it."""

    source: str
    sample: int
    leaves: list[str] = field(default_factory=list)
    conforming: set[int] = field(default_factory=set)
    values: Any = None
    recipes: list[Recipe] | None = None
    #: Set once the sample is mapped: whether its rows can be projected.
    usable: bool = False

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
    values from the JSON. One per destination, used by one thread at a time.

    The groups are read on two connections at once, half of them in a thread of the
    projector's own: DuckDB runs a query without the GIL, and one query over a batch's Arrow
    table uses one core, so the mapping of a batch (the load's critical path when the engine
    writes the batch before meanwhile) uses two."""

    def __init__(self, dialect: Dialect) -> None:
        import duckdb

        self._con = duckdb.connect(":memory:")
        self._con.execute("SET TimeZone = 'UTC'")
        self._side = self._con.cursor()  # the same database, for the other reading thread
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="warehouse-projection")
        # A NUL character is checked for in the whole body (the engine's rule or not: a body
        # with no escape holds one only raw, which no log writes).
        self._text_checks: list[str] = []
        if dialect.max_string_bytes is not None:
            self._text_checks.append(f"strlen({{}}) <= {int(dialect.max_string_bytes)}")
        # A users id past the engine's key limit is keyed by Dialect.key (a hash): Python maps it.
        self._key_checks = [] if dialect.max_key_bytes is None else [f"strlen({{}}) <= {int(dialect.max_key_bytes)}"]

    def close(self) -> None:
        self._reader.shutdown()
        self._side.close()
        self._con.close()

    def groups(
        self, bodies: Sequence[bytes], sources: Sequence[str], decode: Any
    ) -> tuple[dict[int, Group], list[int]]:
        """The batch's groups worth projecting, by their sample's position, each with the
        positions that conform to its sample and their values; and the group of each position
        (its sample's position; -1: none)."""
        import duckdb

        try:
            return self._groups(bodies, sources, decode)
        except duckdb.Error as error:
            raise ProjectionError(str(error)) from error
        finally:
            for con, name in (
                (self._con, "_gw_bodies"),
                (self._con, "_gw_keys"),
                (self._con, "_gw_stage"),
                (self._side, "_gw_stage"),
            ):
                with contextlib.suppress(duckdb.Error):
                    con.unregister(name)

    def _groups(
        self, bodies: Sequence[bytes], sources: Sequence[str], decode: Any
    ) -> tuple[dict[int, Group], list[int]]:
        import pyarrow as pa
        import pyarrow.compute as pc

        con = self._con
        body = pa.array(bodies, pa.binary()).view(pa.string())
        positions = pa.array(range(len(bodies)), pa.int32())
        con.register("_gw_bodies", pa.table({"pos": positions, "src": pa.array(sources, pa.string()), "body": body}))
        keys = con.sql(
            "SELECT pos, src, k[1] AS c, k[2] AS e, k[3] AS i FROM "
            "(SELECT pos, src, json_extract_string(body, ['$.type', '$.event', '$.messageId']) AS k FROM _gw_bodies)"
        ).to_arrow_table()
        con.unregister("_gw_bodies")
        con.register("_gw_keys", keys)
        # Grouped in SQL (a list of members per group costs more than the JSON read): each
        # member with its group's first position, which names the group. Group calls (the
        # accounts merge) are mapped in Python, and so are ids seen twice in the batch (the last
        # one wins); identify calls' users rows are merged by the mapper, in log order.
        members = con.sql(
            "WITH m AS (SELECT pos, src, c, e FROM "
            "  (SELECT *, count(*) OVER (PARTITION BY i) AS n FROM _gw_keys WHERE i IS NOT NULL) "
            "  WHERE n = 1 AND c IS DISTINCT FROM 'group'), "
            "g AS (SELECT src, c, e, min(pos) AS first FROM m GROUP BY ALL "
            f"  HAVING count(*) >= {int(MIN_GROUP)} ORDER BY count(*) DESC, first LIMIT {int(MAX_GROUPS)}) "
            "SELECT m.pos, g.first FROM m JOIN g "
            "ON m.src = g.src AND m.c IS NOT DISTINCT FROM g.c AND m.e IS NOT DISTINCT FROM g.e"
        ).to_arrow_table()
        con.unregister("_gw_keys")
        of = [-1] * len(bodies)
        for position, first in zip(members.column("pos").to_pylist(), members.column("first").to_pylist(), strict=True):
            of[position] = first
        stage = pa.table({"pos": positions, "grp": pa.array(of, pa.int32()), "body": body})
        # The largest groups first, each to the connection with fewer messages to read so far.
        sizes = pc.value_counts(members.column("first")).to_pylist()
        shares: tuple[list[int], list[int]] = ([], [])
        loads = [0, 0]
        for size in sorted(sizes, key=lambda found: -found["counts"]):
            side = loads.index(min(loads))
            shares[side].append(size["values"])
            loads[side] += size["counts"]

        def read(con: Any, firsts: list[int]) -> list[Group]:
            con.register("_gw_stage", stage)
            found = []
            for first in firsts:
                try:
                    sample = decode(bodies[first])
                except msgspec.DecodeError:
                    # JSON DuckDB reads and msgspec does not (NaN, a trailing comma, 1e400):
                    # the group is mapped in Python, which counts its sample undecodable.
                    continue
                group = self._read(con, Group(sources[first], first), sample)
                if group is not None:
                    found.append(group)
            return found

        other = self._reader.submit(read, self._side, shares[1])
        try:
            mine = read(con, shares[0])
        finally:
            theirs = other.result()
        return {group.sample: group for group in sorted([*mine, *theirs], key=lambda group: group.sample)}, of

    def _read(self, con: Any, group: Group, sample: dict[str, Any]) -> Group | None:
        """The group's messages written as ``sample`` (its first) with other values, and their
        values.

        One JSON parse per message: DuckDB reads the value of every leaf the sample has (a
        string's text without its quotes, any other value's JSON text), and a message conforms
        when its body is the sample's skeleton with those texts in their places (the same keys
        in the same order, none twice, in the log's compact form: msgspec's, which DuckDB writes
        alike for the usual values; any other message goes to Python), and each text is a whole
        token of the sample's kind: a string's has no quote (the body has no escape, and no string
        leaf's text holds one: with the body equal to the skeleton filled in, the same as no more
        quotes in the body than in the skeleton, without a pass over the whole body) and the
        skeleton holds its quotes, a number's is the JSON number it was read from. So the body
        parses as the skeleton does, with those values."""
        kinds: list[type] = []
        seen: list[Any] = []
        pieces = [""]
        if not _skeleton(sample, (), pieces, group.leaves, kinds, seen):
            return None  # an array's column holds JSON text, which Python writes (msgspec's form)
        leaves = group.leaves
        if not leaves:
            return None
        parts = [_literal(pieces[0])]
        for i, piece in enumerate(pieces[1:], 1):
            parts += [f"v[{i}]", _literal(piece)]
        # Every value found (concat skips a NULL); no escape, so a string's value is its text;
        # no quote in any string's value (below), so each string's is its whole token (the other
        # kinds' checks admit no quote); the body the skeleton's.
        checks = [
            f"list_count(v) = {len(leaves)}",
            "NOT contains(body, '\\')",
            "NOT contains(body, chr(0))",
            f"concat({', '.join(parts)}) = body",
        ]
        selects = ["pos"]
        identify = sample.get("type") == "identify"
        for i, (kind, value) in enumerate(zip(kinds, seen, strict=True), 1):
            raw = f"v[{i}]"
            if kind is str:
                if identify and leaves[i - 1] == "/userId":
                    checks.append(f"{raw} <> ''")  # an identify call with no userId makes no users row
                    checks.extend(check.format(raw) for check in self._key_checks)
                if _STRICT_TS_RE.fullmatch(value):
                    # A timestamp, as the sample's: read as one only (a text column of
                    # timestamps is rare enough for Python to map).
                    selects.append(f"TRY_CAST({raw} AS TIMESTAMPTZ) AS t{i}")
                    checks.append(f"regexp_full_match({raw}, '{_STRICT_TS}') AND t{i} IS NOT NULL")
                else:
                    selects.append(f"{raw} AS s{i}")
                    checks.append(f"NOT contains({raw}, '\"')")
                    checks.extend(check.format(f"s{i}") for check in self._text_checks)
            elif kind is int:
                # The integer's own text (msgspec reads 1.0 as a float; TRY_CAST takes "+1").
                selects.append(f"TRY_CAST({raw} AS BIGINT) AS n{i}")
                checks.append(f"CAST(n{i} AS VARCHAR) = {raw}")
            elif kind is float:
                selects.append(f"TRY_CAST({raw} AS DOUBLE) AS f{i}")
                # Finite: msgspec reads no number past a double's range (1e400), DuckDB's is inf.
                checks.append(f"isfinite(f{i}) AND regexp_full_match({raw}, '{_JSON_FLOAT}')")
            else:  # a boolean (a null is in the skeleton)
                selects.append(f"{raw} = 'true' AS b{i}")
                checks.append(f"{raw} IN ('true', 'false')")
        # No ORDER BY: DuckDB keeps the scan's order (preserve_insertion_order), and only the
        # sample's place matters, which is checked.
        rows = con.sql(
            f"SELECT * EXCLUDE (body, v) FROM (SELECT {', '.join(selects)}, body, v FROM "
            f"(SELECT pos, body, json_extract_string(body, $leaves) AS v FROM _gw_stage WHERE grp = {group.sample})) "
            f"WHERE COALESCE({' AND '.join(checks)}, false)",
            params={"leaves": leaves},
        ).to_arrow_table()
        positions = rows.column("pos").to_pylist()
        if not positions or positions[0] != group.sample:
            return None
        group.conforming = set(positions)
        group.values = rows.slice(1)  # the sample is the first
        return group


def _skeleton(
    obj: dict[str, Any],
    keys: tuple[str, ...],
    pieces: list[str],
    leaves: list[str],
    kinds: list[type],
    values: list[Any],
) -> bool:
    """The compact JSON text of ``obj`` with a hole for every value that is not an object or
    null (a string's quotes stay around its hole): the text between holes into ``pieces`` (one
    more than holes), each hole's JSON pointer into ``leaves``, its value's Python type into
    ``kinds`` and the value into ``values``. False if ``obj`` holds an array."""
    pieces[-1] += "{"
    for n, (key, value) in enumerate(obj.items()):
        pieces[-1] += ("," if n else "") + _encode(key).decode() + ":"
        kind = type(value)
        if kind is dict:
            if not _skeleton(value, (*keys, key), pieces, leaves, kinds, values):
                return False
        elif value is None:
            pieces[-1] += "null"
        elif kind is list:
            return False
        else:
            leaves.append(pointer((*keys, key)))
            kinds.append(kind)
            values.append(value)
            if kind is str:
                pieces[-1] += '"'
                pieces.append('"')
            else:
                pieces.append("")
    pieces[-1] += "}"
    return True


def _literal(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
