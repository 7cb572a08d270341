"""Adversarial review of the PostgreSQL warehouse (issue 14): defects found, each a failing test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import trio
from gateway_destination_postgres.testing import TemporaryPostgres
from gateway_warehouse.testing import WRITE_KEY, send_calls

from gateway.testing import run_gateway

from .test_postgres_destination import config as destination_config


def config(dsn: str) -> str:
    """A gateway loading schema ``review_nul`` of PostgreSQL at ``dsn``."""
    return destination_config(f'dsn = "{dsn}"', 'schema = "review_nul"')


def ids(dsn: str, table: str) -> list[Any]:
    with psycopg.connect(dsn) as conn:
        return sorted(r[0] for r in conn.execute(f'SELECT id FROM "review_nul"."{table}"'))


async def test_a_user_or_group_id_with_a_nul_character_loses_no_message(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """The gateway accepts a userId or groupId holding U+0000 (only messageId is checked).
    The mapper sends the NUL value of ``users.id`` / ``accounts.id`` (the key) to discards and
    stages the row with a NULL id: COPY refuses it (NOT NULL), the batch fails for good and the
    messages are dead-lettered, so even their ``identifies``/``groups`` rows never load. The
    issue: bad input is "counted, nothing lost, the load goes on"."""
    calls: list[tuple[str, dict[str, Any]]] = [
        ("identify", {"user_id": "nul\x00user", "traits": {"plan": "pro"}, "message_id": "n-1"}),
        ("group", {"user_id": "u6", "group_id": "nul\x00group", "traits": {"tier": "t"}, "message_id": "n-2"}),
        ("track", {"user_id": "u6", "event": "Clicked", "properties": {"ok": 1}, "message_id": "n-3"}),
    ]
    async with run_gateway(config(postgres.dsn), data_dir=tmp_path) as gw:
        await trio.to_thread.run_sync(lambda: send_calls(gw.url, WRITE_KEY, calls))
        answer = (await gw.admin("POST", "/destinations/wh/flush?wait_secs=60")).json()
        assert answer["done"], answer
        status = (await gw.admin("GET", "/status")).json()["destinations"]["wh"]
    assert status["dead_lettered"] == 0, status
    assert ids(postgres.dsn, "identifies") == ["n-1"]
    assert ids(postgres.dsn, "groups") == ["n-2"]


async def test_a_long_user_or_group_id_loses_no_message(postgres: TemporaryPostgres, tmp_path: Path) -> None:
    """A userId or groupId may be as long as the 32 KB message allows. ``users.id`` and
    ``accounts.id`` are the primary key: a value past PostgreSQL's index row limit (~2.7 KB of
    text that does not compress) makes the COPY fail for good ("index row requires 9016 bytes,
    maximum size is 8191"), and the messages are dead-lettered with their ``identifies`` and
    ``groups`` rows."""
    import random

    rnd = random.Random(7)
    long_user = "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=9000))
    long_group = "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=9000))
    calls: list[tuple[str, dict[str, Any]]] = [
        ("identify", {"user_id": long_user, "traits": {"plan": "pro"}, "message_id": "n-1"}),
        ("group", {"user_id": "u6", "group_id": long_group, "traits": {"tier": "t"}, "message_id": "n-2"}),
    ]
    async with run_gateway(config(postgres.dsn).replace("review_nul", "review_long"), data_dir=tmp_path) as gw:
        await trio.to_thread.run_sync(lambda: send_calls(gw.url, WRITE_KEY, calls))
        answer = (await gw.admin("POST", "/destinations/wh/flush?wait_secs=60")).json()
        assert answer["done"], answer
        status = (await gw.admin("GET", "/status")).json()["destinations"]["wh"]
    assert status["dead_lettered"] == 0, status
    with psycopg.connect(postgres.dsn) as conn:
        assert [r[0] for r in conn.execute('SELECT id FROM "review_long"."identifies"')] == ["n-1"]
        assert [r[0] for r in conn.execute('SELECT id FROM "review_long"."groups"')] == ["n-2"]


async def test_a_wide_event_under_the_column_limit_loses_no_message(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """460 short text properties (a 26 KB message: under the 32 KB message limit and the
    800-column limit PostgreSQL's dialect sets): each value is moved out of line as an 18-byte
    TOAST pointer, the row is 8.4 KB, past the 8,160 bytes a heap row may take ("row is too
    big"), and the message is dead-lettered, its ``tracks`` row too."""
    import random

    rnd = random.Random(3)
    properties = {f"p{i}": "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=45)) for i in range(460)}
    calls: list[tuple[str, dict[str, Any]]] = [
        ("track", {"user_id": "u8", "event": "Wide Event", "properties": properties, "message_id": "w-1"}),
    ]
    async with run_gateway(config(postgres.dsn).replace("review_nul", "review_wide"), data_dir=tmp_path) as gw:
        await trio.to_thread.run_sync(lambda: send_calls(gw.url, WRITE_KEY, calls))
        answer = (await gw.admin("POST", "/destinations/wh/flush?wait_secs=60")).json()
        assert answer["done"], answer
        status = (await gw.admin("GET", "/status")).json()["destinations"]["wh"]
    assert status["dead_lettered"] == 0, status
    with psycopg.connect(postgres.dsn) as conn:
        assert [r[0] for r in conn.execute('SELECT id FROM "review_wide"."tracks"')] == ["w-1"]


async def test_an_event_named_like_an_index_of_another_table_loses_no_message(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """Tables and indexes share PostgreSQL's namespace. ``tracks`` has the primary key index
    ``tracks_pkey`` and ``discards`` the index ``discards_row_id``; an event "Tracks Pkey" or
    "Discards Row Id" maps to a table of that name, ``CREATE TABLE IF NOT EXISTS`` skips it (the
    index exists), the COPY fails ("... is not a table") and the messages are dead-lettered."""
    first: list[tuple[str, dict[str, Any]]] = [
        ("track", {"user_id": "u", "event": "Clicked", "properties": {"": "no name"}, "message_id": "pk-0"}),
    ]
    later: list[tuple[str, dict[str, Any]]] = [
        ("track", {"user_id": "u", "event": "Tracks Pkey", "properties": {"ok": 1}, "message_id": "pk-1"}),
        ("track", {"user_id": "u", "event": "Discards Row Id", "properties": {"ok": 1}, "message_id": "pk-2"}),
    ]
    async with run_gateway(config(postgres.dsn).replace("review_nul", "review_pkey"), data_dir=tmp_path) as gw:
        for calls in (first, later):
            await trio.to_thread.run_sync(lambda calls=calls: send_calls(gw.url, WRITE_KEY, calls))
            answer = (await gw.admin("POST", "/destinations/wh/flush?wait_secs=60")).json()
            assert answer["done"], answer
        status = (await gw.admin("GET", "/status")).json()["destinations"]["wh"]
    assert status["dead_lettered"] == 0, status
    with psycopg.connect(postgres.dsn) as conn:
        assert sorted(r[0] for r in conn.execute('SELECT id FROM "review_pkey"."tracks"')) == ["pk-0", "pk-1", "pk-2"]


async def test_a_source_whose_schema_starts_with_pg_is_loaded(postgres: TemporaryPostgres, tmp_path: Path) -> None:
    """The schema is the source id snake-cased. PostgreSQL refuses ``CREATE SCHEMA pg_...``
    ("The prefix pg_ is reserved for system schemas"), so a source named ``pg_app`` (or
    ``PG App``) never loads: every message of it is dead-lettered."""
    text = config(postgres.dsn).replace('schema = "review_nul"\n', "").replace("[sources.web]", "[sources.pg_app]")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("track", {"user_id": "u", "event": "Clicked", "properties": {"ok": 1}, "message_id": "pg-1"}),
    ]
    async with run_gateway(text, data_dir=tmp_path) as gw:
        await trio.to_thread.run_sync(lambda: send_calls(gw.url, WRITE_KEY, calls))
        answer = (await gw.admin("POST", "/destinations/wh/flush?wait_secs=60")).json()
        assert answer["done"], answer
        status = (await gw.admin("GET", "/status")).json()["destinations"]["wh"]
    assert status["dead_lettered"] == 0, status
    with psycopg.connect(postgres.dsn) as conn:
        found = conn.execute(
            "SELECT table_schema FROM information_schema.tables "
            "WHERE table_name = 'clicked' AND table_schema LIKE '%pg_app'"
        ).fetchall()
    assert found == [("_pg_app",)], found  # a leading _, as reserved words get


async def test_properties_named_like_system_columns_are_loaded(postgres: TemporaryPostgres, tmp_path: Path) -> None:
    """PostgreSQL refuses a column named as a system column even quoted ("column name "xmin"
    conflicts with a system column name"): ``tableoid xmin cmin xmax cmax ctid``. A map's
    bounding box (``xmin``, ``xmax``, ``ymin``, ``ymax``) is an ordinary event; it is dead-lettered.
    Segment's rule for such names is the leading ``_`` it gives reserved words."""
    calls: list[tuple[str, dict[str, Any]]] = [
        ("track", {"user_id": "u", "event": "Map Viewed", "message_id": "mv-1",
                   "properties": {"xmin": 1.5, "xmax": 2.5, "ymin": 3.5, "ymax": 4.5}}),
    ]  # fmt: skip
    async with run_gateway(config(postgres.dsn).replace("review_nul", "review_sys"), data_dir=tmp_path) as gw:
        await trio.to_thread.run_sync(lambda: send_calls(gw.url, WRITE_KEY, calls))
        answer = (await gw.admin("POST", "/destinations/wh/flush?wait_secs=60")).json()
        assert answer["done"], answer
        status = (await gw.admin("GET", "/status")).json()["destinations"]["wh"]
    assert status["dead_lettered"] == 0, status
    with psycopg.connect(postgres.dsn) as conn:
        assert [r[0] for r in conn.execute('SELECT id FROM "review_sys"."map_viewed"')] == ["mv-1"]
