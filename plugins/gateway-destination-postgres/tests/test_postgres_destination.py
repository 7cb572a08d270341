"""The PostgreSQL warehouse end to end: a real gateway, the official Python client, a real
PostgreSQL server started by the tests; rows compared column by column; exactly once."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import trio
import trio.testing
from gateway_destination_postgres.testing import TemporaryPostgres
from gateway_warehouse.testing import WRITE_KEY, assert_loaded, bought, mapped_event, send_calls
from structlog.testing import capture_logs

from gateway import DeliveryError, DestinationContext, Record
from gateway.testing import run_gateway

TOKEN = "an-admin-token-of-enough-length"


def config(dsn_line: str, extra: str = "") -> str:
    return f"""
[admin]
token = "{TOKEN}"

[sources.web]
write_key = "{WRITE_KEY}"

[destinations.wh]
type = "postgres"
{dsn_line}
sync_interval_secs = 3600
retry_initial_secs = 0.05
retry_max_secs = 0.1
{extra}
"""


def read_tables(dsn: str, schema: str) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(dsn) as conn:
        tables = [
            t
            for (t,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]
            )
        ]
        out = {}
        for table in tables:
            cur = conn.execute(f'SELECT * FROM "{schema}"."{table}"')
            names = [d.name for d in cur.description or []]
            out[table] = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        return out


async def test_every_call_type_is_loaded_column_by_column(
    postgres: TemporaryPostgres, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("WAREHOUSE_DSN", postgres.dsn)
    async with run_gateway(config('dsn = { env = "WAREHOUSE_DSN" }', 'schema = "calls"'), data_dir=tmp_path) as gw:
        await trio.to_thread.run_sync(send_calls, gw.url, WRITE_KEY)
        answer = (await gw.admin("POST", "/destinations/wh/flush?wait_secs=60")).json()
        assert answer["done"], answer
        assert "***" in json.dumps((await gw.admin("GET", "/config")).json()["destinations"]["wh"])
        described = (await gw.admin("GET", "/destinations/wh")).json()["details"]
        assert described["schemas"]["calls"]["order_completed"]["total"] == "float"
    assert_loaded(read_tables(postgres.dsn, "calls"))


async def test_a_batch_loaded_twice_leaves_one_row_per_message(postgres: TemporaryPostgres, tmp_path: Path) -> None:
    from gateway_destination_postgres import PostgresConfig, _build

    destination = _build(PostgresConfig(dsn=postgres.dsn, schema="twice"), DestinationContext("wh", tmp_path))
    body = {"type": "track", "event": "Clicked", "userId": "u", "receivedAt": "2026-01-01T00:00:00Z"}
    ident = {"type": "identify", "userId": "u", "receivedAt": "2026-01-01T00:00:01Z", "traits": {"a": 1}}
    batch = [
        Record(seq=i, source="web", body=json.dumps({**body, "messageId": f"m{i}"}).encode()) for i in range(1, 81)
    ] + [Record(seq=81, source="web", body=json.dumps({**ident, "messageId": "i1"}).encode())]
    async with destination:
        await destination.send(batch[:40])  # most rows projected by DuckDB (see projection.py)
        await destination.send(batch)
        await destination.send(batch[30:])
    tables = read_tables(postgres.dsn, "twice")
    ids = sorted(f"m{i}" for i in range(1, 81))
    assert sorted(r["id"] for r in tables["clicked"]) == ids
    assert sorted(r["id"] for r in tables["tracks"]) == ids
    assert [(r["id"], r["a"]) for r in tables["users"]] == [("u", 1)]
    # The first load went straight in (above the watermark); the two others, at or below it,
    # replaced their rows by id. The watermark is the highest position loaded.
    assert tables["_gateway_loads"] == [{"destination": "wh", "last_seq": 81}]


async def test_schema_evolution_type_conflicts_nul_and_deletion(postgres: TemporaryPostgres, tmp_path: Path) -> None:
    from gateway_destination_postgres import PostgresConfig, _build

    destination = _build(PostgresConfig(dsn=postgres.dsn, schema="evolve"), DestinationContext("wh", tmp_path))

    def record(seq: int, user: str, properties: dict[str, Any]) -> Record:
        body = {
            "type": "track",
            "event": "Bought",
            "userId": user,
            "messageId": f"m{seq}",
            "receivedAt": "2026-01-01T00:00:00Z",
            "properties": properties,
        }
        return Record(seq=seq, source="web", body=json.dumps(body).encode())

    async with destination:
        await destination.send([record(1, "a", {"price": 10, "user": "x"})])
        await destination.send([record(2, "b", {"price": "NA", "coupon": "C1", "note": "nul\x00here"})])
        await destination.send([record(3, "a", {"price": 11.0, "when": "2026-02-03T04:05:06+01:00"})])
        described = await destination.describe()
        assert await destination.delete_user("a") == 4  # two event rows, two tracks rows
        status = destination.status()
    columns = described["schemas"]["evolve"]["bought"]
    assert (columns["price"], columns["_user"], columns["coupon"], columns["_when"]) == (
        "integer",
        "string",
        "string",
        "timestamp",
    )
    assert "note" not in columns  # its only value went to discards
    tables = read_tables(postgres.dsn, "evolve")
    assert [(r["id"], r["price"], r["coupon"]) for r in tables["bought"]] == [("m2", None, "C1")]
    discarded = sorted((r["row_id"], r["column_name"], r["value"], r["reason"]) for r in tables["discards"])
    assert discarded == [("m2", "note", '"nul\\u0000here"', "nul_character"), ("m2", "price", "NA", "type_mismatch")]
    assert (status["loads"], status["messages_loaded"], status["discards"]) == (3, 3, 2)
    with psycopg.connect(postgres.dsn) as conn:
        [(owner_is_super,)] = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert owner_is_super is False


async def test_timestamps_are_the_same_instants_whatever_the_sessions_time_zone(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """The rows' timestamps go to COPY as UTC without a zone: a session in another zone (the
    role's or the database's default) must not shift them."""
    from gateway_destination_postgres import PostgresConfig, _build

    far_from_utc = postgres.dsn + "?options=-c%20TimeZone%3DPacific/Kiritimati"  # UTC+14
    destination = _build(PostgresConfig(dsn=far_from_utc, schema="zones"), DestinationContext("wh", tmp_path))
    body = {
        "type": "track",
        "event": "Clicked",
        "userId": "u",
        "messageId": "m1",
        "receivedAt": "2026-01-01T00:00:00.250Z",
        "timestamp": "2025-12-31T19:00:00-05:00",
        "properties": {"due": "2026-02-03T04:05:06+01:00"},
    }
    ident = {"type": "identify", "userId": "u", "messageId": "i1", "receivedAt": "2026-01-01T00:00:01Z"}
    async with destination:
        await destination.send(
            [Record(seq=i, source="web", body=json.dumps(m).encode()) for i, m in enumerate([body, ident])]
        )
    [row] = read_tables(postgres.dsn, "zones")["clicked"]
    assert row["received_at"] == datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)
    assert row["timestamp"] == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert row["due"] == datetime(2026, 2, 3, 3, 5, 6, tzinfo=UTC)
    [user] = read_tables(postgres.dsn, "zones")["users"]
    assert user["received_at"] == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)


async def test_columns_an_operator_retyped_are_still_loaded(postgres: TemporaryPostgres, tmp_path: Path) -> None:
    """Rows go in binary only into columns of the types the destination creates: a column
    changed to ``integer`` or ``numeric`` is loaded as CSV, which the server casts."""
    from gateway_destination_postgres import PostgresConfig, _build

    destination = _build(PostgresConfig(dsn=postgres.dsn, schema="retyped"), DestinationContext("wh", tmp_path))

    async with destination:
        await destination.send([bought(1, {"price": 1.5, "quantity": 2})])
        with psycopg.connect(postgres.dsn) as conn:
            conn.execute("ALTER TABLE retyped.bought ALTER COLUMN price TYPE numeric(10, 2)")
            conn.execute("ALTER TABLE retyped.bought ALTER COLUMN quantity TYPE integer")
        await destination.send([bought(2, {"price": 2.25, "quantity": 3}), bought(3, {"price": 4.0, "quantity": 5})])
    rows = sorted((r["id"], float(r["price"]), r["quantity"]) for r in read_tables(postgres.dsn, "retyped")["bought"])
    assert rows == [("m1", 1.5, 2), ("m2", 2.25, 3), ("m3", 4.0, 5)]


async def test_a_batch_mapped_against_a_schema_that_changed_is_mapped_again(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """The next batch is mapped against the schema the last load left, without reading it; the
    write finds that an operator dropped a column since, and maps the batch again."""
    from gateway_destination_postgres import PostgresConfig, _build

    destination = _build(PostgresConfig(dsn=postgres.dsn, schema="dropped"), DestinationContext("wh", tmp_path))
    async with destination:
        await destination.send([bought(1, {"price": 1.5, "coupon": "A"})])
        with psycopg.connect(postgres.dsn) as conn:
            conn.execute("ALTER TABLE dropped.bought DROP COLUMN coupon")
        with capture_logs() as logs:
            await destination.send([bought(2, {"price": 2.5, "coupon": "B"})])
    assert [entry["event"] for entry in logs].count("warehouse_schema_changed") == 1
    rows = sorted((r["id"], r["price"], r["coupon"]) for r in read_tables(postgres.dsn, "dropped")["bought"])
    assert rows == [("m1", 1.5, None), ("m2", 2.5, "B")]


async def test_a_batch_mapped_while_the_one_before_failed_is_mapped_again(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """Batch B is mapped while batch A is written, against the schema A would leave (a new
    column); A fails, so B's write finds the column missing and B is mapped again: B's rows
    are loaded as if A had never been tried, and A loads nothing."""
    from gateway_destination_postgres import PostgresConfig, PostgresLoader
    from gateway_warehouse import Load, Schema, WarehouseDestination

    class HoldsBatchA(PostgresLoader):
        def write_unless_changed(self, load: Load, schemas: Mapping[str, Schema | None]) -> bool:
            if load.first_seq == 2:  # batch A waits until batch B is mapped
                assert b_mapped.wait(timeout=60)
            return super().write_unless_changed(load, schemas)

    config = PostgresConfig(dsn=postgres.dsn, schema="failed")
    destination = WarehouseDestination(
        config, DestinationContext("wh", tmp_path), lambda: HoldsBatchA(postgres.dsn), engine="postgres"
    )
    async with destination:
        await destination.send([bought(1, {"quantity": 1})])
        with psycopg.connect(postgres.dsn) as conn:
            conn.execute("ALTER TABLE failed.bought ADD CHECK (quantity < 100)")
        b_mapped = mapped_event(destination, first_seq=3)
        failures: list[DeliveryError] = []

        async def send_a() -> None:
            try:
                await destination.send([bought(2, {"quantity": 500, "coupon": "A"})])  # breaks the CHECK
            except DeliveryError as error:
                failures.append(error)

        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_a)
                await trio.testing.wait_all_tasks_blocked()  # A is mapped, then held in its write
                nursery.start_soon(destination.send, [bought(3, {"quantity": 2, "coupon": "B"})])
    assert len(failures) == 1 and "check constraint" in str(failures[0])
    assert [entry["event"] for entry in logs].count("warehouse_schema_changed") == 1
    rows = sorted((r["id"], r["quantity"], r["coupon"]) for r in read_tables(postgres.dsn, "failed")["bought"])
    assert rows == [("m1", 1, None), ("m3", 2, "B")]


async def test_an_id_loaded_before_at_a_later_position_replaces_its_row(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """A batch above the watermark goes straight in; a message id loaded before that comes back
    at a later position (sent again after the dedup window) trips the primary key, and the
    batch is loaded again replacing rows by id: one row, the later one."""
    from gateway_destination_postgres import PostgresConfig, _build

    destination = _build(PostgresConfig(dsn=postgres.dsn, schema="again"), DestinationContext("wh", tmp_path))
    async with destination:
        await destination.send([bought(1, {"price": 1.0}), bought(2, {"price": 2.0})])
        with capture_logs() as logs:
            sent_again = msgspec.structs.replace(bought(1, {"price": 1.5}), seq=4)
            await destination.send([bought(3, {"price": 3.0}), sent_again])
    assert [entry["event"] for entry in logs].count("warehouse_ids_already_loaded") == 1
    tables = read_tables(postgres.dsn, "again")
    assert sorted((r["id"], r["price"]) for r in tables["bought"]) == [("m1", 1.5), ("m2", 2.0), ("m3", 3.0)]
    assert sorted(r["id"] for r in tables["tracks"]) == ["m1", "m2", "m3"]
    assert tables["_gateway_loads"] == [{"destination": "wh", "last_seq": 4}]


async def test_a_partial_unique_index_on_id_is_not_taken_for_the_key(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """The watermark's straight COPY trusts a unique key on ``id`` to refuse an id loaded
    before. An operator's partial unique index (its primary key dropped) refuses only some ids:
    the batch must take the delete by id, and a message sent again still leaves one row."""
    from gateway_destination_postgres import PostgresConfig, _build

    destination = _build(PostgresConfig(dsn=postgres.dsn, schema="partial"), DestinationContext("wh", tmp_path))
    async with destination:
        await destination.send([bought(1, {"price": 1.0}), bought(2, {"price": 2.0})])
        with psycopg.connect(postgres.dsn) as conn:
            for table in ("bought", "tracks"):
                conn.execute(f"ALTER TABLE partial.{table} DROP CONSTRAINT {table}__pkey")  # the gateway's index name
                conn.execute(f"CREATE UNIQUE INDEX ON partial.{table} (id) WHERE received_at >= '2026-06-01'")
        sent_again = msgspec.structs.replace(bought(1, {"price": 1.5}), seq=4)
        await destination.send([bought(3, {"price": 3.0}), sent_again])
    tables = read_tables(postgres.dsn, "partial")
    assert sorted((r["id"], r["price"]) for r in tables["bought"]) == [("m1", 1.5), ("m2", 2.0), ("m3", 3.0)]
    assert sorted(r["id"] for r in tables["tracks"]) == ["m1", "m2", "m3"]


async def test_rows_a_constraint_of_the_operator_refuses_are_permanent(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """A NOT NULL or CHECK an operator added refuses the batch on every attempt, as a value
    that does not cast does: a permanent error (the batch goes to the dead letters, where a
    replay finds it once the constraint is fixed), not a retry that blocks the destination."""
    from gateway_destination_postgres import PostgresConfig, _build

    destination = _build(PostgresConfig(dsn=postgres.dsn, schema="constrained"), DestinationContext("wh", tmp_path))
    async with destination:
        await destination.send([bought(1, {"price": 1.0, "coupon": "A"})])
        for constraint, batch in [
            ("ALTER COLUMN coupon SET NOT NULL", [bought(2, {"price": 2.0})]),
            ("ADD CHECK (price > 0)", [bought(3, {"price": -1.0, "coupon": "B"})]),
        ]:
            with psycopg.connect(postgres.dsn) as conn:
                conn.execute(f"ALTER TABLE constrained.bought {constraint}")
            try:
                await destination.send(batch)
                raise AssertionError(f"loaded against {constraint}")
            except DeliveryError as error:
                assert not error.retryable, error
    assert [r["id"] for r in read_tables(postgres.dsn, "constrained")["bought"]] == ["m1"]


async def test_a_role_without_create_on_the_schema_loads_without_the_watermark(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """A role that owns its tables but may not create new ones in the schema (a least-privilege
    setup that worked before the watermark table existed) keeps loading: the batches take the
    delete by id, and a message sent again still leaves one row."""
    from gateway_destination_postgres import PostgresConfig, _build
    from gateway_destination_postgres.testing import DATABASE

    with postgres.admin() as admin:
        admin.execute("CREATE ROLE limited LOGIN PASSWORD 'limited-pw'")
        admin.execute("CREATE SCHEMA lim AUTHORIZATION postgres")
        admin.execute("GRANT USAGE, CREATE ON SCHEMA lim TO limited")
    dsn = f"postgresql://limited:limited-pw@127.0.0.1:{postgres.port}/{DATABASE}"
    destination = _build(PostgresConfig(dsn=dsn, schema="lim"), DestinationContext("wh", tmp_path))
    async with destination:
        await destination.send([bought(1, {"price": 1.0})])  # tables made while it may
    with postgres.admin() as admin:
        admin.execute("DROP TABLE lim._gateway_loads")  # as before the upgrade
        admin.execute("REVOKE CREATE ON SCHEMA lim FROM limited")
    destination = _build(PostgresConfig(dsn=dsn, schema="lim"), DestinationContext("wh", tmp_path))
    async with destination:
        await destination.send([bought(2, {"price": 2.0})])
        sent_again = msgspec.structs.replace(bought(1, {"price": 1.5}), seq=3)
        await destination.send([sent_again])
    tables = read_tables(dsn, "lim")
    assert sorted((r["id"], r["price"]) for r in tables["bought"]) == [("m1", 1.5), ("m2", 2.0)]


async def test_an_index_named_by_an_earlier_version_gives_its_name_to_an_event_table(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    from gateway_destination_postgres import PostgresConfig, _build

    with psycopg.connect(postgres.dsn, autocommit=True) as conn:  # tracks as earlier versions made it
        conn.execute('CREATE SCHEMA "olden"')
        conn.execute('CREATE TABLE "olden"."tracks" (id text, PRIMARY KEY (id))')  # its index: tracks_pkey
        conn.execute("""COMMENT ON TABLE "olden"."tracks" IS 'gateway warehouse'""")
    destination = _build(PostgresConfig(dsn=postgres.dsn, schema="olden"), DestinationContext("wh", tmp_path))
    body = {"type": "track", "event": "Tracks Pkey", "userId": "u", "messageId": "m1", "properties": {"a": 1}}
    async with destination:
        await destination.send([Record(seq=1, source="web", body=json.dumps(body).encode())])
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute('SELECT id FROM "olden"."tracks_pkey"').fetchall() == [("m1",)]
        assert conn.execute("SELECT to_regclass('olden.tracks__pkey')::text").fetchone() == ("olden.tracks__pkey",)


async def test_a_user_keyed_by_an_escaped_or_hashed_id_is_deleted(postgres: TemporaryPostgres, tmp_path: Path) -> None:
    from gateway_destination_postgres import PostgresConfig, _build
    from gateway_destination_postgres.testing import ROLE

    with postgres.admin("postgres") as admin:  # a database of its own: deletion visits every schema
        admin.execute(f"CREATE DATABASE oddids OWNER {ROLE}")
    dsn = postgres.dsn.rsplit("/", 1)[0] + "/oddids"
    destination = _build(PostgresConfig(dsn=dsn, schema="oddids"), DestinationContext("wh", tmp_path))
    users = ["nul\x00user", "u" * 3000]
    bodies = [
        {"type": "identify", "userId": user, "messageId": f"m{i}", "traits": {"plan": "pro"}}
        for i, user in enumerate(users)
    ]
    async with destination:
        await destination.send(
            [Record(seq=i + 1, source="web", body=json.dumps(b).encode()) for i, b in enumerate(bodies)]
        )
        with psycopg.connect(dsn) as conn:
            assert conn.execute('SELECT count(*) FROM "oddids"."users"').fetchone() == (2,)
        for user in users:
            assert await destination.delete_user(user) > 0
    with psycopg.connect(dsn) as conn:
        assert conn.execute('SELECT count(*) FROM "oddids"."users"').fetchone() == (0,)
        assert conn.execute('SELECT count(*) FROM "oddids"."discards" WHERE user_id IS NOT NULL').fetchone() == (0,)
