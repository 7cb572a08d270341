"""The Parquet lake as readers other than DuckDB see it (found by review, issue 14)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
import trio
from gateway_warehouse.testing import WRITE_KEY, send_calls

from gateway.testing import run_gateway

from .test_parquet_destination import config


async def test_a_column_added_by_a_later_load_is_seen_by_pyarrow_and_pandas(tmp_path: Path) -> None:
    """The README promises files "readable by DuckDB, pandas, Spark". pandas.read_parquet and
    pyarrow's dataset reader take a table's schema from its first file; each file holds only the
    columns its own load wrote, so a property first seen in a later load is silently missing."""
    lake = tmp_path / "lake"
    first = [("track", {"user_id": "u", "event": "Clicked", "properties": {"a": 1}, "message_id": "c-1"})]
    later = [("track", {"user_id": "u", "event": "Clicked", "properties": {"a": 2, "b": "new"}, "message_id": "c-2"})]
    async with run_gateway(config(lake), data_dir=tmp_path) as gw:
        for calls in (first, later):
            await trio.to_thread.run_sync(lambda calls=calls: send_calls(gw.url, WRITE_KEY, calls))
            answer = (await gw.admin("POST", "/destinations/lake/flush?wait_secs=60")).json()
            assert answer["done"], answer
    rows = ds.dataset(lake / "web" / "clicked", format="parquet", partitioning="hive").to_table().to_pylist()
    assert {r["id"]: r.get("b") for r in rows} == {"c-1": None, "c-2": "new"}
