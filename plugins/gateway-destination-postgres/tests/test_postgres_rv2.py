"""PostgreSQL users ids past the key limit or holding U+0000, through the projection and deletion (found by review)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from gateway_destination_postgres.testing import TemporaryPostgres
from gateway_warehouse.testing import WRITE_KEY

from gateway.testing import run_gateway

from .test_postgres_destination import config as destination_config


async def test_a_long_user_id_in_a_projected_group_of_identify_calls_loses_no_message(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """cdc2643 keys a users id past 2,048 bytes by a hash, but only on the mapper's Python path.
    40 identify calls of one shape make a projected group (MIN_GROUP = 32): the sample (a short
    userId) gives the users recipe, and the other members' users.id is copied from /userId by the
    projection, not through Dialect.key. A member with a 9,000-character userId then reaches
    the primary key whole: "index row requires 9016 bytes", the batch's load fails for good and
    the core resends it record by record (one load, one transaction, per message)."""
    rnd = random.Random(11)
    long_user = "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=9000))
    users = [f"user-{i:03d}" for i in range(39)] + [long_user]
    messages: list[dict[str, Any]] = [
        {"type": "identify", "userId": user, "traits": {"plan": "pro"}, "messageId": f"id-{i:03d}"}
        for i, user in enumerate(users)
    ]
    text = destination_config(f'dsn = "{postgres.dsn}"', 'schema = "rv2_long"')
    async with run_gateway(text, data_dir=tmp_path) as gw:
        assert (await gw.batch(messages, write_key=WRITE_KEY)).status_code == 200
        answer = (await gw.admin("POST", "/destinations/wh/flush?wait_secs=60")).json()
        assert answer["done"], answer
        status = (await gw.admin("GET", "/status")).json()["destinations"]["wh"]
    assert status["dead_lettered"] == 0, status
    # The batch's load fails for good and the core loads its 40 messages one by one (40 loads,
    # a transaction each: a 5,000-message batch becomes 5,000 loads).
    assert status["details"]["failed_loads"] == 0, status["last_error"]
    assert status["details"]["loads"] == 1, status["details"]
    with psycopg.connect(postgres.dsn) as conn:
        loaded = conn.execute('SELECT count(*) FROM "rv2_long"."identifies"').fetchone()
        keys = [r[0] for r in conn.execute('SELECT id FROM "rv2_long"."users"')]
    assert loaded == (40,)
    assert len(keys) == 40 and all(len(key.encode()) <= 2048 for key in keys)


async def test_a_user_id_past_the_key_limit_keeps_one_users_row_across_batches(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """The same defect with an id of 2,500 characters: past max_key_bytes (2,048) but under the
    btree's 2,704, so the projected batch loads with users.id the raw id. A later identify of
    the same user, mapped in Python, is keyed by Dialect.key (start#sha256): a second users row
    for one user, and the traits of the later call never reach the first row."""
    rnd = random.Random(12)
    long_user = "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=2500))
    users = [f"user-{i:03d}" for i in range(39)] + [long_user]
    first: list[dict[str, Any]] = [
        {"type": "identify", "userId": user, "traits": {"plan": "free"}, "messageId": f"a-{i:03d}"}
        for i, user in enumerate(users)
    ]
    later: list[dict[str, Any]] = [
        {"type": "identify", "userId": long_user, "traits": {"plan": "pro"}, "messageId": "b-000"}
    ]
    text = destination_config(f'dsn = "{postgres.dsn}"', 'schema = "rv2_merge"')
    async with run_gateway(text, data_dir=tmp_path) as gw:
        for messages in (first, later):
            assert (await gw.batch(messages, write_key=WRITE_KEY)).status_code == 200
            answer = (await gw.admin("POST", "/destinations/wh/flush?wait_secs=60")).json()
            assert answer["done"], answer
    with psycopg.connect(postgres.dsn) as conn:
        query = 'SELECT id, plan FROM "rv2_merge"."users" WHERE id LIKE %s'
        rows = conn.execute(query, [long_user[:100] + "%"]).fetchall()
    assert len(rows) == 1, [(len(key), plan) for key, plan in rows]
    assert rows[0][1] == "pro"


async def test_a_deletion_request_for_a_user_id_with_a_nul_character_removes_its_event_rows(
    postgres: TemporaryPostgres, tmp_path: Path
) -> None:
    """Since 3ffa086 the messages of a userId holding U+0000 load (they were dead-lettered
    before): users.id is the escaped id, but identifies.user_id and tracks.user_id cannot hold
    it and are NULL (the value in discards). A deletion request removes the users row and the
    discards, and leaves the identifies row with the user's traits (an email here) and the
    tracks row: nothing in them names the user any more, so no later request can find them."""
    from gateway_destination_postgres import PostgresConfig, _build

    from gateway import DestinationContext, Record

    destination = _build(PostgresConfig(dsn=postgres.dsn, schema="rv2_nul_delete"), DestinationContext("wh", tmp_path))
    user = "nul\x00user"
    bodies = [
        {"type": "identify", "userId": user, "messageId": "m1", "traits": {"email": "who@example.com"}},
        {"type": "track", "userId": user, "messageId": "m2", "event": "Clicked", "properties": {"ok": 1}},
    ]
    async with destination:
        await destination.send(
            [Record(seq=i + 1, source="web", body=msgspec.json.encode(b)) for i, b in enumerate(bodies)]
        )
        assert await destination.delete_user(user) > 0
    with psycopg.connect(postgres.dsn) as conn:
        left = {
            table: conn.execute(f'SELECT count(*) FROM "rv2_nul_delete"."{table}"').fetchone()[0]  # type: ignore[index]
            for table in ("users", "identifies", "tracks")
        }
    assert left == {"users": 0, "identifies": 0, "tracks": 0}, left
