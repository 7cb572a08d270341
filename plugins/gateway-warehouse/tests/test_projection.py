"""Rows projected by DuckDB from the messages' JSON are the rows the Python mapping makes: the
same tables, columns, values, discards and counts, whatever the shapes and values of a batch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from gateway_warehouse import ColumnType, Dialect, Load, Mapper, Schema
from gateway_warehouse import projection as projection_module
from gateway_warehouse.arrow import arrow_table
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

DUCKDB_LIKE = Dialect("duckdb-like", reserved_words=frozenset({"order"}))
POSTGRES_LIKE = Dialect("pg-like", reserved_words=frozenset({"order"}), text_allows_nul=False, max_string_bytes=12)
NOW = datetime(2026, 6, 1, tzinfo=UTC)

values = st.one_of(
    st.sampled_from(
        [
            "x",
            "",
            "a\x00b",
            'é😀"\\/',
            "a long text value",
            "2026-01-02",
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05.123456+05:30",
            "2026-02-30T03:04:05Z",
            "2026-01-02T23:59:60Z",
            "0001-01-01T00:00:00+01:00",
            "2026-01-02 03:04:05",
            # Strings whose text is another kind's JSON (DuckDB reads a string's value without
            # its quotes): each must stay a string.
            "12",
            "+5",
            "-0",
            "1.5",
            "1e5",
            "true",
            "null",
            "{}",
        ]
    ),
    st.sampled_from([0, 1, -7, 2**63 - 1, 2**63, -(2**63), 2**64 + 5, 10**30]),
    st.sampled_from([1.5, 2.0, -0.0, 1e300, 0.1, 1e-7]),
    st.booleans(),
    st.none(),
    st.sampled_from([[1], ["a"], [], {}]),
    st.sampled_from([{"x": 1, "y": {"z": "2026-01-02T03:04:05Z"}}, {"x": 1.5, "a": None}, {"A": "x", "a": "y"}]),
)
keys = st.sampled_from(["a", "b", "Order", "a/b", "t~1", "", "c d", "é", "A", "a\x1fb", "a.b"])
received = st.sampled_from(["2026-05-01T10:00:00.000Z", "2026-05-01T09:00:00+02:00", "not a time", "2026-05-01"])


@st.composite
def batches(draw: Any) -> list[dict[str, Any]]:
    """A few shapes, each repeated, with values that change kind now and then."""
    shapes = draw(st.lists(st.dictionaries(keys, values, max_size=4), min_size=1, max_size=3))
    messages = []
    for i in range(draw(st.integers(4, 24))):
        shape = shapes[i % len(shapes)]
        properties = {key: (draw(values) if draw(st.integers(0, 5)) == 0 else value) for key, value in shape.items()}
        kind = draw(st.sampled_from(["track", "track", "page", "identify"]))
        message: dict[str, Any] = {
            "type": kind,
            "messageId": draw(st.sampled_from([f"m{i}", f"m{i}", f"m{i}", "m1", i])),
            "userId": draw(st.sampled_from(["u1", "u1", "u1", "u2", "", 7])),
            "receivedAt": draw(received) if i % 5 == 4 else "2026-05-01T10:00:00.000Z",
            "context": {"ip": "1.2.3.4", "page": {"n": i % 2}},
            "timestamp": draw(received) if i % 7 == 6 else "2026-05-01T09:59:59.5+01:00",
            "properties" if kind != "identify" else "traits": properties,
        }
        if kind == "track":
            message["event"] = draw(st.sampled_from(["Order Completed", "Viewed"]))
        messages.append(message)
    return messages


def rows(load: Load) -> dict[tuple[str, str], list[dict[str, Any]]]:
    found = {}
    for schema in load.schemas:
        for name, table in schema.tables.items():
            data = arrow_table(table).to_pylist()
            found[(schema.schema, name)] = sorted(data, key=lambda row: str(row.get(table.key)))
    return found


def same(messages: list[dict[str, Any]] | list[bytes], dialect: Dialect, existing: Schema | None = None) -> Load:
    batch = [(i, "web", m if type(m) is bytes else msgspec.json.encode(m)) for i, m in enumerate(messages, 1)]
    schemas = {"web": existing} if existing is not None else {}
    with capture_logs() as logs:
        projected = Mapper(dialect, project=True).map(batch, schemas, now=NOW)
    assert not [line for line in logs if line["event"] == "warehouse_projection_failed"]
    plain = Mapper(dialect).map(batch, schemas, now=NOW)
    assert rows(projected) == rows(plain)
    assert projected.counts == plain.counts
    assert projected.newest_received_at == plain.newest_received_at
    assert projected.rows == plain.rows
    for got, want in zip(projected.schemas, plain.schemas, strict=True):
        for name, table in want.tables.items():
            assert got.tables[name].columns == table.columns, name
            assert got.tables[name].added == table.added, name
            assert got.tables[name].all_columns == table.all_columns, name
    return projected


@pytest.fixture(autouse=True)
def small_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(projection_module, "MIN_GROUP", 2)


@settings(max_examples=150, deadline=None)
@given(batches(), st.sampled_from([DUCKDB_LIKE, POSTGRES_LIKE]))
def test_a_projected_batch_loads_as_the_python_mapping_does(messages: list[dict[str, Any]], dialect: Dialect) -> None:
    same(messages, dialect)


@settings(max_examples=50, deadline=None)
@given(batches())
def test_the_warehouse_types_decide_for_projected_rows_too(messages: list[dict[str, Any]]) -> None:
    existing: Schema = {
        "order_completed": {"a": ColumnType.INTEGER, "b": ColumnType.TIMESTAMP, "order": ColumnType.BOOLEAN},
        "viewed": {"a": ColumnType.STRING, "b": ColumnType.FLOAT},
    }
    same(messages, DUCKDB_LIKE, existing)


def test_most_rows_of_a_common_shape_are_projected() -> None:
    messages = [
        {
            "type": "track",
            "messageId": f"m{i}",
            "event": "Viewed",
            "receivedAt": "2026-05-01T10:00:00.000Z",
            "properties": {"price": 1.5 + i, "quantity": i, "on_sale": True, "name": "x"},
        }
        for i in range(50)
    ]
    load = same(messages, DUCKDB_LIKE)
    [schema] = load.schemas
    assert [part.num_rows for part in schema.tables["viewed"].projected] == [49]  # all but the first
    assert len(schema.tables["viewed"].rows) == 1


def test_a_key_written_twice_is_read_as_msgspec_reads_it() -> None:
    # msgspec keeps the last of a key written twice, a JSON pointer finds the first: a Python
    # dict with both 1 and "1" as keys encodes so (a filter plugin's), or any body not written
    # by msgspec. Such messages are mapped in Python.
    body = '{"type":"track","messageId":"m%d","event":"Viewed","properties":{"a":%d,"a":%d}}'
    load = same([(body % (i, i, 100 + i)).encode() for i in range(40)], DUCKDB_LIKE)
    [schema] = load.schemas
    assert sorted(row["a"] for row in schema.tables["viewed"].rows.values()) == list(range(100, 140))


def test_identify_calls_are_projected_and_their_users_rows_merged_in_log_order() -> None:
    # Three users, receivedAt going back and forth, every fifth call with one more trait (mapped
    # in Python, between projected ones): each users row is the Python mapping's fold.
    times = ["2026-05-01T10:00:03.000Z", "2026-05-01T10:00:01.000Z", "2026-05-01T10:00:02.000Z"]
    messages = []
    for i in range(60):
        traits: dict[str, Any] = {"plan": f"p{i}", "logins": i, "company": {"name": f"c{i % 4}"}}
        if i % 5 == 4:
            traits["vip"] = True
        messages.append(
            {
                "type": "identify",
                "messageId": f"m{i}",
                "userId": f"u{i % 3}",
                "receivedAt": times[i % 7 % 3],
                "traits": traits,
            }
        )
    load = same(messages, POSTGRES_LIKE)
    [schema] = load.schemas
    assert sum(part.num_rows for part in schema.tables["identifies"].projected) > 40
    assert len(schema.tables["users"].rows) == 3


def _viewed(i: int, properties: str) -> bytes:
    return (
        f'{{"type":"track","messageId":"m{i}","event":"Viewed","receivedAt":"2026-05-01T10:00:00.000Z",'
        f'"properties":{properties}}}'
    ).encode()


@pytest.mark.parametrize(
    "first",
    [_viewed(0, '{"a":0}')[:-1] + b",}", _viewed(0, '{"a":0,"x":NaN}'), _viewed(0, '{"a":0,"x":1e400}')],
    ids=["trailing-comma", "nan", "out-of-range"],
)
def test_a_group_whose_sample_only_duckdb_reads_is_mapped_in_python(first: bytes) -> None:
    # DuckDB's JSON reader takes trailing commas, NaN and numbers past a double; msgspec does
    # not. A group's sample like that is counted undecodable and its group mapped in Python
    # (a DecodeError escaping the mapper would fail the batch, retried forever).
    rest = [_viewed(i, f'{{"a":{i},"x":1.5}}') for i in range(1, projection_module.MIN_GROUP + 8)]
    batch = [(i, "web", body) for i, body in enumerate([first, *rest], 1)]
    plain = Mapper(DUCKDB_LIKE).map(batch, {})
    projected = Mapper(DUCKDB_LIKE, project=True).map(batch, {})
    assert plain.counts["undecodable"] == projected.counts["undecodable"] == 1
    assert projected.rows == plain.rows


def test_a_number_msgspec_cannot_read_is_counted_as_python_counts_it() -> None:
    # 1e400 is past a double's range: msgspec refuses the body (undecodable), DuckDB reads inf.
    body = '{"type":"track","messageId":"m%d","event":"Viewed","properties":{"price":%s}}'
    load = same([(body % (i, "1e400" if i == 7 else f"{i}.5")).encode() for i in range(40)], DUCKDB_LIKE)
    assert load.counts["undecodable"] == 1
