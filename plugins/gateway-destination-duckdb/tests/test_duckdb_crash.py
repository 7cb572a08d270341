"""``kill -9`` during DuckDB loads, then restart: every acknowledged message is in the
warehouse exactly once (the real daemon, the official client, a real DuckDB file)."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path

import duckdb
from gateway_warehouse.testing import WRITE_KEY, load_through_kills

TOKEN = "an-admin-token-of-enough-length"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_kill_9_during_loads_then_restart_loads_every_acknowledged_message_once(tmp_path: Path) -> None:
    admin = f"127.0.0.1:{free_port()}"
    path = tmp_path / "warehouse.duckdb"
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{free_port()}"
data_dir = "{tmp_path / "data"}"
graceful_shutdown_secs = 2

[admin]
listen = "{admin}"
token = "{TOKEN}"

[sources.web]
write_key = "{WRITE_KEY}"

[destinations.wh]
type = "duckdb"
path = "{path}"
sync_interval_secs = 0.05
batch_max_messages = 1500
retry_initial_secs = 0.05
retry_max_secs = 0.2
""")
    run = load_through_kills(config, f"http://{admin}", TOKEN, destination="wh", messages=6000, kills=3)

    print(f"kills: {run.kills}, during a load: {run.kills_mid_load}, acknowledged: {len(run.acknowledged)}")
    assert run.kills_mid_load >= 1, "no kill landed during a load"
    con = duckdb.connect(str(path), read_only=True)
    try:
        ids: Counter[str] = Counter()
        for table in ("clicked", "viewed_page", "identifies"):
            ids.update(i for (i,) in con.execute(f"SELECT id FROM web.{table}").fetchall())
        tracks = Counter(i for (i,) in con.execute("SELECT id FROM web.tracks").fetchall())
        users = con.execute("SELECT count(*), count(DISTINCT id) FROM web.users").fetchone()
    finally:
        con.close()
    duplicates = {i: n for i, n in ids.items() if n > 1}
    assert not duplicates, f"loaded more than once: {sorted(duplicates)[:10]}"
    missing = run.acknowledged - set(ids)
    assert not missing, f"{len(missing)} acknowledged messages never loaded, e.g. {sorted(missing)[:10]}"
    assert set(ids) <= run.acknowledged | run.failed  # nothing that was not sent
    assert set(tracks) == {i for i in ids if int(i.split("-")[1]) % 10} and max(tracks.values()) == 1
    assert users == (5, 5)  # identify every 10th message: users 0, 10, 20, 30, 40
