"""The mapping: tables and standard columns, flattening, first-value types, schema evolution,
and bad input (empty names, column explosion, type flip-flops, long strings) that loses nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
from gateway_warehouse import ColumnType, Dialect, Load, Mapper, Selection, convert, infer, snakecase, standard_columns
from hypothesis import given, settings
from hypothesis import strategies as st

DIALECT = Dialect("test", reserved_words=frozenset({"order"}))
RECEIVED = "2026-05-01T10:00:00.000Z"


def track(message_id: str, properties: dict[str, Any], event: str = "Order Completed", **extra: Any) -> dict:
    return {
        "type": "track",
        "messageId": message_id,
        "userId": "u1",
        "event": event,
        "receivedAt": RECEIVED,
        "properties": properties,
        **extra,
    }


def run(mapper: Mapper, messages: list[dict[str, Any]], schema: dict | None = None) -> Load:
    batch = [(i, "web", msgspec.json.encode(m)) for i, m in enumerate(messages, 1)]
    return mapper.map(batch, {"web": schema} if schema is not None else {})


def table(load: Load, name: str) -> dict[str, dict[str, Any]]:
    [schema] = load.schemas
    return schema.tables[name].rows if name in schema.tables else {}


def discards(load: Load) -> list[dict[str, Any]]:
    return list(table(load, "discards").values())


def test_a_track_makes_a_tracks_row_and_an_event_table_row() -> None:
    load = run(Mapper(DIALECT), [track("m1", {"total": 3, "order": "x", "id": 7, "context_ip": "p"})])
    [tracks] = table(load, "tracks").values()
    [row] = table(load, "order_completed").values()
    assert (tracks["event"], tracks["event_text"], tracks["id"]) == ("order_completed", "Order Completed", "m1")
    assert "total" not in tracks  # properties only in the event table
    # standard names and context_ get a leading underscore, reserved words too: nothing dropped
    assert (row["total"], row["_order"], row["_id"], row["_context_ip"]) == (3, "x", 7, "p")
    assert row["received_at"] == datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


def test_event_names_that_are_standard_tables_or_have_no_ascii_get_other_names() -> None:
    mapper = Mapper(DIALECT)
    assert mapper.event_table("Identifies") == "_identifies"
    assert mapper.event_table("101 Account Update") == "_101_account_update"
    unnamed = mapper.event_table("登録")
    assert unnamed.startswith("event_") and unnamed == mapper.event_table("登録") != mapper.event_table("購入")


def test_a_source_per_schema_unless_one_is_configured() -> None:
    assert Mapper(DIALECT).schema_name("iOS App") == "i_os_app"
    assert Mapper(DIALECT, schema="Analytics").schema_name("web") == "analytics"


# -- flattening, as a property: every leaf lands in its column or in discards -------------

keys = st.one_of(st.from_regex(r"[A-Za-z][A-Za-z0-9 _.-]{0,10}", fullmatch=True), st.sampled_from(["", "名前", "$"]))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["2026-01-02T03:04:05Z", "2026-01-02"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)


def leaves(obj: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for key, value in obj.items():
        if isinstance(value, dict):
            out += leaves(value, (*path, key))
        elif value is not None:
            out.append(((*path, key), value))
    return out


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, max_size=8))
def test_flattening_puts_every_leaf_in_its_column_or_in_discards(properties: dict[str, Any]) -> None:
    mapper = Mapper(DIALECT)
    load = run(mapper, [track("m1", properties)])
    [row] = table(load, "order_completed").values()
    standard = set(table(load, "tracks")["m1"])
    payload_columns = {k: v for k, v in row.items() if k not in standard}
    dropped = [d for d in discards(load) if d["table_name"] == "order_completed"]
    expected = leaves(properties)
    assert len(payload_columns) + len(dropped) == len(expected)  # nothing lost, nothing invented
    for path, value in expected:
        column = mapper.column_name("track", path)
        if column is None:  # a key without ASCII letters or digits
            assert any(d["reason"] == "no_column_name" and _is_text_of(d["value"], value) for d in dropped)
            continue
        assert column == DIALECT.identifier(_prefixed(snakecase("_".join(path))))
        if column in payload_columns and _same(
            payload_columns[column], value, load.schemas[0].tables["order_completed"].columns[column]
        ):
            continue
        assert any(d["column_name"] == column and _is_text_of(d["value"], value) for d in dropped), (column, value)


def _prefixed(name: str) -> str:
    reserved = {"id", "anonymous_id", "user_id", "received_at", "sent_at", "timestamp", "original_timestamp"}
    reserved |= {"uuid_ts", "event", "event_text"}
    return "_" + name if name in reserved or name.startswith("context_") else name


def _is_text_of(text: str, value: Any) -> bool:
    """Whether a discarded or stringified value is ``value``: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return text == value
    try:
        return bool(json.loads(text) == value)
    except ValueError:
        return False


def _same(stored: Any, value: Any, column: ColumnType) -> bool:
    if isinstance(value, list):
        return isinstance(stored, str) and _is_text_of(stored, value)
    converted = convert(value, column)
    return bool(stored == converted)


# -- types and evolution -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(scalars.filter(lambda v: v is not None), min_size=1, max_size=8))
def test_the_first_value_fixes_the_type_and_later_ones_fit_or_are_discarded(seen: list[Any]) -> None:
    load = run(Mapper(DIALECT), [track(f"m{i}", {"value": v}) for i, v in enumerate(seen)])
    column_type = load.schemas[0].tables["order_completed"].columns["value"]
    assert column_type == infer(seen[0])
    rows = table(load, "order_completed")
    dropped = {d["row_id"]: d for d in discards(load)}
    for i, value in enumerate(seen):
        converted = convert(value, column_type)
        row = rows[f"m{i}"]
        if "value" in row:
            assert row["value"] == converted
            if column_type is ColumnType.STRING:
                assert _is_text_of(row["value"], value)
        else:
            assert dropped[f"m{i}"]["reason"] == "type_mismatch"
            assert _is_text_of(dropped[f"m{i}"]["value"], value)


def test_a_type_flip_flop_across_loads_keeps_the_warehouse_type_and_discards_the_rest() -> None:
    mapper = Mapper(DIALECT)
    first = run(mapper, [track("m1", {"price": 10})])
    schema = {"order_completed": dict(first.schemas[0].tables["order_completed"].added)}  # as created
    later = run(
        mapper, [track("m2", {"price": "NA"}), track("m3", {"price": 12.0}), track("m4", {"price": 12.5})], schema
    )
    rows = table(later, "order_completed")
    assert "price" not in rows["m2"] and rows["m3"]["price"] == 12 and "price" not in rows["m4"]
    assert [(d["row_id"], d["value"], d["reason"]) for d in discards(later)] == [
        ("m2", "NA", "type_mismatch"),
        ("m4", "12.5", "type_mismatch"),
    ]
    assert later.counts["type_mismatch"] == 2
    assert later.schemas[0].tables["order_completed"].added == {}  # no new column, no new type


def test_a_new_property_adds_a_column_to_an_existing_table() -> None:
    mapper = Mapper(DIALECT)
    first = run(mapper, [track("m1", {"a": 1})])
    schema = {name: dict(t.added) for name, t in first.schemas[0].tables.items()}  # as created
    later = run(mapper, [track("m2", {"a": 2, "b": True})], schema)
    order = later.schemas[0].tables["order_completed"]
    assert not order.created and order.added == {"b": ColumnType.BOOLEAN}


def test_empty_and_non_ascii_property_names_go_to_discards() -> None:
    load = run(Mapper(DIALECT), [track("m1", {"": 1, "名前": "Ada", "ok": True})])
    assert table(load, "order_completed")["m1"]["ok"] is True
    assert sorted((d["column_name"], d["value"], d["reason"]) for d in discards(load)) == [
        ("properties.", "1", "no_column_name"),
        ("properties.名前", "Ada", "no_column_name"),
    ]


def test_ten_thousand_property_names_stop_at_the_column_limit_and_the_rest_is_discarded() -> None:
    mapper = Mapper(DIALECT, max_columns=200)
    properties = {f"p{i}": i for i in range(10_000)}
    load = run(mapper, [track("m1", properties)])
    event = load.schemas[0].tables["order_completed"]
    assert len(event.all_columns) == 200
    assert load.counts["column_limit"] == 10_000 - (200 - len(standard_columns("order_completed")))
    kept = {k for k in event.rows["m1"] if k.startswith("p")}
    dropped = {d["column_name"] for d in discards(load)}
    assert kept | dropped == set(properties) and not kept & dropped


def test_a_32kb_string_is_loaded_whole_unless_the_engine_caps_text() -> None:
    text = "x" * 32 * 1024
    assert table(run(Mapper(DIALECT), [track("m1", {"note": text})]), "order_completed")["m1"]["note"] == text
    capped = run(Mapper(Dialect("capped", max_string_bytes=512)), [track("m1", {"note": text})])
    assert "note" not in table(capped, "order_completed")["m1"]
    [dropped] = discards(capped)
    assert (dropped["reason"], dropped["value"]) == ("value_too_long", text)


def test_nul_characters_go_to_discards_escaped_where_text_cannot_hold_them() -> None:
    load = run(Mapper(Dialect("pg", text_allows_nul=False)), [track("m1", {"note": "a\x00b"})])
    [dropped] = discards(load)
    assert (dropped["reason"], json.loads(dropped["value"])) == ("nul_character", "a\x00b")


def test_two_keys_of_one_message_that_name_the_same_column() -> None:
    load = run(Mapper(DIALECT), [track("m1", {"userName": "a", "user_name": "b"})])
    assert table(load, "order_completed")["m1"]["user_name"] == "a"
    [dropped] = discards(load)
    assert (dropped["column_name"], dropped["value"], dropped["reason"]) == ("user_name", "b", "name_collision")


def test_users_keep_the_newest_non_null_trait_per_column() -> None:
    messages = [
        {
            "type": "identify",
            "messageId": "i1",
            "userId": "u",
            "receivedAt": "2026-01-01T00:00:02Z",
            "traits": {"plan": "pro", "email": "a@x"},
        },
        {
            "type": "identify",
            "messageId": "i2",
            "userId": "u",
            "receivedAt": "2026-01-01T00:00:01Z",
            "traits": {"plan": "free", "age": 30},
        },
    ]
    load = run(Mapper(DIALECT), messages)
    [user] = table(load, "users").values()
    assert (user["plan"], user["email"], user["age"]) == ("pro", "a@x", 30)  # i1 is newer though first
    assert user["received_at"] == datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)


def test_selective_sync_leaves_out_tables_and_columns() -> None:
    mapper = Mapper(
        DIALECT,
        collections=Selection(exclude=["pages"]),
        properties={"order_completed": Selection(include=["total"])},
    )
    page = {"type": "page", "messageId": "p1", "userId": "u", "receivedAt": RECEIVED, "properties": {"url": "x"}}
    load = run(mapper, [track("m1", {"total": 1, "coupon": "c"}), page])
    assert "pages" not in load.schemas[0].tables
    row = table(load, "order_completed")["m1"]
    assert row["total"] == 1 and "coupon" not in row and row["id"] == "m1"
    assert load.counts["excluded"] == 1 and not discards(load)


def test_timestamps_are_iso_dates_and_date_times_only() -> None:
    assert infer("2026-01-02T03:04:05.123456789+05:30") is ColumnType.TIMESTAMP
    assert infer("2026-01-02") is ColumnType.TIMESTAMP
    assert infer("2026-02-30") is ColumnType.STRING
    assert infer("05/25/2020") is ColumnType.STRING
    assert infer(2**63) is ColumnType.STRING  # beyond 64 bits: kept exactly, as text
    assert convert("2026-01-02T03:04:05+01:00", ColumnType.TIMESTAMP) == datetime(2026, 1, 2, 2, 4, 5, tzinfo=UTC)


# -- shape plans change nothing --------------------------------------------------------------

pool_keys = st.sampled_from(["a", "b", "B", "c_d", "c.d", "", "id", "order", "n"])
# Values by kind: messages of one batch share the kinds of their keys (so they share shapes and
# take plans), and each kind has the values a plan must not wave through.
by_kind = {
    "int": st.sampled_from([-3, 0, 7, 2**64, -(2**63) - 1]),
    "float": st.sampled_from([1.5, 2.0, -0.0]),
    "str": st.sampled_from(["x", "a\x00b", "2026-01-02", ""]),
    "bool": st.booleans(),
    "list": st.sampled_from([[1], ["a\x00"], []]),
}
shapes = st.dictionaries(pool_keys, st.sampled_from(sorted(by_kind)), max_size=4)


@settings(max_examples=150, deadline=None)
@given(
    shapes.flatmap(
        lambda shape: st.lists(
            st.fixed_dictionaries({key: by_kind[kind] for key, kind in shape.items()}), min_size=2, max_size=10
        )
    )
)
def test_messages_of_a_shape_seen_before_map_as_they_would_alone(batch: list[dict[str, Any]]) -> None:
    """Messages drawn from a small pool of keys and values repeat shapes, so most take the plan
    of an earlier one: the load must be the same as with every message mapped on its own."""
    messages = []
    for i, properties in enumerate(batch):
        if i % 3 == 2:
            messages.append(
                {"type": "identify", "messageId": f"m{i}", "userId": "u", "receivedAt": RECEIVED, "traits": properties}
            )
        else:
            messages.append(track(f"m{i}", properties, context={"ip": "1.2.3.4", "page": {"n": i % 2}}))
    dialect = Dialect("pg-like", reserved_words=frozenset({"order"}), text_allows_nul=False)
    encoded = [(i, "web", msgspec.json.encode(m)) for i, m in enumerate(messages, 1)]
    now = datetime(2026, 6, 1, tzinfo=UTC)
    planned = Mapper(dialect).map(encoded, {}, now=now)
    alone = Mapper(dialect, shape_plans=False).map(encoded, {}, now=now)
    for got, want in zip(planned.schemas, alone.schemas, strict=True):
        assert got.tables.keys() == want.tables.keys()
        for name, table in want.tables.items():
            assert got.tables[name].rows == table.rows, name
            assert got.tables[name].columns == table.columns, name
            assert got.tables[name].added == table.added, name
    assert planned.counts == alone.counts
