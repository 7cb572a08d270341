"""The Parquet data lake end to end: a real gateway, the official Python client, real files read
back with DuckDB and with pyarrow's dataset reader (what pandas.read_parquet uses)."""

from __future__ import annotations

import json
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.dataset as ds
import trio
from gateway_destination_parquet import ParquetConfig, _build
from gateway_warehouse.testing import WRITE_KEY, assert_loaded, load_through_kills, send_calls

from gateway import DestinationContext, Record
from gateway.testing import run_gateway

TOKEN = "an-admin-token-of-enough-length"


def config(lake: Path) -> str:
    return f"""
[admin]
token = "{TOKEN}"

[sources.web]
write_key = "{WRITE_KEY}"

[destinations.lake]
type = "parquet"
path = "{lake}"
sync_interval_secs = 3600
"""


def read_lake(lake: Path, schema: str = "web") -> dict[str, list[dict[str, Any]]]:
    """Every table of the lake, read with DuckDB (hive partitions, schemas unioned by name)."""
    con = duckdb.connect()
    out = {}
    for folder in sorted((lake / schema).iterdir()):
        if folder.is_dir():
            cursor = con.execute(
                f"SELECT * EXCLUDE (day) FROM read_parquet('{folder}/*/*.parquet', hive_partitioning = true, "
                "union_by_name = true)"
            )
            names = [d[0] for d in cursor.description]
            out[folder.name] = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    return out


async def test_every_call_type_lands_in_its_partition_column_by_column(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    async with run_gateway(config(lake), data_dir=tmp_path) as gw:
        await trio.to_thread.run_sync(send_calls, gw.url, WRITE_KEY)
        answer = (await gw.admin("POST", "/destinations/lake/flush?wait_secs=60")).json()
        assert answer["done"], answer
    tables = read_lake(lake)
    assert "tracks" not in tables and "users" not in tables and "accounts" not in tables  # as Segment Data Lakes
    assert_loaded(tables, object_tables=False, tracks_table=False)
    [partition] = (lake / "web" / "order_completed").iterdir()
    assert partition.name.startswith("day=20")
    assert not list(lake.rglob(".tmp-*"))
    # pyarrow's dataset reader (pandas.read_parquet's engine) with hive partitioning
    dataset = ds.dataset(lake / "web" / "identifies", format="parquet", partitioning="hive")
    rows = dataset.to_table().to_pylist()
    assert sorted(r["id"] for r in rows) == ["wh-identify-1", "wh-identify-2"]
    assert {r["day"] for r in rows} == {partition.name.removeprefix("day=")}


async def test_a_batch_loaded_again_adds_only_the_rows_that_are_not_there(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    destination = _build(ParquetConfig(path=str(lake)), DestinationContext("lake", tmp_path))
    body = {"type": "track", "event": "Clicked", "userId": "u", "receivedAt": "2026-01-01T23:59:59Z"}
    late = {**body, "receivedAt": "2026-01-02T00:00:01Z"}
    batch = [Record(seq=i, source="web", body=json.dumps({**body, "messageId": f"m{i}"}).encode()) for i in range(1, 5)]
    batch.append(Record(seq=5, source="web", body=json.dumps({**late, "messageId": "m5"}).encode()))
    async with destination:
        await destination.send(batch[:3])
        await destination.send(batch)  # overlaps: m1..m3 are there already
        await destination.send(batch)
        await destination.send(batch[3:])
        assert await destination.delete_user("u") == 5
        await destination.send(batch[:1])  # loaded again after the deletion (a replay)
    ids = Counter(r["id"] for r in read_lake(lake)["clicked"])
    assert ids == Counter({"m1": 1})
    days = sorted(p.name for p in (lake / "web" / "clicked").iterdir())
    assert days == ["day=2026-01-01", "day=2026-01-02"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_kill_9_during_loads_then_restart_writes_every_acknowledged_message_once(tmp_path: Path) -> None:
    admin = f"127.0.0.1:{free_port()}"
    lake = tmp_path / "lake"
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(f"""
[server]
listen = "127.0.0.1:{free_port()}"
data_dir = "{tmp_path / "data"}"
graceful_shutdown_secs = 2

[admin]
listen = "{admin}"
token = "{TOKEN}"

[sources.web]
write_key = "{WRITE_KEY}"

[destinations.lake]
type = "parquet"
path = "{lake}"
sync_interval_secs = 0.05
batch_max_messages = 1500
retry_initial_secs = 0.05
retry_max_secs = 0.2
""")
    run = load_through_kills(config_path, f"http://{admin}", TOKEN, destination="lake", messages=6000, kills=3)
    print(f"kills: {run.kills}, during a load: {run.kills_mid_load}, acknowledged: {len(run.acknowledged)}")
    assert run.kills_mid_load >= 1, "no kill landed during a load"
    tables = read_lake(lake)
    ids = Counter(r["id"] for table in ("clicked", "viewed_page", "identifies") for r in tables[table])
    duplicates = {i: n for i, n in ids.items() if n > 1}
    assert not duplicates, f"written more than once: {sorted(duplicates)[:10]}"
    missing = run.acknowledged - set(ids)
    assert not missing, f"{len(missing)} acknowledged messages never written, e.g. {sorted(missing)[:10]}"
    assert set(ids) <= run.acknowledged | run.failed
