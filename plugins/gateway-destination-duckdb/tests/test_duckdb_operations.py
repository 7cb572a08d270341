"""Operating a DuckDB warehouse: `gateway warehouse sync|schema`, `gateway status`, deletion
requests, destination privacy settings, and bad input that loses nothing (real daemon CLI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import trio
from gateway_warehouse.testing import WRITE_KEY, send_calls

from gateway.testing import run_gateway

TOKEN = "an-admin-token-of-enough-length"


def config(tmp_path: Path, extra: str = "") -> str:
    return f"""
[admin]
token = "{TOKEN}"

[privacy]
hash_salt = "pepper"

[sources.web]
write_key = "{WRITE_KEY}"

[destinations.wh]
type = "duckdb"
path = "{tmp_path / "warehouse.duckdb"}"
sync_interval_secs = 3600
{extra}
"""


async def cli(gw: Any, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway", *args, "--config", str(gw.config_path)]
    return await trio.to_thread.run_sync(
        lambda: subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    )


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


async def test_sync_schema_status_and_a_deletion_request(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    async with run_gateway(config(tmp_path), data_dir=tmp_path) as gw:
        result = await cli(gw, "warehouse", "sync", "wh")
        assert result.returncode == 0, result.stderr
        assert "nothing new to load" in result.stdout

        await trio.to_thread.run_sync(send_calls, gw.url, WRITE_KEY)
        result = await cli(gw, "warehouse", "sync", "wh")
        assert result.returncode == 0, result.stderr
        assert "wh: loaded 8 messages as 12 rows" in result.stdout
        assert "created web.order_completed" in result.stdout

        result = await cli(gw, "warehouse", "schema", "wh")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        users = lines.index("web.users")
        assert [line.split() for line in lines[users + 1 : users + 4]] == [
            ["id", "string"],
            ["received_at", "timestamp"],
            ["uuid_ts", "timestamp"],
        ]
        assert ["total", "float"] in [line.split() for line in lines]

        result = await cli(gw, "status")
        assert result.returncode == 0, result.stderr
        assert "engine duckdb, loads 1, messages_loaded 8, rows_loaded 12, discards 0" in result.stdout
        assert "last_load: at 20" in result.stdout and "messages 8, rows 12" in result.stdout

        result = await cli(gw, "privacy", "delete", "user-1", "--keep-collecting")
        assert result.returncode == 0, result.stderr
        # every row of user-1: 2 identifies, 1 track + 1 event row, page, screen, group, alias, users
        assert "wh: 9 removed" in result.stdout
    assert query(path, "SELECT count(*) FROM web.identifies") == [(0,)]
    assert query(path, "SELECT id FROM web.tracks") == [("wh-track-2",)]  # the anonymous one stays
    assert query(path, "SELECT count(*) FROM web.users") == [(0,)]
    assert query(path, "SELECT id FROM web.accounts") == [("group-9",)]  # a group, not the user


async def test_destination_privacy_settings_apply_before_loading(tmp_path: Path) -> None:
    extra = (
        'privacy = { fields = { "traits.email" = "hash", "traits.plan" = "block", "properties.currency" = "redact" } }'
    )
    path = tmp_path / "warehouse.duckdb"
    async with run_gateway(config(tmp_path, extra), data_dir=tmp_path) as gw:
        await trio.to_thread.run_sync(send_calls, gw.url, WRITE_KEY)
        assert (await gw.admin("POST", "/destinations/wh/flush?wait_secs=60")).json()["done"]
    [(email,)] = query(path, "SELECT email FROM web.users")
    assert email != "ada@example.com" and len(email) == 64
    columns = {
        c for (c,) in query(path, "SELECT column_name FROM information_schema.columns WHERE table_name = 'users'")
    }
    assert "plan" not in columns  # blocked: never reached the warehouse
    assert query(path, "SELECT currency FROM web.order_completed") == [("[REDACTED]",)]
    assert "ada@example.com" not in path.read_bytes().decode("latin-1")


async def test_bad_input_is_logged_counted_and_kept_while_the_load_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    long_text = "x" * 31_500  # about as long as a string can be in a 32 KB message
    calls = [
        ("track", {"user_id": "u", "event": "Bad", "properties": {"": 1, "n": 1}, "message_id": "b1"}),
        ("track", {"user_id": "u", "event": "Bad", "properties": {"n": "one"}, "message_id": "b2"}),  # flip
        ("track", {"user_id": "u", "event": "Bad", "properties": {"n": 2.5, "note": long_text}, "message_id": "b3"}),
        (
            "track",
            {"user_id": "u", "event": "Wide", "properties": {f"p{i}": i for i in range(1200)}, "message_id": "w1"},
        ),
    ]
    async with run_gateway(config(tmp_path, "max_columns_per_table = 100"), data_dir=tmp_path) as gw:
        await trio.to_thread.run_sync(lambda: send_calls(gw.url, WRITE_KEY, calls))
        assert (await gw.admin("POST", "/destinations/wh/flush?wait_secs=60")).json()["done"]
        details = (await gw.admin("GET", "/status")).json()["destinations"]["wh"]["details"]
        counts = details["last_load"]["counts"]
        assert gw.statistics("wh")["delivered"] == 4 and not await gw.dead_letters("wh")
    wide_kept = 100 - 10 - 3  # 10 standard columns, 3 of context (library name and version, ip)
    assert counts == {
        "discards": 1 + 2 + (1200 - wide_kept),
        "no_column_name": 1,
        "type_mismatch": 2,
        "column_limit": 1200 - wide_kept,
    }
    assert query(path, "SELECT id, n, length(note) FROM web.bad ORDER BY id") == [
        ("b1", 1, None),
        ("b2", None, None),
        ("b3", None, 31_500),
    ]
    assert query(
        path, "SELECT row_id, column_name, value, reason FROM web.discards WHERE table_name = 'bad' ORDER BY row_id"
    ) == [
        ("b1", "properties.", "1", "no_column_name"),
        ("b2", "n", "one", "type_mismatch"),
        ("b3", "n", "2.5", "type_mismatch"),
    ]
    [(kept,)] = query(path, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'wide'")
    assert kept == 100
    assert query(path, "SELECT count(*) FROM web.discards WHERE table_name = 'wide' AND reason = 'column_limit'") == [
        (1200 - wide_kept,)
    ]
