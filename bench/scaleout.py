"""Scale-out benchmark (issue 18): the Redis engine against SQLite, and two gateways against one.

1. CPU per acknowledged event of one gateway process, Redis engine against SQLite engine, on the
   same traffic (wrk, ``/v1/batch`` of 100, no destination: the ingest path alone). CPU is the
   gateway's utime + stime from /proc/<pid>/stat over the run, all threads. Target: <= 1.3x.
2. Events/s of two gateways on one Redis (``server.reuse_port``, one listen address) against one,
   each layout reported with the cores it used. The load generator (wrk) and Redis are pinned to
   the last core, the gateways to the others.

Prints numbers; not a test. Runs alternate (sqlite, redis, sqlite, redis...) so the machine's
drift stays out of the ratios, which are of medians within this one run (see bench/README.md).

    .venv/bin/python bench/scaleout.py [--duration 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _harness import WRITE_KEY, Scenario, Server, _proc_cpu, free_port, gateway_url, run_wrk

from tests.redis_server import RedisServer

BATCH = Scenario("batch", "/v1/batch 100 events, 32 conn", "batch.lua", 32, 1)
LOADGEN = str(os.cpu_count() - 1) if (os.cpu_count() or 1) > 1 else "0"


def config(data_dir: Path, engine: str, redis_url: str, listen: str, reuse_port: bool) -> Path:
    text = f"""
[server]
listen = "{listen}"
data_dir = "{data_dir}"
graceful_shutdown_secs = 5
reuse_port = {"true" if reuse_port else "false"}

[log]
engine = "{engine}"
url = "{redis_url}"
synchronous = "full"

[sources.web]
write_key = "{WRITE_KEY}"
"""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "gateway.toml"
    path.write_text(text)
    return path


def gateway(config_path: Path, core: str) -> Server:
    argv = ["taskset", "-c", core, sys.executable, "-m", "gateway", "run", "--config", str(config_path)]
    return Server(f"gateway@{core}", argv, gateway_url).start()


def measure(servers: list[Server], duration: int) -> tuple[float, float, float]:
    """One wrk run at the servers' (shared) address: (events/s acknowledged, gateway CPU seconds
    per 1,000 events, gateway CPU seconds per second)."""
    pids = [s.proc.pid for s in servers if s.proc is not None]
    run_wrk(servers[0].url, BATCH, 2, f"w{uuid.uuid4().hex[:8]}")  # warm-up, not counted
    before = sum(_proc_cpu(p) for p in pids)
    result, _ = run_wrk(servers[0].url, BATCH, duration, f"r{uuid.uuid4().hex[:8]}")
    cpu = sum(_proc_cpu(p) for p in pids) - before
    seconds = result["duration_us"] / 1e6
    events = (result["requests"] - result["status_errors"]) * result["events_per_request"]
    return events / seconds, cpu / events * 1000 * 1000, cpu / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    gateway_cores = [str(c) for c in range(cores - 1)] or ["0"]
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        root = Path(tmp)
        redis_server = RedisServer(root / "redis").start()
        subprocess.run(["taskset", "-pc", LOADGEN, str(redis_server.proc.pid)], check=True, capture_output=True)
        try:
            # -- 1. CPU per acknowledged event: Redis engine against SQLite ----------------------
            per_event: dict[str, list[float]] = {"sqlite": [], "redis": []}
            rates: dict[str, list[float]] = {"sqlite": [], "redis": []}
            servers = {
                engine: gateway(config(root / engine, engine, redis_server.url, "127.0.0.1:0", False), gateway_cores[0])
                for engine in ("sqlite", "redis")
            }
            try:
                for _ in range(args.repeat):
                    for engine in ("sqlite", "redis"):
                        rate, us, _ = measure([servers[engine]], args.duration)
                        per_event[engine].append(us)
                        rates[engine].append(rate)
                        print(f"  {engine:6} {rate:9,.0f} events/s  {us:6.1f} µs CPU per event", flush=True)
            finally:
                for server in servers.values():
                    server.stop()
            sqlite_us, redis_us = statistics.median(per_event["sqlite"]), statistics.median(per_event["redis"])
            ratio = redis_us / sqlite_us
            print(
                f"\n1. CPU per acknowledged event, one gateway on core {gateway_cores[0]} (medians of {args.repeat}):"
                f" SQLite {sqlite_us:.1f} µs, Redis {redis_us:.1f} µs -> {ratio:.2f}x "
                f"(target <= 1.3x: {'MET' if ratio <= 1.3 else 'MISSED'}); events/s "
                f"SQLite {statistics.median(rates['sqlite']):,.0f}, Redis {statistics.median(rates['redis']):,.0f}\n"
            )

            # -- 2. Two gateways on one Redis against one ---------------------------------------
            port = free_port()
            layouts = [("1 gateway", [gateway_cores[0]])]
            layouts.append(("2 gateways, one core", [gateway_cores[0]] * 2))
            if len(gateway_cores) >= 2:
                layouts.append(("2 gateways, two cores", gateway_cores[:2]))
            else:
                layouts.append((f"2 gateways, cores 0 and {LOADGEN} (shared with wrk and Redis)", ["0", LOADGEN]))
            figures: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in layouts}
            for _ in range(args.repeat):
                for name, used in layouts:
                    group = [
                        gateway(config(root / f"g{i}", "redis", redis_server.url, f"127.0.0.1:{port}", True), core)
                        for i, core in enumerate(used)
                    ]
                    try:
                        rate, _, busy = measure(group, args.duration)
                    finally:
                        for server in group:
                            server.stop()
                    figures[name].append((rate, busy))
                    print(f"  {name:55} {rate:9,.0f} events/s, gateways busy {busy:.2f} cores", flush=True)
            base = statistics.median(r for r, _ in figures[layouts[0][0]])
            print(f"\n2. Redis engine, wrk and Redis on core {LOADGEN} (medians of {args.repeat}):")
            for name, used in layouts:
                rate = statistics.median(r for r, _ in figures[name])
                busy = statistics.median(b for _, b in figures[name])
                print(
                    f"   {name:55} cores {','.join(used):7} {rate:9,.0f} events/s  {rate / base:.2f}x  "
                    f"(gateway CPU {busy:.2f} cores)"
                )
        finally:
            redis_server.stop()


if __name__ == "__main__":
    main()
