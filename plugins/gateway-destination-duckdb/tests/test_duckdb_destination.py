"""The DuckDB warehouse end to end: a real gateway, the official Python client, a real DuckDB
file; rows compared column by column; loads repeated, evolved, deleted."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb
import pytest
import trio
import trio.testing
from gateway_warehouse.testing import WRITE_KEY, assert_loaded, bought, mapped_event, send_calls
from structlog.testing import capture_logs

from gateway import DeliveryError, DestinationContext, Record
from gateway.testing import run_gateway

TOKEN = "an-admin-token-of-enough-length"


def config(tmp_path: Path, extra: str = "") -> str:
    return f"""
[admin]
token = "{TOKEN}"

[sources.web]
write_key = "{WRITE_KEY}"

[destinations.wh]
type = "duckdb"
path = "{tmp_path / "warehouse.duckdb"}"
sync_interval_secs = 3600
retry_initial_secs = 0.05
retry_max_secs = 0.1
{extra}
"""


def read_tables(path: Path, schema: str = "web") -> dict[str, list[dict[str, Any]]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [
            t
            for (t,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [schema]
            ).fetchall()
        ]
        out = {}
        for table in tables:
            cursor = con.execute(f'SELECT * FROM "{schema}"."{table}"')
            names = [d[0] for d in cursor.description]
            out[table] = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return out
    finally:
        con.close()


async def flush(gw: Any, destination: str = "wh") -> dict[str, Any]:
    answer = (await gw.admin("POST", f"/destinations/{destination}/flush?wait_secs=60")).json()
    assert answer["done"], answer
    return answer


async def test_every_call_type_is_loaded_column_by_column(tmp_path: Path) -> None:
    async with run_gateway(config(tmp_path), data_dir=tmp_path) as gw:
        await trio.to_thread.run_sync(send_calls, gw.url, WRITE_KEY)
        await flush(gw)
        status = (await gw.admin("GET", "/status")).json()["destinations"]["wh"]["details"]
        assert status["last_load"]["messages"] == 8
        assert status["last_load"]["discards"] == 0
    assert_loaded(read_tables(tmp_path / "warehouse.duckdb"))


async def test_a_batch_loaded_twice_leaves_one_row_per_message(tmp_path: Path) -> None:
    """A retry, a replay or a crash before the cursor moved loads a batch again: rows are
    replaced by id, users merged, so the warehouse is as if it was loaded once."""
    from gateway_destination_duckdb import DuckDBConfig, _build

    from gateway import DestinationContext

    path = tmp_path / "w.duckdb"
    destination = _build(DuckDBConfig(path=str(path)), DestinationContext("wh", tmp_path))
    body = {"type": "track", "event": "Clicked", "userId": "u", "receivedAt": "2026-01-01T00:00:00Z"}
    ident = {"type": "identify", "userId": "u", "receivedAt": "2026-01-01T00:00:01Z", "traits": {"a": 1}}
    batch = [
        Record(seq=i, source="web", body=json.dumps({**body, "messageId": f"m{i}"}).encode()) for i in range(1, 81)
    ] + [Record(seq=81, source="web", body=json.dumps({**ident, "messageId": "i1"}).encode())]
    async with destination:
        await destination.send(batch[:40])  # most rows projected by DuckDB (see projection.py)
        await destination.send(batch)  # the first 40 again, with more
        await destination.send(batch[30:])
    tables = read_tables(path)
    ids = sorted(f"m{i}" for i in range(1, 81))
    assert sorted(r["id"] for r in tables["clicked"]) == ids
    assert sorted(r["id"] for r in tables["tracks"]) == ids
    assert [(r["id"], r["a"]) for r in tables["users"]] == [("u", 1)]
    assert [r["id"] for r in tables["identifies"]] == ["i1"]


async def test_a_backlog_is_loaded_into_a_file_kept_open_until_loads_stop(tmp_path: Path, monkeypatch: Any) -> None:
    """Full batches (a backlog) leave the file open with their rows in the write-ahead log, not
    checkpointed load by load; a partial batch, or no load for a while, checkpoints and closes
    it, so other processes can read it; every row is there once."""
    import gateway_warehouse.destination as warehouse
    from gateway_destination_duckdb import DuckDBConfig, _build

    from gateway import DestinationContext

    monkeypatch.setattr(warehouse, "BACKLOG_MESSAGES", 40)
    monkeypatch.setattr(warehouse, "IDLE_RELEASE_SECS", 0.05)
    path = tmp_path / "w.duckdb"
    wal = tmp_path / "w.duckdb.wal"
    destination = _build(DuckDBConfig(path=str(path)), DestinationContext("wh", tmp_path))
    body = {"type": "track", "event": "Clicked", "userId": "u", "receivedAt": "2026-01-01T00:00:00Z"}
    batch = [
        Record(seq=i, source="web", body=json.dumps({**body, "messageId": f"m{i}"}).encode()) for i in range(1, 126)
    ]
    async with destination:
        await destination.send(batch[:40])
        assert wal.stat().st_size > 0  # held open: the rows are in the log, not checkpointed
        assert destination.status()["held_open"]
        held = wal.stat().st_size
        await destination.send(batch[30:70])  # a retry of part of it, then more
        assert wal.stat().st_size > held
        await destination.send(batch[70:80])  # caught up: checkpointed and closed at once
        assert not wal.exists() or wal.stat().st_size == 0
        assert not destination.status()["held_open"]
        await destination.send(batch[80:120])
        assert wal.stat().st_size > 0
        with trio.fail_after(30):  # no load comes: closed after IDLE_RELEASE_SECS
            await destination.wait_released()
        assert not wal.exists() or wal.stat().st_size == 0
        assert not destination.status()["held_open"]
        assert sorted(r["id"] for r in read_tables(path)["clicked"]) == sorted(f"m{i}" for i in range(1, 121))
        await destination.send(batch[120:])  # opened again for the next load
    assert sorted(r["id"] for r in read_tables(path)["clicked"]) == sorted(f"m{i}" for i in range(1, 126))


async def test_a_file_another_process_holds_open_makes_loads_wait_and_is_read_while_idle(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Another process (``duckdb -readonly``, a notebook) holding the file: a load fails as
    retryable and leaves nothing; once the reader goes, the same batch loads once. While a
    backlog holds the file, the reader cannot open it; once loads stop, it can."""
    import subprocess
    import sys

    import gateway_warehouse.destination as warehouse
    from gateway_destination_duckdb import DuckDBConfig, _build

    from gateway import DeliveryError, DestinationContext

    monkeypatch.setattr(warehouse, "BACKLOG_MESSAGES", 40)
    monkeypatch.setattr(warehouse, "IDLE_RELEASE_SECS", 0.05)
    path = tmp_path / "w.duckdb"
    body = {"type": "track", "event": "Clicked", "userId": "u", "receivedAt": "2026-01-01T00:00:00Z"}
    batch = [
        Record(seq=i, source="web", body=json.dumps({**body, "messageId": f"m{i}"}).encode()) for i in range(1, 81)
    ]
    # A reader in its own process: told to, it opens the file and says what it saw, then holds
    # it until its stdin closes.
    reader = (
        "import sys, duckdb\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "try:\n"
        "    con = duckdb.connect(sys.argv[1], read_only=True)\n"
        "except duckdb.Error as error:\n"
        "    print('refused', error, flush=True)\n"
        "    raise SystemExit(0)\n"
        "print('open', con.execute('SELECT count(*) FROM web.clicked').fetchone()[0], flush=True)\n"
        "sys.stdin.read()\n"
    )

    class Reader:
        def __init__(self) -> None:
            command = [sys.executable, "-c", reader, str(path)]
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert self.process.stdin is not None and self.process.stdout is not None
            self.stdin, self.stdout = self.process.stdin, self.process.stdout
            assert self.stdout.readline() == "ready\n"

        def open(self) -> str:
            self.stdin.write("go\n")
            self.stdin.flush()
            return self.stdout.readline()

        def close(self) -> None:
            self.process.communicate(timeout=30)

    destination = _build(DuckDBConfig(path=str(path)), DestinationContext("wh", tmp_path))
    async with destination:
        await destination.send(batch[:10])  # a partial batch: released at once
        holder = await trio.to_thread.run_sync(Reader)
        try:
            assert await trio.to_thread.run_sync(holder.open) == "open 10\n"
            try:
                await destination.send(batch[10:20])
                raise AssertionError("loaded into a file another process holds")
            except DeliveryError as error:
                assert error.retryable, error
            assert not destination.status()["held_open"]
        finally:
            await trio.to_thread.run_sync(holder.close)
        await destination.send(batch[10:20])  # the retry, once the reader is gone
        late = await trio.to_thread.run_sync(Reader)
        monkeypatch.setattr(warehouse, "IDLE_RELEASE_SECS", 5.0)
        await destination.send(batch[20:60])  # a backlog: held open
        assert destination.status()["held_open"]
        assert (await trio.to_thread.run_sync(late.open)).startswith("refused")
        await trio.to_thread.run_sync(late.close)
        monkeypatch.setattr(warehouse, "IDLE_RELEASE_SECS", 0.05)
        with trio.fail_after(30):  # no load comes: released
            await destination.wait_released()
        reader_now = await trio.to_thread.run_sync(Reader)
        assert await trio.to_thread.run_sync(reader_now.open) == "open 60\n"
        await trio.to_thread.run_sync(reader_now.close)
    assert sorted(r["id"] for r in read_tables(path)["clicked"]) == sorted(f"m{i}" for i in range(1, 61))


async def test_a_batch_mapped_against_a_schema_another_process_changed_is_mapped_again(tmp_path: Path) -> None:
    """The next batch is mapped against the schema the last load left, without reading it; the
    write finds that someone dropped a column in the file since, and maps the batch again."""
    from gateway_destination_duckdb import DuckDBConfig, _build

    from gateway import DestinationContext

    path = tmp_path / "w.duckdb"
    destination = _build(DuckDBConfig(path=str(path)), DestinationContext("wh", tmp_path))
    async with destination:
        await destination.send([bought(1, {"price": 1.5, "coupon": "A"})])  # partial: the file is released
        con = duckdb.connect(str(path))
        con.execute("ALTER TABLE web.bought DROP COLUMN coupon")
        con.close()
        with capture_logs() as logs:
            await destination.send([bought(2, {"price": 2.5, "coupon": "B"})])
    assert [entry["event"] for entry in logs].count("warehouse_schema_changed") == 1
    rows = sorted((r["id"], r["price"], r["coupon"]) for r in read_tables(path)["bought"])
    assert rows == [("m1", 1.5, None), ("m2", 2.5, "B")]


async def test_the_next_batch_is_mapped_while_one_is_written_and_mapped_again_if_that_write_fails(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Batch B is mapped while batch A is written, against the schema A would leave (a new
    column); A fails, so B's write finds the column missing and B is mapped again: B's rows are
    loaded as if A had never been tried. The file stays open while a batch is in flight and is
    released as soon as a write ends with none (no idle wait), for other processes to read."""
    import gateway_warehouse.destination as warehouse
    from gateway_destination_duckdb import DuckDBConfig, DuckDBLoader
    from gateway_warehouse import Load, Schema, WarehouseDestination

    monkeypatch.setattr(warehouse, "IDLE_RELEASE_SECS", 3600.0)  # only the end of the writes releases
    path = tmp_path / "w.duckdb"

    class FailsBatchA(DuckDBLoader):
        def write_unless_changed(self, load: Load, schemas: Mapping[str, Schema | None] | None) -> bool:
            if load.first_seq == 2:  # batch A fails once batch B is mapped
                assert b_mapped.wait(timeout=60)
                raise duckdb.IOException("the disk is full")
            return super().write_unless_changed(load, schemas)

    destination = WarehouseDestination(
        DuckDBConfig(path=str(path)),
        DestinationContext("wh", tmp_path),
        lambda: FailsBatchA(str(path)),
        engine="duckdb",
    )
    async with destination:
        await destination.send([bought(1, {"quantity": 1})])
        b_mapped = mapped_event(destination, first_seq=3)
        failures: list[DeliveryError] = []
        held_after_a: list[bool] = []

        async def send_a() -> None:
            try:
                await destination.send([bought(2, {"quantity": 5, "coupon": "A"})])
            except DeliveryError as error:
                failures.append(error)
            held_after_a.append(destination.status()["held_open"])

        with capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_a)
                await trio.testing.wait_all_tasks_blocked()  # A is mapped, then held in its write
                nursery.start_soon(destination.send, [bought(3, {"quantity": 2, "coupon": "B"})])
        with trio.fail_after(30):  # B's write ended with nothing in flight: released at once
            await destination.wait_released()
        assert read_tables(path)["bought"]  # another process opens the file
        await destination.send([bought(4, {"quantity": 3}), bought(5, {"quantity": 4})])
        await destination.send([bought(5, {"quantity": 4})])  # loaded again: replaced
    assert len(failures) == 1 and "disk is full" in str(failures[0])
    assert held_after_a == [False]  # a failed write releases the file
    assert [entry["event"] for entry in logs].count("warehouse_schema_changed") == 1
    rows = sorted((r["id"], r["quantity"], r["coupon"]) for r in read_tables(path)["bought"])
    assert rows == [("m1", 1, None), ("m3", 2, "B"), ("m4", 3, None), ("m5", 4, None)]


async def test_a_file_is_held_open_while_another_batch_is_in_flight(tmp_path: Path, monkeypatch: Any) -> None:
    """Two batches in flight (the duckdb type's default): each write that ends while the next
    batch is on its way leaves the file open; the last one closes it, whatever the batch size."""
    import gateway_warehouse.destination as warehouse
    from gateway_destination_duckdb import DuckDBConfig, _build

    from gateway import DestinationContext

    monkeypatch.setattr(warehouse, "IDLE_RELEASE_SECS", 3600.0)
    path = tmp_path / "w.duckdb"
    destination = _build(DuckDBConfig(path=str(path)), DestinationContext("wh", tmp_path))
    held: list[bool] = []
    slots = trio.Semaphore(2)  # as the delivery worker keeps them

    async def send(batch: list[Record]) -> None:
        try:
            await destination.send(batch)
            held.append(destination.status()["held_open"])
        finally:
            slots.release()

    async with destination:
        async with trio.open_nursery() as nursery:
            for start in range(1, 101, 20):
                await slots.acquire()
                nursery.start_soon(send, [bought(seq, {"quantity": seq}) for seq in range(start, start + 20)])
        with trio.fail_after(30):
            await destination.wait_released()
        assert held[:4] == [True] * 4 and held[4:] == [False]
        ids = sorted(r["id"] for r in read_tables(path)["bought"])
    assert ids == sorted(f"m{seq}" for seq in range(1, 101))


@pytest.mark.parametrize(("stem", "source"), [("web", "web"), ("warehouse", "temp"), ("warehouse", "system")])
async def test_a_schema_named_as_a_catalog_is_loaded(tmp_path: Path, stem: str, source: str) -> None:
    # DuckDB names a file's catalog after the file and has catalogs temp and system: a schema
    # named as one of them (web.duckdb for source web) is ambiguous unless tables are named
    # with their catalog (the load failed with a BinderException, dead-lettering every batch).
    from gateway_destination_duckdb import DuckDBConfig, _build

    path = tmp_path / f"{stem}.duckdb"
    body = b'{"type":"track","messageId":"m1","event":"Viewed","receivedAt":"2026-05-01T10:00:00.000Z"}'
    destination = _build(DuckDBConfig(path=str(path)), DestinationContext("wh", tmp_path))
    async with destination:
        await destination.send([Record(seq=1, source=source, body=body)])
        assert await destination.delete_user("nobody") == 0  # deletions name the tables the same way
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute(f'SELECT id FROM "{stem}"."{source}"."viewed"').fetchall() == [("m1",)]
    finally:
        con.close()


async def test_two_identifies_of_a_user_merge_when_users_received_at_is_text(tmp_path: Path) -> None:
    # A users.received_at an operator made text holds received_at as text: the users merge
    # compares instants, not text with a datetime (a TypeError, retried forever). Found by review.
    from gateway_destination_duckdb import DuckDBConfig, _build

    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA web")
    con.execute("CREATE TABLE web.users (id VARCHAR, received_at VARCHAR, plan VARCHAR)")
    con.close()
    identify = '{"type":"identify","messageId":"i%d","userId":"u","receivedAt":"%s","traits":{"plan":"%s"}}'
    records = [
        Record(seq=seq, source="web", body=(identify % (seq, received, plan)).encode())
        for seq, received, plan in [(1, "2026-05-01T10:00:05.000Z", "pro"), (2, "2026-05-01T10:00:00.000Z", "free")]
    ]
    destination = _build(DuckDBConfig(path=str(path)), DestinationContext("wh", tmp_path))
    async with destination:
        await destination.send(records)
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("SELECT id, plan FROM web.users").fetchall() == [("u", "pro")]  # the later receivedAt
    finally:
        con.close()


async def test_a_column_an_operator_added_in_mixed_case_is_the_mappers_column(tmp_path: Path) -> None:
    # DuckDB's names are case-insensitive but information_schema gives them as written: an
    # operator's "Coupon" is the mapper's coupon. Read as written, every later batch found the
    # schema changed (the mapper's coupon missing) and was mapped twice. Found by review.
    from gateway_destination_duckdb import DuckDBConfig, _build

    def track(seq: int, properties: str) -> Record:
        head = f'{{"type":"track","messageId":"m{seq}","event":"Viewed","receivedAt":"2026-05-01T10:00:00.000Z"'
        return Record(seq=seq, source="web", body=f'{head},"properties":{properties}}}'.encode())

    path = tmp_path / "w.duckdb"
    destination = _build(DuckDBConfig(path=str(path)), DestinationContext("wh", tmp_path))
    async with destination:
        await destination.send([track(1, '{"a":1}')])
        con = duckdb.connect(str(path))
        con.execute('ALTER TABLE web.viewed ADD COLUMN "Coupon" VARCHAR')
        con.close()
        with capture_logs() as logs:
            for seq in range(2, 6):
                await destination.send([track(seq, '{"a":1,"coupon":"x"}')])
    changed = [entry for entry in logs if entry["event"] == "warehouse_schema_changed"]
    assert len(changed) == 1  # the operator's change, seen once
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute('SELECT "Coupon" FROM web.viewed ORDER BY id').fetchall() == [(None,)] + [("x",)] * 4
    finally:
        con.close()


async def test_two_identifies_of_a_user_merge_when_an_operator_retyped_users_columns(tmp_path: Path) -> None:
    # An operator's TIMESTAMP_NS (or DECIMAL) column is read back as text, so the stage holds it
    # as VARCHAR, and DuckDB will not mix VARCHAR or TIMESTAMPTZ with TIMESTAMP_NS in the merge's
    # CASE: a Binder error, every batch with an identify dead-lettered. Found by review.
    from gateway_destination_duckdb import DuckDBConfig, _build

    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA web")
    con.execute("CREATE TABLE web.users (id VARCHAR, received_at TIMESTAMP_NS, plan VARCHAR, score DECIMAL(10, 2))")
    con.close()
    identify = '{"type":"identify","messageId":"i%d","userId":"u","receivedAt":"%s","traits":{"plan":"%s","score":%s}}'
    batches = [
        [Record(seq=1, source="web", body=(identify % (1, "2026-05-01T10:00:05.000Z", "pro", "2.5")).encode())],
        [Record(seq=2, source="web", body=(identify % (2, "2026-05-01T10:00:00.000Z", "free", "1")).encode())],
    ]
    destination = _build(DuckDBConfig(path=str(path)), DestinationContext("wh", tmp_path))
    async with destination:
        for batch in batches:
            await destination.send(batch)
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("SELECT id, plan, CAST(score AS DOUBLE), CAST(received_at AS VARCHAR) FROM web.users")
        assert rows.fetchall() == [("u", "pro", 2.5, "2026-05-01 10:00:05")]  # the later receivedAt wins
    finally:
        con.close()


async def test_a_batch_the_warehouse_refuses_for_good_is_a_permanent_failure(tmp_path: Path) -> None:
    # An operator's CHECK constraint refuses the row: the same on every attempt, so the batch is
    # dead-lettered. The stage was unregistered in a finally inside the aborted transaction,
    # which raised "transaction is aborted" instead: retryable, the batch retried forever.
    from gateway_destination_duckdb import DuckDBConfig, _build

    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA web")
    con.execute("CREATE TABLE web.viewed (id VARCHAR CHECK (id <> 'm1'))")
    con.close()
    body = b'{"type":"track","messageId":"m1","event":"Viewed","receivedAt":"2026-05-01T10:00:00.000Z"}'
    destination = _build(DuckDBConfig(path=str(path)), DestinationContext("wh", tmp_path))
    async with destination:
        with pytest.raises(DeliveryError) as raised:
            await destination.send([Record(seq=1, source="web", body=body)])
    assert not raised.value.retryable, raised.value
    assert "CHECK constraint" in str(raised.value)


async def test_an_event_with_all_false_is_still_loaded(tmp_path: Path) -> None:
    # "All": false blocks every destination an event does not name, except warehouses
    # (segment-api.md §2.4); the warehouse's own name still turns it off.
    calls = [
        {"type": "track", "userId": "u", "event": "Picked", "messageId": "m1", "integrations": {"All": False}},
        {"type": "track", "userId": "u", "event": "Picked", "messageId": "m2", "integrations": {"wh": False}},
    ]
    async with run_gateway(config(tmp_path), data_dir=tmp_path) as gw:
        response = await gw.request("POST", "/v1/batch", json={"batch": calls}, auth=(WRITE_KEY, ""))
        assert response.status_code == 200
        await flush(gw)
    assert [row["id"] for row in read_tables(tmp_path / "warehouse.duckdb")["picked"]] == ["m1"]


async def test_a_deletion_request_removes_an_alias_from_the_users_earlier_id(tmp_path: Path) -> None:
    # alias(previousId=u1, userId=u2) holds u1's id: deleting u1 removes it (found by review).
    from gateway_destination_duckdb import DuckDBConfig, DuckDBLoader, _build

    path = tmp_path / "w.duckdb"
    alias = b'{"type":"alias","messageId":"a1","previousId":"u1","userId":"u2","receivedAt":"2026-05-01T10:00:00Z"}'
    destination = _build(DuckDBConfig(path=str(path)), DestinationContext("wh", tmp_path))
    async with destination:
        await destination.send([Record(seq=1, source="web", body=alias)])
    loader = DuckDBLoader(str(path))
    try:
        assert loader.delete_user("u1") == 1
    finally:
        loader.close()
    assert read_tables(path)["aliases"] == []
