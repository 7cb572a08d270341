#!/usr/bin/env python3
"""Ingest benchmark: the gateway against a bare hypercorn (trio) app, under the same wrk load.

It prints numbers; it is not a test and asserts nothing. In one run it:

1. starts ``bench/bare_app.py`` under ``hypercorn --worker-class trio`` pinned to core 0, and
   drives it with wrk pinned to core 1: single-event POST /v1/track, then POST /v1/batch of 100,
   then /v1/track over one connection;
2. does the same against ``python -m gateway run`` (a temp data_dir, durable acks, a ``file``
   destination by default so delivery runs too);
3. after each gateway run, counts the rows the log stored (``messages`` in
   ``<data_dir>/log.sqlite3``) and compares them with the 2xx responses wrk counted, so the
   throughput numbers are for events that were really written;
4. prints req/s, events/s, p50/p99 latency, the gateway/bare ratios and the targets.

Every event has a unique messageId (see bench/common.lua), so deduplication cannot skip the write.

    .venv/bin/python bench/ingest.py [--duration 10] [--connections 32]

Needs wrk (``apt-get install -y wrk``) and ``taskset`` (util-linux). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
WRITE_KEY = "bench-write-key"

SERVER_CORE = "0"
LOADGEN_CORE = "1"

TARGET_TRACK_RATIO = 0.6  # gateway req/s >= 0.6 x bare on single events, durable acks
TARGET_BATCH_EPS = 40_000  # events/s on /v1/batch of 100
TARGET_P99_MS = 5.0  # one connection, single event, ack latency

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- servers ------------------------------------------------------------------------------------


class Server:
    """A server subprocess whose URL is learnt from its output; output is kept for the report."""

    def __init__(self, name: str, argv: list[str], url_from_line, cwd: Path = ROOT) -> None:
        self.name = name
        self.argv = argv
        self._url_from_line = url_from_line
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.lines: list[str] = []

    def start(self, timeout: float = 30.0) -> Server:
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        started = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if not started.is_set():
                    url = self._url_from_line(line)
                    if url:
                        self.url = url
                        started.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not started.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not start:\n" + "".join(self.lines[-40:]))
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def cpu_seconds(self) -> float:
        """user+system CPU of the server and all its descendants (hypercorn spawns a worker)."""
        assert self.proc is not None
        return sum(_proc_cpu(pid) for pid in _descendants(self.proc.pid))

    def main_thread_cpu_seconds(self) -> float:
        """CPU of the main threads (the event loops) of the server's processes; the rest is
        worker threads (the gateway's SQLite commits, reads, file writes)."""
        assert self.proc is not None
        return sum(_proc_cpu(pid, f"task/{pid}/stat") for pid in _descendants(self.proc.pid))


def _descendants(pid: int) -> list[int]:
    pids = [pid]
    for current in pids:
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                pids.extend(int(c) for c in children)
        except OSError:
            pass
    return pids


def _proc_cpu(pid: int, which: str = "stat") -> float:
    try:
        stat = Path(f"/proc/{pid}/{which}").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def hypercorn_url(line: str) -> str:
    match = re.search(r"Running on (http://\S+)", line)
    return match.group(1) if match else ""


def gateway_url(line: str) -> str:
    if '"gateway_started"' not in line:
        return ""
    return json.loads(line)["listen"][0]


def bare_server() -> Server:
    argv = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "hypercorn", "--worker-class", "trio",
            "--bind", "127.0.0.1:0", str(BENCH / "bare_app.py") + ":app"]
    return Server("bare", argv, hypercorn_url)


def gateway_config(data_dir: Path, destination: str, synchronous: str) -> str:
    text = f"""
[server]
listen = "127.0.0.1:0"
data_dir = "{data_dir}"
graceful_shutdown_secs = 5

[log]
synchronous = "{synchronous}"

[sources.web]
write_key = "{WRITE_KEY}"
"""
    if destination == "file":
        # The reference config's delivery defaults (batches of 500, fsync on).
        text += f"""
[destinations.archive]
type = "file"
path = "{data_dir / 'archive'}"
"""
    return text


def gateway_server(config_path: Path) -> Server:
    argv = ["taskset", "-c", SERVER_CORE, sys.executable, "-m", "gateway", "run", "--config", str(config_path)]
    return Server("gateway", argv, gateway_url)


# -- the ingest log -----------------------------------------------------------------------------


class LogReader:
    """Read-only look at the gateway's SQLite log while it runs (WAL allows it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str, args: tuple = ()) -> tuple:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, args).fetchone()
        finally:
            conn.close()

    def head(self) -> int:
        return self._query("SELECT coalesce(max(seq), 0) FROM messages")[0]

    def rows_after(self, seq: int) -> int:
        return self._query("SELECT count(*) FROM messages WHERE seq > ?", (seq,))[0]

    def wal_bytes(self) -> int:
        try:
            return Path(f"{self.path}-wal").stat().st_size
        except OSError:
            return 0

    def cursor(self, destination: str) -> int | None:
        row = self._query("SELECT seq FROM cursors WHERE destination = ?", (destination,))
        return row[0] if row else None

    def settle(self, quiet_secs: float = 0.3, timeout: float = 15.0) -> int:
        """Wait until no more rows arrive (requests wrk abandoned at its deadline still commit)."""
        deadline = time.monotonic() + timeout
        last, since = self.head(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.head()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_secs:
                break
        return last


# -- wrk ----------------------------------------------------------------------------------------


@dataclass
class Scenario:
    key: str
    title: str
    script: str
    connections: int
    threads: int


@dataclass
class Result:
    server: str
    scenario: Scenario
    wrk: dict
    server_cpu: float  # seconds, all threads and child processes
    main_cpu: float  # seconds, the server's main thread (the event loop)
    wrk_cpu: float  # seconds
    stored: int | None = None  # rows the log gained (gateway only)
    log_rows_before: int = 0  # head seq of the log when the run started (gateway only)
    wal_bytes_after: int = 0  # size of log.sqlite3-wal when the run ended (gateway only)
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.wrk["duration_us"] / 1e6

    @property
    def ok_requests(self) -> int:
        return self.wrk["requests"] - self.wrk["status_errors"]

    @property
    def acked_events(self) -> int:
        return self.ok_requests * self.wrk["events_per_request"]

    @property
    def req_s(self) -> float:
        return self.ok_requests / self.seconds

    @property
    def events_s(self) -> float:
        return self.acked_events / self.seconds

    @property
    def socket_errors(self) -> int:
        w = self.wrk
        return w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"]


def run_wrk(url: str, scenario: Scenario, duration: int, run_id: str) -> tuple[dict, float]:
    """Run wrk pinned to the load-generator core; returns its result line and its CPU seconds."""
    argv = ["taskset", "-c", LOADGEN_CORE, "wrk", f"-t{scenario.threads}", f"-c{scenario.connections}",
            f"-d{duration}s", "--timeout", "10s", "-s", str(BENCH / scenario.script), url]
    env = {**os.environ, "BENCH_WRITE_KEY": WRITE_KEY, "BENCH_RUN_ID": run_id}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line.removeprefix("BENCH_RESULT ")), cpu
    raise RuntimeError(f"wrk gave no result (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def drive(server: Server, scenarios: list[Scenario], args: argparse.Namespace,
          log: LogReader | None) -> list[Result]:
    results = []
    for scenario, repeat in [(sc, i) for sc in scenarios for i in range(args.repeat)]:
        duration = args.duration
        if args.warmup > 0 and repeat == 0:
            run_wrk(server.url, scenario, args.warmup, f"w{uuid.uuid4().hex[:10]}")
        head = log.settle() if log else 0
        profiling = args.profile and server.name == "gateway" and repeat == 0
        profiler = start_profiler(server, scenario, args) if profiling else None
        cpu0, main0 = server.cpu_seconds(), server.main_thread_cpu_seconds()
        data, wrk_cpu = run_wrk(server.url, scenario, duration, uuid.uuid4().hex[:12])
        cpu1, main1 = server.cpu_seconds(), server.main_thread_cpu_seconds()
        result = Result(server.name, scenario, data, cpu1 - cpu0, main1 - main0, wrk_cpu)
        if profiler is not None:
            result.notes += finish_profiler(*profiler)
        if log:
            log.settle()
            result.stored = log.rows_after(head)
            result.log_rows_before = head
            result.wal_bytes_after = log.wal_bytes()
        results.append(result)
        print(f"  {scenario.title:<34} {server.name:<8} {result.req_s:>9,.0f} req/s "
              f"{result.events_s:>10,.0f} events/s  p99 {data['p99_us'] / 1000:.2f} ms", flush=True)
    return results


# -- profiling (--profile) ----------------------------------------------------------------------


def start_profiler(server: Server, scenario: Scenario, args: argparse.Namespace):
    """py-spy on the gateway for one measured run, on the load generator's core."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(args.profile) / f"gateway-{scenario.key}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    assert server.proc is not None
    argv = ["taskset", "-c", LOADGEN_CORE, py_spy, "record", "--pid", str(server.proc.pid),
            "--duration", str(max(1, args.duration - 1)), "--rate", "200", "--nonblocking",
            "--threads", "--format", "raw", "--output", str(out)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, out


def finish_profiler(proc: subprocess.Popen[str], out: Path) -> list[str]:
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return ["py-spy did not finish"]
    if proc.returncode != 0 or not out.exists():
        return [f"py-spy failed: {output.strip()[-300:]}"]
    return summarize_stacks(out)


def summarize_stacks(path: Path, top: int = 12) -> list[str]:
    """The busiest functions of a py-spy raw (collapsed) profile: self time of the main thread
    and of the worker threads, as shares of all samples."""
    site = re.compile(r"\S*/site-packages/|\S*/work/main/|\S*/lib/python3\.\d+/")
    totals = {"main": {}, "threads": {}}
    count = {"main": 0, "threads": 0}
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        if len(frames) < 2:  # a thread with no Python frame (idle or in native code only)
            continue
        kind = "main" if "MainThread" in frames[0] else "threads"
        count[kind] += int(n)
        leaf = site.sub("", re.sub(r":\d+\)$", ")", frames[-1]))
        totals[kind][leaf] = totals[kind].get(leaf, 0) + int(n)
    all_samples = sum(count.values()) or 1
    lines = [f"py-spy: {path} ({all_samples} samples; main thread {count['main'] / all_samples:.0%}, "
             f"worker threads {count['threads'] / all_samples:.0%})"]
    for kind in ("main", "threads"):
        ranked = sorted(totals[kind].items(), key=lambda item: -item[1])[:top]
        lines.append(f"  top self time, {'main thread' if kind == 'main' else 'worker threads'}:")
        lines += [f"    {n / all_samples:6.1%}  {name}" for name, n in ranked]
    return lines


# -- report -------------------------------------------------------------------------------------


def _ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def print_table(results: list[Result]) -> None:
    header = (f"{'scenario':<34} {'server':<8} {'req/s':>9} {'events/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'max ms':>8} {'2xx':>8} {'non-2xx':>7} {'sockerr':>7} {'srv CPU':>7} {'main':>5} {'CPU us/ev':>9} "
              f"{'wrk CPU':>7}")
    print(header)
    print("-" * len(header))
    for r in results:
        w = r.wrk
        cpu_share = r.server_cpu / r.seconds
        cpu_per_event = r.server_cpu / r.acked_events * 1e6 if r.acked_events else float("nan")
        print(f"{r.scenario.title:<34} {r.server:<8} {r.req_s:>9,.0f} {r.events_s:>10,.0f} "
              f"{_ms(w['p50_us']):>8} {_ms(w['p99_us']):>8} {_ms(w['max_us']):>8} {r.ok_requests:>8,} "
              f"{w['status_errors']:>7,} {r.socket_errors:>7,} {cpu_share:>7.0%} {r.main_cpu / r.seconds:>5.0%} "
              f"{cpu_per_event:>9.0f} "
              f"{r.wrk_cpu / r.seconds:>7.0%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--threads", type=int, default=1,
                        help="wrk threads (default 1: the load generator has one core)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measured runs per server and scenario; the table shows the median by "
                             "req/s (default 1)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of unmeasured load before each run (default 2; 0 = none)")
    parser.add_argument("--destination", choices=("file", "none"), default="file",
                        help="gateway destination: a file destination so delivery runs too (default), or none")
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full",
                        help='the log\'s SQLite synchronous setting (default "full": acks survive power loss)')
    parser.add_argument("--only", choices=("all", "gateway"), default="all",
                        help="run the bare baseline too (default) or only the gateway")
    parser.add_argument("--profile", metavar="DIR",
                        help="run py-spy on the gateway during each measured run (pip install py-spy); "
                             "raw stacks go to DIR, a summary is printed")
    parser.add_argument("--keep-data", action="store_true", help="keep the gateway's temp data_dir")
    args = parser.parse_args(argv)

    if shutil.which("wrk") is None:
        print("bench/ingest.py: wrk is not installed. Install it with:\n\n    apt-get install -y wrk\n",
              file=sys.stderr)
        return 2
    if shutil.which("taskset") is None:
        print("bench/ingest.py: taskset is not installed (apt-get install -y util-linux)", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print("bench/ingest.py: needs 2 cores (server on core 0, wrk on core 1)", file=sys.stderr)
        return 2
    if args.profile and not (shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists()):
        print("bench/ingest.py: --profile needs py-spy (.venv/bin/pip install py-spy)", file=sys.stderr)
        return 2
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration must be at least 1 (wrk takes whole seconds) and --warmup at least 0")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")

    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split()[:2]
    track = Scenario("track", f"/v1/track 1 event, {args.connections} conn", "track.lua",
                     args.connections, args.threads)
    batch = Scenario("batch", f"/v1/batch 100 events, {args.connections} conn", "batch.lua",
                     args.connections, args.threads)
    single = Scenario("latency", "/v1/track 1 event, 1 conn", "track.lua", 1, 1)
    scenarios = [track, batch, single]

    print("ingest benchmark")
    print(f"  python {platform.python_version()}, {os.cpu_count()} cores; servers on core {SERVER_CORE}, "
          f"wrk on core {LOADGEN_CORE}; {' '.join(wrk_version) or 'wrk'}")
    print(f"  {args.duration:g} s per run after {args.warmup:g} s warm-up; {args.connections} connections, "
          f"{args.threads} wrk thread(s); {args.repeat} run(s) per server and scenario")
    destination = ("file (JSON Lines, fsync, delivery runs during the load)" if args.destination == "file"
                   else "none (ingest only)")
    print(f"  gateway: log synchronous={args.synchronous} (2xx only after the commit is durable), "
          f"destination: {destination}")
    print("  bare: hypercorn --worker-class trio serving bench/bare_app.py "
          '(reads the body, answers {"success":true})')
    print()

    results: list[Result] = []
    if args.only == "all":
        print("bare hypercorn (trio worker):", flush=True)
        bare = bare_server().start()
        try:
            results += drive(bare, scenarios, args, None)
        finally:
            bare.stop()

    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    data_dir = tmp / "data"
    config_path = tmp / "gateway.toml"
    config_path.write_text(gateway_config(data_dir, args.destination, args.synchronous))
    print("gateway:", flush=True)
    gateway = gateway_server(config_path)
    log = LogReader(data_dir / "log.sqlite3")
    delivery_note = ""
    try:
        gateway.start()
        results += drive(gateway, scenarios, args, log)
        if args.destination == "file":
            head = log.settle()
            start = time.monotonic()
            while (log.cursor("archive") or 0) < head and time.monotonic() - start < 60:
                time.sleep(0.1)
            cursor = log.cursor("archive") or 0
            waited = time.monotonic() - start
            delivery_note = (f"file destination: cursor {cursor:,} of head {head:,} "
                             f"({'caught up' if cursor >= head else 'BEHIND'} {waited:.1f} s after the last run)")
    except BaseException:
        gateway.kill()
        if not args.keep_data:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        code = gateway.stop()
    warnings = [line for line in gateway.lines
                if '"level": "warning"' in line or '"level": "error"' in line or "Traceback" in line]
    archive_lines = None
    if args.destination == "file" and (data_dir / "archive").is_dir():
        archive_lines = 0
        for path in (data_dir / "archive").glob("*.jsonl"):
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    archive_lines += chunk.count(b"\n")

    # -- the report -----------------------------------------------------------------------------
    print()
    if args.repeat > 1:
        print(f"median of {args.repeat} runs (by req/s) per server and scenario; all runs:")
        print_table(results)
        print()
    medians = []
    for server_name in ("bare", "gateway"):
        for sc in scenarios:
            runs = sorted((r for r in results if r.server == server_name and r.scenario is sc),
                          key=lambda r: r.req_s)
            if runs:
                medians.append(runs[len(runs) // 2])
    print_table(medians)
    print("  non-2xx: responses with status >= 400 (wrk's count); sockerr: connect/read/write errors and "
          "timeouts;\n  srv CPU: server CPU (all threads) / wall time, main: its event-loop thread alone; "
          "CPU us/ev: server CPU per acknowledged event")
    print()
    by = {(r.server, r.scenario.key): r for r in medians}
    gw_track, gw_batch, gw_lat = by[("gateway", "track")], by[("gateway", "batch")], by[("gateway", "latency")]

    print("gateway / bare:")
    for key in ("track", "batch", "latency"):
        g, b = by.get(("gateway", key)), by.get(("bare", key))
        if g and b:
            print(f"  {g.scenario.title:<34} req/s {g.req_s / b.req_s:.2f}x   events/s {g.events_s / b.events_s:.2f}x"
                  f"   p99 {g.wrk['p99_us'] / b.wrk['p99_us']:.1f}x")
    print()

    print("targets:")
    bare_track = by.get(("bare", "track"))
    if bare_track:
        ratio = gw_track.req_s / bare_track.req_s
        print(f"  (a) /v1/track req/s >= {TARGET_TRACK_RATIO}x bare, durable acks: "
              f"{gw_track.req_s:,.0f} / {bare_track.req_s:,.0f} = {ratio:.3f}x   {verdict(ratio >= TARGET_TRACK_RATIO)}")
    else:
        print(f"  (a) /v1/track req/s >= {TARGET_TRACK_RATIO}x bare: not measured (--only gateway); "
              f"gateway {gw_track.req_s:,.0f} req/s")
    print(f"  (b) /v1/batch of 100 >= {TARGET_BATCH_EPS:,} events/s: {gw_batch.events_s:,.0f} events/s   "
          f"{verdict(gw_batch.events_s >= TARGET_BATCH_EPS)}")
    p50, p99 = gw_lat.wrk["p50_us"] / 1000, gw_lat.wrk["p99_us"] / 1000
    bare_lat = by.get(("bare", "latency"))
    context = (f" (bare app: p50 {bare_lat.wrk['p50_us'] / 1000:.2f} ms, p99 {bare_lat.wrk['p99_us'] / 1000:.2f} ms)"
               if bare_lat else "")
    print(f"  (c) one connection, ack p99 <= {TARGET_P99_MS:g} ms: p50 {p50:.2f} ms, p99 {p99:.2f} ms   "
          f"{verdict(p99 <= TARGET_P99_MS)}{context}")
    print()

    print("honesty check (rows the gateway's log gained during each measured run vs 2xx x events):")
    all_stored = True
    for r in results:
        if r.server != "gateway":
            continue
        extra = r.stored - r.acked_events
        in_flight = r.scenario.connections * r.wrk["events_per_request"]
        if extra < 0:
            all_stored = False
            status = f"MISSING {-extra:,} acknowledged events"
        elif extra <= in_flight:
            status = f"ok (+{extra:,} from requests in flight when wrk stopped, <= {in_flight:,})"
        else:
            status = f"ok, but +{extra:,} more than acked (> {in_flight:,} possible in flight: socket errors?)"
        print(f"  {r.scenario.title:<34} acked {r.acked_events:>9,}  stored {r.stored:>9,}  "
              f"non-2xx {r.wrk['status_errors']:,}  socket errors {r.socket_errors:,}  {status}")
        print(f"  {'':<34} log held {r.log_rows_before:,} rows before the run; "
              f"WAL {r.wal_bytes_after / 2**20:,.0f} MiB after it")
    print(f"  every acknowledged event stored: {'yes' if all_stored else 'NO'}; unique messageIds, so "
          f"dedup skipped none" if all_stored else "  acknowledged events are missing from the log!")
    if delivery_note:
        print(f"  {delivery_note}; {archive_lines:,} lines in the archive files")
    print(f"  gateway exit code {code}; {len(warnings)} warning/error log lines")
    for line in warnings[:5]:
        print(f"    {line.rstrip()[:300]}")
    sizes = gw_track.wrk["event_bytes"], gw_track.wrk["request_body_bytes"], gw_batch.wrk["request_body_bytes"]
    print(f"  event body {sizes[0]} bytes; /v1/track request {sizes[1]} bytes; /v1/batch request {sizes[2]:,} bytes")

    for r in results:
        if r.notes:
            print()
            print(f"profile of the gateway, {r.scenario.title}:")
            for note in r.notes:
                print(f"  {note}")

    if args.keep_data:
        print(f"  data kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
