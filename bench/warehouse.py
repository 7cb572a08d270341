"""Warehouse loading benchmark: rows/s from the gateway's log into DuckDB and PostgreSQL, each
against the engine's own bulk load of the same rows into the same tables, in the same run; and
the daemon's peak RSS while it loads the backlog.

    .venv/bin/python bench/warehouse.py                       # 200k messages, both engines
    .venv/bin/python bench/warehouse.py --messages 1000000    # the 1M-message backlog
    .venv/bin/python bench/warehouse.py --engines duckdb --repeat 5

Per engine:

1. A gateway (``python -m gateway run``) with no destination ingests ``--messages`` realistic
   messages over HTTP (``/v1/batch`` of 500: 80% track of four events with 7 properties, 10%
   identify, 10% page, analytics.js-like context), then stops. That is the backlog.
2. The same gateway restarts with a warehouse destination, ``start_at`` before the backlog
   (it loads the whole log), ``sync_interval_secs = 0.1`` and the type's default batches. The
   load time runs from the daemon's ``gateway_started`` line to its cursor reaching the log's
   head with the warehouse released (admin ``/status``, polled every 0.1 s; DuckDB keeps its
   file open between a backlog's loads, and other processes can read it once it is closed).
   Peak RSS is the daemon's ``VmHWM`` then; its RSS, sampled at each poll, is also reported
   as the highest sample in each stretch of the backlog (0-10%, 10-25%, 25-50%, 50-75%,
   75-100% loaded) and how far apart those peaks are from 10% on (the target: flat). Its CPU
   time (user + system, every thread) says what the load cost whatever else the machine was
   doing (on a shared machine the wall-clock ratio swings with the load average).
3. Reference: the rows the gateway loaded are exported (PostgreSQL: ``COPY ... TO STDOUT``
   into memory; DuckDB: ``COPY ... TO`` CSV files), empty copies of the same tables are made
   (``LIKE ... INCLUDING ALL``: same primary keys; DuckDB: same columns), and the rows are bulk
   loaded into them in one transaction: PostgreSQL ``COPY FROM STDIN`` of the exported text,
   DuckDB ``COPY FROM`` the CSV files (then a checkpoint, as each of our loads ends with one).

Steps 2 and 3 run ``--repeat`` times on the one backlog (a new destination id, DuckDB file or
PostgreSQL schema each time), each reference right after its load so that both see the same
machine load; the report gives every run's ratio and the median run's figures.

The ratio is reference time / gateway time: the share of the engine's bare bulk-load speed
that the whole path (log read, JSON decode, mapping, staging, merge by id) reaches. The
targets from issue 14: >= 0.5x for both, and memory flat over a 1M-message backlog.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx

from gateway.testing import GatewayProcess

WRITE_KEY = "bench-warehouse-key"
TOKEN = "bench-warehouse-admin-token"
EVENTS = ["Product Viewed", "Product Added", "Checkout Started", "Order Completed"]


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def message(i: int) -> dict[str, Any]:
    context = {
        "library": {"name": "analytics.js", "version": "next-1.70.0"},
        "page": {
            "url": f"https://shop.example.com/p/{i % 300}",
            "path": f"/p/{i % 300}",
            "title": "Runner",
            "referrer": "https://www.google.com/",
        },
        "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0",
        "locale": "en-US",
        "campaign": {"source": "news", "medium": "email"},
    }
    base = {
        "messageId": f"bench-{i}",
        "userId": f"user-{i % 5000}",
        "context": context,
        "timestamp": "2026-05-01T10:00:00.050Z",
    }
    kind = i % 10
    if kind == 0:
        return {
            **base,
            "type": "identify",
            "traits": {
                "email": f"user{i % 5000}@example.com",
                "plan": "pro",
                "logins": i % 40,
                "company": {"name": "Acme", "size": 40},
            },
        }
    if kind == 1:
        return {
            **base,
            "type": "page",
            "name": "Product",
            "properties": {"url": context["page"]["url"], "path": context["page"]["path"]},
        }
    return {
        **base,
        "type": "track",
        "event": EVENTS[i % 4],
        "properties": {
            "product_id": f"p-{i % 500}",
            "price": 19.99 + i % 7,
            "quantity": i % 5,
            "category": "shoes",
            "name": "Runner",
            "currency": "EUR",
            "on_sale": i % 2 == 0,
        },
    }


def ingest(url: str, count: int) -> None:
    with httpx.Client(auth=(WRITE_KEY, ""), timeout=60) as client:
        for start in range(0, count, 500):
            batch = [message(i) for i in range(start, min(count, start + 500))]
            response = client.post(f"{url}/v1/batch", json={"batch": batch})
            response.raise_for_status()


def admin(url: str, path: str) -> Any:
    request = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def cpu_secs(pid: int) -> float:
    """The process's user + system CPU time so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def config_text(folder: Path, port: int, admin_port: int, destination: str = "") -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"
data_dir = "{folder / "data"}"
max_request_bytes = 16777216

[log]
synchronous = "normal"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[sources.web]
write_key = "{WRITE_KEY}"
{destination}
"""


def ingest_backlog(folder: Path, messages: int) -> tuple[Path, int, int, float]:
    """Step 1: a gateway with no destination takes ``messages`` and stops (the backlog)."""
    port, admin_port = _port(), _port()
    config = folder / "gateway.toml"
    config.write_text(config_text(folder, port, admin_port))
    with GatewayProcess(config) as gateway:
        started = time.monotonic()
        ingest(gateway.url, messages)
        return config, port, admin_port, time.monotonic() - started


def load_backlog(
    engine: str, config: Path, port: int, admin_port: int, target: str, destination: str
) -> dict[str, Any]:
    """Step 2: the gateway restarted with one warehouse destination (a new id, so its cursor
    starts before the backlog) loads the whole log into ``target``."""
    folder = config.parent
    config.write_text(
        config_text(
            folder,
            port,
            admin_port,
            f"""
[destinations.{destination}]
type = "{engine}"
{target}
start_at = "2000-01-01T00:00:00Z"
sync_interval_secs = 0.1
""",
        )
    )
    admin_url = f"http://127.0.0.1:{admin_port}"
    gateway = GatewayProcess(config)
    gateway.start()
    cpu_at_start = cpu_secs(gateway.proc.pid)  # type: ignore[union-attr]
    rss: list[tuple[float, int]] = []  # (share of the backlog loaded, VmRSS)
    try:
        started = time.monotonic()
        while True:
            status = admin(admin_url, "/status")
            wh = status["destinations"][destination]
            rss.append((wh["cursor"] / max(1, status["log"]["head_seq"]), gateway.rss_bytes()))
            # Loaded: past the log's head, and the warehouse released (DuckDB keeps the file open
            # between a backlog's loads; other processes can read the rows once it is closed).
            if wh["cursor"] >= status["log"]["head_seq"] and not wh["details"].get("held_open"):
                break
            if wh["last_error"]:
                print(f"  ({engine}: {wh['last_error']})", file=sys.stderr)
            time.sleep(0.1)
        load_secs = time.monotonic() - started
        peak_rss = vm_hwm(gateway.proc.pid)  # type: ignore[union-attr]
        cpu = cpu_secs(gateway.proc.pid) - cpu_at_start  # type: ignore[union-attr]
        details = wh["details"]
    finally:
        gateway.stop()
    phases: dict[str, float] = {}
    for line in gateway.lines:
        if '"warehouse_loaded"' in line:
            for name, secs in json.loads(line)["phase_secs"].items():
                phases[name] = phases.get(name, 0.0) + secs
    return {
        "phases": phases,
        "rss": rss,
        "load_secs": load_secs,
        "rows": details["rows_loaded"],
        "loads": details["loads"],
        "peak_rss": peak_rss,
        "cpu_secs": cpu,
    }


def run_engine(engine: str, messages: int, repeat: int, folder: Path, dsn: str | None) -> dict[str, Any]:
    """The backlog once, then ``repeat`` pairs of (the gateway's load, the bare bulk load of
    the same rows), each pair back to back so both run under the same machine load."""
    config, port, admin_port, ingest_secs = ingest_backlog(folder, messages)
    runs = []
    for k in range(1, repeat + 1):
        if engine == "duckdb":
            path = folder / f"warehouse{k}.duckdb"
            run = load_backlog(engine, config, port, admin_port, f'path = "{path}"', f"wh{k}")
            run["reference_secs"], run["reference_rows"] = reference_duckdb(path, folder)
        else:
            assert dsn is not None
            target = f'dsn = "{dsn}"\nschema = "bench{k}"'
            run = load_backlog(engine, config, port, admin_port, target, f"wh{k}")
            run["reference_secs"], run["reference_rows"] = reference_postgres(dsn, f"bench{k}")
        run["ratio"] = run["reference_secs"] / run["load_secs"]
        runs.append(run)
        print(
            f"  {engine} run {k}: load {run['load_secs']:.1f}s, bare bulk load {run['reference_secs']:.2f}s, "
            f"ratio {run['ratio']:.2f}x; the daemon's CPU {run['cpu_secs']:.1f}s "
            f"({run['cpu_secs'] / messages * 1e6:.0f} µs a message; load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
    median = sorted(runs, key=lambda run: run["ratio"])[len(runs) // 2]
    return {**median, "engine": engine, "messages": messages, "ingest_secs": ingest_secs, "runs": runs}


def reference_postgres(dsn: str, schema: str) -> tuple[float, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        tables = [
            t
            for (t,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", [schema]
            )
            if t != "_gateway_loads"  # the destination's load watermark, not rows of the warehouse
        ]
        exported: dict[str, bytes] = {}
        rows = 0
        for table in tables:
            buffer = bytearray()
            with conn.cursor().copy(f'COPY {schema}."{table}" TO STDOUT') as copy:
                for chunk in copy:
                    buffer += chunk
            exported[table] = bytes(buffer)
            rows += bytes(buffer).count(b"\n")
        conn.execute("DROP SCHEMA IF EXISTS ref CASCADE")
        conn.execute("CREATE SCHEMA ref")
        for table in tables:
            conn.execute(f'CREATE TABLE ref."{table}" (LIKE {schema}."{table}" INCLUDING ALL)')
        conn.commit()
        started = time.monotonic()
        with conn.transaction(), conn.cursor() as cur:
            for table in tables:
                data = exported[table]
                with cur.copy(f'COPY ref."{table}" FROM STDIN') as copy:
                    for offset in range(0, len(data), 1 << 20):
                        copy.write(data[offset : offset + (1 << 20)])
        return time.monotonic() - started, rows


def reference_duckdb(path: Path, folder: Path) -> tuple[float, int]:
    import duckdb

    con = duckdb.connect(str(path))
    try:
        tables = [
            t
            for (t,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'web' ORDER BY 1"
            ).fetchall()
        ]
        rows = 0
        con.execute("DROP SCHEMA IF EXISTS ref CASCADE")
        con.execute("CREATE SCHEMA ref")
        for table in tables:
            csv = folder / f"{table}.csv"
            con.execute(f"COPY web.\"{table}\" TO '{csv}' (HEADER)")
            con.execute(f'CREATE TABLE ref."{table}" AS SELECT * FROM web."{table}" LIMIT 0')
            rows += con.execute(f'SELECT count(*) FROM web."{table}"').fetchone()[0]  # type: ignore[index]
        con.execute("CHECKPOINT")
        started = time.monotonic()
        con.execute("BEGIN")
        for table in tables:
            con.execute(f"COPY ref.\"{table}\" FROM '{folder / f'{table}.csv'}' (HEADER)")
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
        return time.monotonic() - started, rows
    finally:
        con.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--engines", default="duckdb,postgres")
    parser.add_argument("--repeat", type=int, default=3, help="loads of the backlog, each with its reference")
    parser.add_argument("--keep", action="store_true", help="keep the temp folders")
    args = parser.parse_args()
    results = []
    for engine in args.engines.split(","):
        folder = Path(tempfile.mkdtemp(prefix=f"bench-warehouse-{engine}-"))
        try:
            if engine == "postgres":
                from gateway_destination_postgres.testing import TemporaryPostgres

                with TemporaryPostgres(durable=True) as pg:
                    result = run_engine(engine, args.messages, args.repeat, folder, pg.dsn)
            else:
                result = run_engine(engine, args.messages, args.repeat, folder, None)
        finally:
            if args.keep:
                print(f"kept {folder}")
            else:
                shutil.rmtree(folder, ignore_errors=True)
        results.append(result)
        report(result)
    return 0


def report(r: dict[str, Any]) -> None:
    # Both rates count the rows the tables hold at the end (the gateway's own count adds the
    # users rows each load merges again).
    ours = r["reference_rows"] / r["load_secs"]
    bare = r["reference_rows"] / r["reference_secs"]
    ratio = ours / bare
    ratios = ", ".join(f"{run['ratio']:.2f}x" for run in r["runs"])
    print(f"{r['engine']}: ratios of the {len(r['runs'])} runs: {ratios}; the median run:")
    print(
        f"{r['engine']}: {r['messages']:,} messages -> {r['reference_rows']:,} rows in {r['loads']} loads, "
        f"{r['load_secs']:.1f}s: {ours:,.0f} rows/s ({r['messages'] / r['load_secs']:,.0f} messages/s); "
        f"bare bulk load of the same {r['reference_rows']:,} rows: {r['reference_secs']:.2f}s, {bare:,.0f} rows/s; "
        f"ratio {ratio:.2f}x (target >= 0.5x: {'MET' if ratio >= 0.5 else 'MISSED'}); "
        f"peak RSS {r['peak_rss'] / 2**20:.0f} MiB (ingest took {r['ingest_secs']:.1f}s)"
    )
    phases = ", ".join(f"{name} {secs:.1f}s" for name, secs in r["phases"].items())
    print(f"  time in loads: {phases} (the rest: reading the log, waiting between loads)")
    cpu = sorted(run["cpu_secs"] for run in r["runs"])[len(r["runs"]) // 2]
    print(
        f"  the daemon's CPU time (user + system, from its start line to the end of the backlog; median of the runs): "
        f"{cpu:.1f}s, {cpu / r['messages'] * 1e6:.0f} µs a message"
    )
    marks = []
    for share in (0.1, 0.25, 0.5, 0.75, 1.0):
        at = next((rss for done, rss in r["rss"] if done >= share), r["rss"][-1][1])
        marks.append(f"{share:.0%} {at / 2**20:.0f} MiB")
    print(f"  RSS as the backlog loads: {', '.join(marks)}")
    peaks = stretch_peaks(r["rss"])
    line = ", ".join(f"{peak / 2**20:.0f}" for peak in peaks)
    print(f"  RSS peaks while the backlog loads 0-10%, 10-25%, 25-50%, 50-75%, 75-100%: {line} MiB")
    if all(peaks[1:]):
        print(
            f"  flatness from 10% on: highest / lowest peak {max(peaks[1:]) / min(peaks[1:]):.2f}, "
            f"75-100% / 10-25% {peaks[4] / peaks[1]:.2f} (flat: about 1)"
        )


def stretch_peaks(rss: list[tuple[float, int]]) -> list[int]:
    """The highest RSS sampled in each stretch of the backlog (0-10%, 10-25%, 25-50%, 50-75%,
    75-100% loaded; 0 where none was sampled). A single sample swings by a batch's memory with
    the moment it falls in a load (one or two batches in flight, or none); a stretch's peak
    does not, so the peaks say whether memory grows with the backlog."""
    starts = (0.1, 0.25, 0.5, 0.75)  # of the stretches after the first
    peaks = [0] * (len(starts) + 1)
    for done, value in rss:
        stretch = sum(done >= start for start in starts)
        peaks[stretch] = max(peaks[stretch], value)
    return peaks


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
