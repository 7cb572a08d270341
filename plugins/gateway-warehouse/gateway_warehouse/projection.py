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
from collections import Counter
from collections.abc import Sequence
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
        """The group's messages written as ``sample`` (its first) with other values, and their
        values.

        One JSON parse per message: DuckDB reads the text of every value the sample has, and
        a message conforms when its body is the sample's with those texts in their places
        (the same keys in the same order, none twice, in the log's compact form: msgspec's,
        which DuckDB writes alike for the usual values; any other message goes to Python),
        and each text is of the sample's kind."""
        kinds: list[type] = []
        seen: list[Any] = []
        pieces = [""]
        _skeleton(sample, (), pieces, group.leaves, kinds, seen)
        leaves = group.leaves
        if not leaves:
            return None
        parts = [_literal(pieces[0])]
        for i, piece in enumerate(pieces[1:], 1):
            parts += [f"v[{i}]", _literal(piece)]
        # Every value found (concat skips a NULL), the body the sample's with these texts, and
        # no escape in it: a string's value is then its text without the quotes.
        checks = [f"list_count(v) = {len(leaves)}", f"concat({', '.join(parts)}) = body", "NOT contains(body, '\\')"]
        selects = ["pos"]
        for i, (kind, value) in enumerate(zip(kinds, seen, strict=True), 1):
            raw = f"v[{i}]"
            if kind is str:
                checks.append(f"starts_with({raw}, '\"')")
                inner = f"substr({raw}, 2, length({raw}) - 2)"
                if _STRICT_TS_RE.fullmatch(value):
                    # A timestamp, as the sample's: read as one only (a text column of
                    # timestamps is rare enough for Python to map). No escapes in that form.
                    selects.append(f"TRY_CAST({inner} AS TIMESTAMPTZ) AS t{i}")
                    checks.append(f"regexp_full_match({inner}, '{_STRICT_TS}') AND t{i} IS NOT NULL")
                else:
                    selects.append(f"{inner} AS s{i}")
                    checks.extend(check.format(f"s{i}") for check in self._text_checks)
            elif kind is int:
                # An integer's text has no '.' or exponent (msgspec reads 1.0 as a float).
                selects.append(f"TRY_CAST({raw} AS BIGINT) AS n{i}")
                checks.append(f"n{i} IS NOT NULL AND NOT regexp_matches({raw}, '[.eE]')")
            elif kind is float:
                selects.append(f"TRY_CAST({raw} AS DOUBLE) AS f{i}")
                checks.append(f"f{i} IS NOT NULL AND regexp_matches({raw}, '[.eE]')")
            elif kind is bool:
                selects.append(f"{raw} = 'true' AS b{i}")
                checks.append(f"{raw} IN ('true', 'false')")
            elif kind is type(None):
                checks.append(f"{raw} = 'null'")
            else:  # an array: its column holds JSON text, which Python writes (msgspec's form)
                checks.append(f"starts_with({raw}, '[')")
        rows = self._con.sql(
            f"SELECT * EXCLUDE (body, v) FROM (SELECT {', '.join(selects)}, body, v FROM "
            f"(SELECT pos, body, json_extract(body, $leaves)::VARCHAR[] AS v FROM _gw_stage WHERE grp = {k})) "
            f"WHERE COALESCE({' AND '.join(checks)}, false) ORDER BY pos",
            params={"leaves": leaves},
        ).to_arrow_table()
        positions = rows.column("pos").to_pylist()
        group.conforming = set(positions)
        if group.sample not in group.conforming:
            return None
        group.values = rows.slice(1)  # the sample is the first
        return group


def _skeleton(
    obj: dict[str, Any],
    keys: tuple[str, ...],
    pieces: list[str],
    leaves: list[str],
    kinds: list[type],
    values: list[Any],
) -> None:
    """The compact JSON text of ``obj`` with a hole for every value that is not an object:
    the text between holes into ``pieces`` (one more than holes), each hole's JSON pointer
    into ``leaves``, its value's Python type into ``kinds`` and the value into ``values``."""
    pieces[-1] += "{"
    for n, (key, value) in enumerate(obj.items()):
        pieces[-1] += ("," if n else "") + _encode(key).decode() + ":"
        path = (*keys, key)
        if type(value) is dict:
            _skeleton(value, path, pieces, leaves, kinds, values)
        else:
            leaves.append(pointer(path))
            kinds.append(type(value))
            values.append(value)
            pieces.append("")
    pieces[-1] += "}"


def _literal(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
