#!/usr/bin/env python3
"""Console tap benchmark: ingest throughput with three Source Debugger streams open against
the same gateway with none (issue 15: at least 0.95x).

It prints numbers; it is not a test and asserts nothing. In one run it:

1. starts ``python -m gateway run`` pinned to core 0 (a temp data_dir, durable acks, the admin
   listener on, a ``file`` destination by default so delivery runs too);
2. drives ``POST /v1/batch`` of 100 events with wrk pinned to core 1, in back-to-back pairs:
   one run with the console closed, one with ``--streams`` (default 3) clients reading
   ``GET /sources/web/stream`` the whole run (they read as fast as they can, on core 1 with
   wrk, as browsers would); the order inside a pair alternates, so drift over minutes cancels;
3. checks after each run that the log stored every acknowledged event;
4. prints events/s of each run, each pair's ratio (streams / closed), their median against the
   0.95 target, the same ratio from the gateway's CPU per event (less sensitive to other load
   on a shared machine), and what the streams received (calls, rows lost to gaps).

    .venv/bin/python bench/console_tap.py [--duration 10] [--repeat 5] [--streams 3]

Needs wrk (``apt-get install -y wrk``) and ``taskset`` (util-linux). See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import statistics
import tempfile
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from _harness import (
    LOADGEN_CORE,
    SERVER_CORE,
    LogReader,
    Result,
    Scenario,
    _measure,
    add_load_arguments,
    check_load_arguments,
    free_port,
    gateway_config,
    gateway_server,
    stored_status,
    wrk_version,
)

TARGET_RATIO = 0.95
ADMIN_TOKEN = "bench-admin-token-0123456789"
_GAP = re.compile(rb'event: gap\ndata: \{"dropped":(\d+)\}')


@dataclass
class StreamReader:
    """One console tab: reads a source's stream until stopped, counting calls and gaps."""

    admin: tuple[str, int]
    calls: int = 0
    dropped: int = 0
    bytes: int = 0
    connected: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    error: str = ""

    def run(self) -> None:
        try:
            with socket.create_connection(self.admin, timeout=1.0) as sock:
                sock.sendall(
                    b"GET /sources/web/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n"
                    b"Authorization: Bearer " + ADMIN_TOKEN.encode() + b"\r\n\r\n"
                )
                carry = b""
                while not self.stop.is_set():
                    try:
                        chunk = sock.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        self.error = "the stream ended"
                        return
                    if not self.connected.is_set() and b"200" in chunk.split(b"\r\n", 1)[0]:
                        self.connected.set()
                    self.bytes += len(chunk)
                    data = carry + chunk
                    # Count whole events only (they end with a blank line); keep the rest for later.
                    cut = data.rfind(b"\n\n") + 2
                    head, carry = data[:cut], data[cut:]
                    self.calls += head.count(b"event: call\n")
                    self.dropped += sum(int(n) for n in _GAP.findall(head))
        except OSError as error:
            self.error = f"{type(error).__name__}: {error}"


def start_readers(admin: tuple[str, int], count: int) -> tuple[list[StreamReader], list[threading.Thread]]:
    readers = [StreamReader(admin) for _ in range(count)]
    threads = [threading.Thread(target=reader.run, daemon=True) for reader in readers]
    for thread in threads:
        thread.start()
    for reader in readers:
        if not reader.connected.wait(10):
            raise RuntimeError(f"a stream did not connect: {reader.error or 'no answer'}")
    return readers, threads


def metrics_value(url: str, name: str) -> float:
    """A counter from the gateway's /metrics (on its HTTP listener)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_load_arguments(parser, baseline="(unused here: both sides are the gateway)")
    parser.add_argument("--streams", type=int, default=3, help="console streams open in the streaming runs")
    parser.set_defaults(repeat=5)
    args = parser.parse_args(argv)
    missing = check_load_arguments(parser, args, "console_tap.py")
    if missing is not None:
        return missing
    os.sched_setaffinity(0, {int(LOADGEN_CORE)})  # the stream readers are load, like wrk

    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-console-"))
    data_dir = tmp / "data"
    admin_port = free_port()
    config_path = tmp / "gateway.toml"
    config_path.write_text(
        gateway_config(data_dir, args.destination, args.synchronous)
        + f'\n[admin]\nlisten = "127.0.0.1:{admin_port}"\ntoken = "{ADMIN_TOKEN}"\n'
    )
    admin = ("127.0.0.1", admin_port)
    batch = Scenario(
        "batch", f"/v1/batch 100 events, {args.connections} conn", "batch.lua", args.connections, args.threads
    )
    print(f"console tap: {platform.node()}, {os.cpu_count()} cores, {wrk_version()[0] if wrk_version() else 'wrk'}")
    print(f"  gateway on core {SERVER_CORE}, wrk and {args.streams} stream readers on core {LOADGEN_CORE}")
    gateway = gateway_server(config_path)
    log = LogReader(data_dir / "log.sqlite3")
    pairs: list[tuple[Result, Result, list[StreamReader]]] = []
    problems: list[str] = []
    try:
        gateway.start()
        for repeat in range(args.repeat):
            runs: dict[str, Result] = {}
            readers: list[StreamReader] = []
            for mode in ("closed", "streams") if repeat % 2 == 0 else ("streams", "closed"):
                head = log.settle()
                log.catch_up(head)
                threads: list[threading.Thread] = []
                if mode == "streams":
                    readers, threads = start_readers(admin, args.streams)
                gateway.name = f"{mode}"
                try:
                    result = _measure(gateway, batch, repeat, args, True, log, head)
                finally:
                    for reader in readers if mode == "streams" else []:
                        reader.stop.set()
                    for thread in threads:
                        thread.join(5)
                ok, note = stored_status(result, "events")
                if not ok:
                    problems.append(f"{mode} run {repeat + 1}: {note}")
                runs[mode] = result
            pairs.append((runs["closed"], runs["streams"], readers))
        dropped_total = metrics_value(gateway.url, "gateway_console_tap_dropped_total")
    finally:
        code = gateway.stop()
        if not args.keep_data:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"{'pair':>4}  {'closed events/s':>16}  {'streams events/s':>17}  {'ratio':>6}  "
        f"{'CPU us/event closed':>20}  {'streams':>8}  {'ratio':>6}  calls streamed per reader (rows lost to gaps)"
    )
    ratios, cpu_ratios = [], []
    for index, (closed, streaming, readers) in enumerate(pairs, 1):
        ratio = streaming.events_s / closed.events_s
        ratios.append(ratio)
        cpu_closed = closed.server_cpu / closed.acked_events * 1e6
        cpu_streams = streaming.server_cpu / streaming.acked_events * 1e6
        cpu_ratios.append(cpu_closed / cpu_streams)  # > 1: streaming costs less CPU per event
        per_reader = ", ".join(f"{r.calls:,} ({r.dropped:,})" for r in readers)
        print(
            f"{index:>4}  {closed.events_s:>16,.0f}  {streaming.events_s:>17,.0f}  {ratio:>5.2f}x  "
            f"{cpu_closed:>20.1f}  {cpu_streams:>8.1f}  {cpu_closed / cpu_streams:>5.2f}x  {per_reader}"
        )
    median = statistics.median(ratios)
    verdict = "MET" if median >= TARGET_RATIO else "NOT MET"
    print()
    print(f"median ratio streams/closed: {median:.3f}x (target >= {TARGET_RATIO}x: {verdict})")
    print(
        f"median CPU-bound ratio (closed / streams gateway CPU per event, the rate the streams would allow "
        f"on a saturated core): {statistics.median(cpu_ratios):.3f}x"
    )
    print(f"gateway_console_tap_dropped_total at the end: {dropped_total:,.0f}")
    print(f"gateway exit code {code}")
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
