#!/usr/bin/env python3
"""Log growth benchmark: a destination that is down while its backlog grows.

It prints numbers; it is not a test and asserts nothing. In one run it:

1. optionally fills the log with ``--prefill N`` messages (the log's bulk writer, spread over the
   archive period) that the down destination has not got either (its cursor at 0), so the
   backlog starts at N;
2. starts the gateway (pinned to core 0) with a ``type = "http"`` destination whose URL refuses
   connections, and ``log.max_disk_bytes`` from ``--max-disk-bytes``;
3. drives ``/v1/batch`` of 100 UUIDv4-id events with wrk (core 1) for ``--duration`` seconds,
   sampling every second the gateway's RSS, the log's files on disk (database, WAL and shared
   memory) and the backlog;
4. kills the gateway with SIGKILL while the backlog stands, starts it again and measures how
   long until it answers a ``/v1/track`` with 200.

The report: RSS after the warm-up against its maximum and the end (issue 19: flat within 10%),
the largest size on disk against ``max_disk_bytes`` (WAL included), and the restart time
(target: within 5 s; recovery must not scan the log).

    .venv/bin/python bench/log_growth.py [--prefill 2000000] [--duration 120] [--max-disk-bytes 4G]
    .venv/bin/python bench/log_growth.py --duration 1800 --rate-share 0.5   # issue 19's 30-minute run

With ``--rate-share F`` below 1, a 10 s probe at full speed first measures the most the gateway
takes, then each wrk connection pauses between requests so that the load offers F of it.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import http.client
import json
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from _harness import WRITE_KEY, Scenario, check_tools, free_port, gateway_config, gateway_server, run_wrk
from _prefill import prefill

from gateway.config import LogConfig

TARGET_RSS_GROWTH = 0.10
TARGET_RESTART_SECS = 5.0


def size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def disk_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in data_dir.glob("log.sqlite3*") if p.exists())


def backlog(data_dir: Path, destination: str) -> int:
    conn = sqlite3.connect(f"file:{data_dir / 'log.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        head = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
        row = conn.execute("SELECT seq FROM cursors WHERE destination = ?", (destination,)).fetchone()
        return int(head - (row[0] if row else head))
    finally:
        conn.close()


class Sampler:
    """Every second: (seconds since start, RSS, bytes on disk), in a thread of this process."""

    def __init__(self, pid: int, data_dir: Path) -> None:
        self.samples: list[tuple[float, int, int]] = []
        self._pid, self._data_dir = pid, data_dir
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                sample = (time.monotonic() - self._started, rss_bytes(self._pid), disk_bytes(self._data_dir))
            except OSError:
                continue
            self.samples.append(sample)


def track(url: str) -> int:
    """One POST /v1/track; its status (0: no answer)."""
    parts = urlsplit(url)
    body = json.dumps({"userId": "u", "event": "restart probe", "type": "track"})
    auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    try:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
        conn.request("POST", "/v1/track", body, {"Content-Type": "application/json", "Authorization": f"Basic {auth}"})
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prefill", type=int, default=0, metavar="N", help="messages in the backlog at the start")
    parser.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument(
        "--max-disk-bytes", type=size, default=size("8G"), help="log.max_disk_bytes (default 8G; K/M/G suffixes)"
    )
    parser.add_argument(
        "--rate-share", type=float, default=1.0, help="offer this share of the measured maximum rate (default 1)"
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the temp data_dir")
    args = parser.parse_args(argv)
    missing = check_tools("log_growth.py", False)
    if missing is not None:
        return missing

    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-growth-"))
    data_dir = tmp / "data"
    config_path = tmp / "gateway.toml"
    down_url = f"http://127.0.0.1:{free_port()}/refused"  # nothing listens there
    config_path.write_text(
        gateway_config(data_dir, "none", "full", max_disk_bytes=args.max_disk_bytes)
        + f'\n[destinations.down]\ntype = "http"\nurl = "{down_url}"\n'
    )
    print("log growth benchmark")
    print(
        f"  python {sys.version.split()[0]}, {os.cpu_count()} cores; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; max_disk_bytes {args.max_disk_bytes / 2**30:.2f} GiB"
    )
    try:
        # For scale: how long a gateway takes to answer on an empty log on this machine now.
        empty_dir = tmp / "empty"
        empty_config = tmp / "empty.toml"
        empty_config.write_text(gateway_config(empty_dir, "none", "full"))
        empty = gateway_server(empty_config)
        started = time.monotonic()
        empty.start(timeout=120)
        while not track(empty.url) and time.monotonic() - started < 120:
            time.sleep(0.05)
        print(f"  for scale: a gateway on an empty log answered after {time.monotonic() - started:.2f} s", flush=True)
        empty.stop()
        if args.prefill:
            print(f"pre-filling {args.prefill:,} messages the destination has not got ...", flush=True)
            stored, seconds = prefill(data_dir, args.prefill, "uuid4", LogConfig(max_disk_bytes=args.max_disk_bytes))
            conn = sqlite3.connect(data_dir / "log.sqlite3", isolation_level=None)
            conn.execute(
                "INSERT INTO cursors (destination, seq, start_seq, updated_at) VALUES ('down', 0, 0, ?)",
                (int(time.time() * 1000),),
            )
            conn.close()
            print(f"  {stored:,} in {seconds:.0f} s; {disk_bytes(data_dir) / 2**30:.2f} GiB on disk", flush=True)
        return run(args, config_path, data_dir)
    finally:
        if args.keep_data:
            print(f"  data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, config_path: Path, data_dir: Path) -> int:
    gateway = gateway_server(config_path)
    started = time.monotonic()
    gateway.start(timeout=120)
    print(f"gateway up in {time.monotonic() - started:.2f} s; backlog {backlog(data_dir, 'down'):,}", flush=True)
    assert gateway.proc is not None
    scenario = Scenario("batch", "/v1/batch 100, uuid4", "batch.lua", args.connections, 1, message_ids="uuid4")
    if args.rate_share < 1:
        probe, _ = run_wrk(gateway.url, scenario, 10, f"p{os.getpid()}")
        most = probe["requests"] / (probe["duration_us"] / 1e6)  # requests/s at full speed
        # Each connection sends a request every connections / (share x most) seconds.
        pause_ms = max(1.0, args.connections / (args.rate_share * most) * 1000 - probe["mean_us"] / 1000)
        scenario = dataclasses.replace(scenario, delay_ms=round(pause_ms, 1))
        print(
            f"probe: {most * 100:,.0f} events/s at full speed; offering {args.rate_share:.0%} of it "
            f"({pause_ms:.1f} ms between requests on each of {args.connections} connections)",
            flush=True,
        )
    try:
        with Sampler(gateway.proc.pid, data_dir) as sampler:
            data, _ = run_wrk(gateway.url, scenario, args.duration, f"g{os.getpid()}")
        grown = backlog(data_dir, "down")
        events = data["requests"] * 100
        print(
            f"load: {events / (data['duration_us'] / 1e6):,.0f} events/s offered and answered "
            f"({data['status_errors']:,} non-2xx: 503 once the log is full); backlog now {grown:,}"
        )
        samples = sampler.samples
        warm = [s for s in samples if s[0] >= 5] or samples
        first, peak, last = warm[0][1], max(s[1] for s in warm), warm[-1][1]
        growth = peak / first - 1
        print(
            f"RSS: {first / 2**20:,.0f} MiB after 5 s, {peak / 2**20:,.0f} MiB at most, {last / 2**20:,.0f} MiB "
            f"at the end: +{growth:.1%} (target <= {TARGET_RSS_GROWTH:.0%}: "
            f"{'MET' if growth <= TARGET_RSS_GROWTH else 'MISSED'})"
        )
        most = max(s[2] for s in samples)
        print(
            f"disk: {most / 2**20:,.1f} MiB at most (database, WAL, shm files), bound "
            f"{args.max_disk_bytes / 2**20:,.1f} MiB: {'within' if most <= args.max_disk_bytes else 'OVER'} "
            f"({(most - args.max_disk_bytes) / 2**20:+,.1f} MiB)"
        )
        every = max(1, len(samples) // 30)
        print(
            f"  every {every}th sample (s, RSS MiB, disk GiB): "
            + ", ".join(f"{t:.0f} {r / 2**20:.0f} {d / 2**30:.2f}" for t, r, d in samples[::every])
        )
    finally:
        os.kill(gateway.proc.pid, signal.SIGKILL)
        gateway.proc.wait(10)
    print(f"killed with SIGKILL; backlog {backlog(data_dir, 'down'):,}; starting again ...", flush=True)
    again = gateway_server(config_path)
    started = time.monotonic()
    again.start(timeout=120)
    up = time.monotonic() - started
    # Any answer counts as serving: a log at max_disk_bytes answers 503 log_full, rightly.
    status = 0
    while not status and time.monotonic() - started < 120:
        status = track(again.url)
        if not status:
            time.sleep(0.05)
    served = time.monotonic() - started
    print(
        f"restart: listening after {up:.2f} s, first /v1/track answered ({status}) after {served:.2f} s "
        f"(target <= {TARGET_RESTART_SECS:g} s: {'MET' if status and served <= TARGET_RESTART_SECS else 'MISSED'})"
    )
    again.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
