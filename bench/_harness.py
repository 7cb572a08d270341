"""Shared pieces of the wrk benchmarks in bench/ (``ingest.py``, ``pixel.py``): server subprocesses
pinned to a core, a read-only look at the gateway's SQLite log, wrk runs with a Lua script that
prints one ``BENCH_RESULT {json}`` line, py-spy profiling and the results table.

Not a benchmark itself; the scripts import it (``bench/`` is on ``sys.path`` when they run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
WRITE_KEY = "bench-write-key"

SERVER_CORE = "0"
LOADGEN_CORE = "1"

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- servers ------------------------------------------------------------------------------------


class Server:
    """A server subprocess whose URL is learnt from its output; output is kept for the report.

    With ``url_from_line=None`` the URL is given (``url=``) and the server counts as started once
    that address accepts a TCP connection (for servers that print nothing, like nginx)."""

    def __init__(self, name: str, argv: list[str], url_from_line, cwd: Path = ROOT, url: str = "") -> None:
        self.name = name
        self.argv = argv
        self._url_from_line = url_from_line
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.url = url
        self.lines: list[str] = []

    def start(self, timeout: float = 30.0) -> Server:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
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
        if self._url_from_line is None:
            threading.Thread(target=self._probe, args=(started, timeout), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not started.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not start:\n" + "".join(self.lines[-40:]))
        return self

    def _probe(self, started: threading.Event, timeout: float) -> None:
        parts = urlsplit(self.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc is not None and self.proc.poll() is None:
            try:
                socket.create_connection((parts.hostname, parts.port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
                continue
            started.set()
            return

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


def core_busy_seconds(core: str) -> float:
    """Seconds a core has been busy (not idle or iowait) since boot, all processes (/proc/stat)."""
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0] == f"cpu{core}":
            ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
            return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
    return 0.0


def _proc_cpu(pid: int, which: str = "stat") -> float:
    try:
        stat = Path(f"/proc/{pid}/{which}").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def hypercorn_url(line: str) -> str:
    match = re.search(r"Running on (http://\S+)", line)
    return match.group(1) if match else ""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers that cannot bind port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hypercorn_server(name: str, app: str) -> Server:
    """``hypercorn --worker-class trio`` serving ``app`` (``path/to/module.py:app``) on core 0."""
    argv = [
        "taskset",
        "-c",
        SERVER_CORE,
        sys.executable,
        "-m",
        "hypercorn",
        "--worker-class",
        "trio",
        "--bind",
        "127.0.0.1:0",
        app,
    ]
    return Server(name, argv, hypercorn_url)


def gateway_url(line: str) -> str:
    if '"gateway_started"' not in line:
        return ""
    return json.loads(line)["listen"][0]


def gateway_config(data_dir: Path, destination: str, synchronous: str, *, max_disk_bytes: int = 0) -> str:
    """A gateway config for the benchmarks; ``max_disk_bytes`` (0: the default) for a log filled
    beforehand (bench/ingest.py --prefill)."""
    bound = f"max_disk_bytes = {max_disk_bytes}\n" if max_disk_bytes else ""
    text = f"""
[server]
listen = "127.0.0.1:0"
data_dir = "{data_dir}"
graceful_shutdown_secs = 5

[log]
synchronous = "{synchronous}"
{bound}
[sources.web]
write_key = "{WRITE_KEY}"
"""
    if destination == "file":
        # The reference config's delivery defaults (batches of 500, fsync on).
        text += f"""
[destinations.archive]
type = "file"
path = "{data_dir / "archive"}"
"""
    return text


def gateway_server(config_path: Path, *, python: str = sys.executable, name: str = "gateway") -> Server:
    """The gateway on ``config_path``, pinned to the server core; ``python`` may be another
    checkout's interpreter (an earlier version, for before/after ratios in one run), which then
    runs in the config's folder so that ``-m gateway`` finds its own package, not this one."""
    argv = ["taskset", "-c", SERVER_CORE, python, "-m", "gateway", "run", "--config", str(config_path)]
    if python == sys.executable:
        return Server(name, argv, gateway_url)
    return Server(name, argv, gateway_url, cwd=config_path.parent)


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

    def rows_after_with_prefix(self, seq: int, prefix: str) -> int:
        """Rows after ``seq`` whose messageId starts with ``prefix`` (a run id the Lua scripts put
        in front of every messageId)."""
        return self._query(
            "SELECT count(*) FROM messages WHERE seq > ? AND substr(message_id, 1, ?) = ?", (seq, len(prefix), prefix)
        )[0]

    def sample_body(self, seq: int) -> bytes | None:
        row = self._query("SELECT body FROM messages WHERE seq > ? ORDER BY seq LIMIT 1", (seq,))
        return row[0] if row else None

    def wal_bytes(self) -> int:
        try:
            return Path(f"{self.path}-wal").stat().st_size
        except OSError:
            return 0

    def cursor(self, destination: str) -> int | None:
        row = self._query("SELECT seq FROM cursors WHERE destination = ?", (destination,))
        return row[0] if row else None

    def catch_up(self, head: int, destination: str = "archive", timeout: float = 60.0) -> float:
        """Wait until ``destination``'s cursor reaches ``head`` (at most ``timeout``); the seconds
        waited. No wait when the destination has no cursor (none configured)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            cursor = self.cursor(destination)
            if cursor is None or cursor >= head:
                break
            time.sleep(0.1)
        return time.monotonic() - start

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
    #: BENCH_MESSAGE_IDS for wrk ("counter", "uuid4"); empty: the environment's.
    message_ids: str = ""
    #: BENCH_DELAY_MS for wrk: a pause before each request on a connection (0: none), to offer
    #: less than the most the server takes.
    delay_ms: float = 0.0


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
    run_id: str = ""  # BENCH_RUN_ID of the measured run: the prefix of its messageIds
    server_core_busy: float = 0.0  # seconds core 0 was busy (any process) during the run
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
    argv = [
        "taskset",
        "-c",
        LOADGEN_CORE,
        "wrk",
        f"-t{scenario.threads}",
        f"-c{scenario.connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / scenario.script),
        url,
    ]
    env = {**os.environ, "BENCH_WRITE_KEY": WRITE_KEY, "BENCH_RUN_ID": run_id}
    if scenario.message_ids:
        env["BENCH_MESSAGE_IDS"] = scenario.message_ids
    if scenario.delay_ms:
        env["BENCH_DELAY_MS"] = str(scenario.delay_ms)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line.removeprefix("BENCH_RESULT ")), cpu
    raise RuntimeError(f"wrk gave no result (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def drive(
    server: Server,
    scenarios: list[Scenario],
    args: argparse.Namespace,
    log: LogReader | None,
    events: bool = True,
    baseline: Server | None = None,
) -> list[Result]:
    """Run each scenario ``args.repeat`` times (after ``args.warmup`` seconds of unmeasured load)
    against ``server``; ``args.profile`` runs py-spy on a server named "gateway". With ``log``,
    count the rows it gained in each run. ``events=False``: one event per request, so the
    progress lines show req/s only.

    With ``baseline`` (up at the same time, on the same core), each run of ``server`` comes
    right after the same run of ``baseline``: the speed of a shared VM drifts over minutes, and
    back-to-back pairs keep that drift out of the ratios."""
    results = []
    for scenario, repeat in [(sc, i) for sc in scenarios for i in range(args.repeat)]:
        head = 0
        if log:
            # Each run measures its own load: delivery of the previous one's (a batch run leaves
            # hundreds of thousands of rows) is done first, not during the next measurement.
            head = log.settle()
            log.catch_up(head)
        if baseline is not None:
            results.append(_measure(baseline, scenario, repeat, args, events))
        if args.warmup > 0 and repeat == 0:
            run_wrk(server.url, scenario, args.warmup, f"w{uuid.uuid4().hex[:10]}")
            if log:
                head = log.settle()
                log.catch_up(head)
        result = _measure(server, scenario, repeat, args, events, log, head)
        results.append(result)
    return results


def _measure(
    server: Server,
    scenario: Scenario,
    repeat: int,
    args: argparse.Namespace,
    events: bool,
    log: LogReader | None = None,
    head: int = 0,
) -> Result:
    """One measured wrk run against ``server`` (after the warm-up when it is the first of its
    scenario and has no log: a gateway's warm-up is run by the caller, before catching up)."""
    if args.warmup > 0 and repeat == 0 and log is None:
        run_wrk(server.url, scenario, args.warmup, f"w{uuid.uuid4().hex[:10]}")
    profiling = args.profile and server.name == "gateway" and repeat == 0
    profiler = start_profiler(server, scenario, args) if profiling else None
    cpu0, main0, core0 = server.cpu_seconds(), server.main_thread_cpu_seconds(), core_busy_seconds(SERVER_CORE)
    run_id = uuid.uuid4().hex[:12]
    data, wrk_cpu = run_wrk(server.url, scenario, args.duration, run_id)
    cpu1, main1, core1 = server.cpu_seconds(), server.main_thread_cpu_seconds(), core_busy_seconds(SERVER_CORE)
    result = Result(
        server.name, scenario, data, cpu1 - cpu0, main1 - main0, wrk_cpu, run_id=run_id, server_core_busy=core1 - core0
    )
    if profiler is not None:
        result.notes += finish_profiler(*profiler)
    if log:
        log.settle()
        result.stored = log.rows_after(head)
        result.log_rows_before = head
        result.wal_bytes_after = log.wal_bytes()
    if events:
        print(
            f"  {scenario.title:<34} {server.name:<8} {result.req_s:>9,.0f} req/s "
            f"{result.events_s:>10,.0f} events/s  p99 {data['p99_us'] / 1000:.2f} ms",
            flush=True,
        )
    else:
        print(
            f"  {scenario.title:<34} {server.name:<8} {result.req_s:>9,.0f} req/s  "
            f"p50 {data['p50_us'] / 1000:.2f} ms  p99 {data['p99_us'] / 1000:.2f} ms",
            flush=True,
        )
    return result


# -- profiling (--profile) ----------------------------------------------------------------------


def start_profiler(server: Server, scenario: Scenario, args: argparse.Namespace):
    """py-spy on the gateway for one measured run, on the load generator's core."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(args.profile) / f"gateway-{scenario.key}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    assert server.proc is not None
    argv = [
        "taskset",
        "-c",
        LOADGEN_CORE,
        py_spy,
        "record",
        "--pid",
        str(server.proc.pid),
        "--duration",
        str(max(1, args.duration - 1)),
        "--rate",
        "200",
        "--nonblocking",
        "--threads",
        "--format",
        "raw",
        "--output",
        str(out),
    ]
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
    totals: dict[str, dict[str, int]] = {"main": {}, "threads": {}}
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
    lines = [
        f"py-spy: {path} ({all_samples} samples; main thread {count['main'] / all_samples:.0%}, "
        f"worker threads {count['threads'] / all_samples:.0%})"
    ]
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


def print_table(results: list[Result], events: bool = True) -> None:
    """One row per result. ``events=False`` (one event per request): no events/s column, and the
    server CPU is per request."""
    ev_head = f" {'events/s':>10}" if events else ""
    per = "CPU us/ev" if events else "CPU us/req"
    header = (
        f"{'scenario':<34} {'server':<8} {'req/s':>9}{ev_head} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'2xx':>8} {'non-2xx':>7} {'sockerr':>7} {'srv CPU':>7} {'main':>5} {per:>9} "
        f"{'wrk CPU':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        w = r.wrk
        cpu_share = r.server_cpu / r.seconds
        cpu_per_event = r.server_cpu / r.acked_events * 1e6 if r.acked_events else float("nan")
        ev = f" {r.events_s:>10,.0f}" if events else ""
        print(
            f"{r.scenario.title:<34} {r.server:<8} {r.req_s:>9,.0f}{ev} "
            f"{_ms(w['p50_us']):>8} {_ms(w['p99_us']):>8} {_ms(w['max_us']):>8} {r.ok_requests:>8,} "
            f"{w['status_errors']:>7,} {r.socket_errors:>7,} {cpu_share:>7.0%} {r.main_cpu / r.seconds:>5.0%} "
            f"{cpu_per_event:>{len(per)}.0f} "
            f"{r.wrk_cpu / r.seconds:>7.0%}"
        )


def medians(results: list[Result], servers: tuple[str, ...], scenarios: list[Scenario]) -> list[Result]:
    """The median run by req/s of each server and scenario, in that order."""
    chosen = []
    for server_name in servers:
        for sc in scenarios:
            runs = sorted((r for r in results if r.server == server_name and r.scenario is sc), key=lambda r: r.req_s)
            if runs:
                chosen.append(runs[len(runs) // 2])
    return chosen


def check_tools(script: str, profile: bool) -> int | None:
    """Exit code 2 with a message if wrk, taskset, a second core or (for ``profile``) py-spy is
    missing; None if all is there."""
    if shutil.which("wrk") is None:
        print(
            f"bench/{script}: wrk is not installed. Install it with:\n\n    apt-get install -y wrk\n", file=sys.stderr
        )
        return 2
    if shutil.which("taskset") is None:
        print(f"bench/{script}: taskset is not installed (apt-get install -y util-linux)", file=sys.stderr)
        return 2
    if (os.cpu_count() or 1) < 2:
        print(f"bench/{script}: needs 2 cores (server on core 0, wrk on core 1)", file=sys.stderr)
        return 2
    if profile and not (shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists()):
        print(f"bench/{script}: --profile needs py-spy (.venv/bin/pip install py-spy)", file=sys.stderr)
        return 2
    return None


def wrk_version() -> list[str]:
    return subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split()[:2]


def wait_for_delivery(log: LogReader, destination: str = "archive", timeout: float = 60.0) -> str:
    """After the last run: wait until the destination's cursor reaches the log head; a note."""
    head = log.settle()
    waited = log.catch_up(head, destination, timeout)
    cursor = log.cursor(destination) or 0
    return (
        f"file destination: cursor {cursor:,} of head {head:,} "
        f"({'caught up' if cursor >= head else 'BEHIND'} {waited:.1f} s after the last run)"
    )


def archive_lines(directory: Path) -> int | None:
    """Lines in the file destination's ``*.jsonl`` files (None without the folder)."""
    if not directory.is_dir():
        return None
    lines = 0
    for path in directory.glob("*.jsonl"):
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                lines += chunk.count(b"\n")
    return lines


def warning_lines(server: Server) -> list[str]:
    """The server's warning/error log lines and tracebacks."""
    return [
        line
        for line in server.lines
        if '"level": "warning"' in line or '"level": "error"' in line or "Traceback" in line
    ]


def add_load_arguments(parser: argparse.ArgumentParser, *, baseline: str) -> None:
    """The options every wrk-driven benchmark here takes."""
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument(
        "--threads", type=int, default=1, help="wrk threads (default 1: the load generator has one core)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measured runs per server and scenario; the table shows the median by req/s (default 1)",
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of unmeasured load before each run (default 2; 0 = none)"
    )
    parser.add_argument(
        "--destination",
        choices=("file", "none"),
        default="file",
        help="gateway destination: a file destination so delivery runs too (default), or none",
    )
    parser.add_argument(
        "--synchronous",
        choices=("full", "normal"),
        default="full",
        help='the log\'s SQLite synchronous setting (default "full": acks survive power loss)',
    )
    parser.add_argument("--only", choices=("all", "gateway"), default="all", help=baseline)
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="run py-spy on the gateway during the measured runs (pip install py-spy); "
        "raw stacks go to DIR, a summary is printed",
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the gateway's temp data_dir")


def check_load_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, name: str) -> int | None:
    """Refuse impossible options; returns an exit code when a needed tool is missing."""
    missing = check_tools(name, bool(args.profile))
    if missing is not None:
        return missing
    if args.duration < 1 or args.warmup < 0:
        parser.error("--duration must be at least 1 (wrk takes whole seconds) and --warmup at least 0")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    return None


@dataclass
class GatewayRun:
    """What one benchmarked gateway process did: its results and how it ended."""

    results: list[Result]
    tmp: Path
    data_dir: Path
    exit_code: int
    warnings: list[str]
    lines: list[str]
    delivery_note: str
    archived: int | None


def run_gateway(
    args: argparse.Namespace,
    scenarios: list[Scenario],
    *,
    events: bool = True,
    baseline: Server | None = None,
    inspect: Callable[[list[Result], LogReader], None] | None = None,
) -> GatewayRun:
    """Start the gateway on a temp config, drive ``scenarios``, let ``inspect`` look at the log
    while it is up, wait for delivery, stop it, and collect how it ended."""
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
        results = drive(gateway, scenarios, args, log, events=events, baseline=baseline)
        if inspect is not None:
            inspect(results, log)
        if args.destination == "file":
            delivery_note = wait_for_delivery(log)
    except BaseException:
        gateway.kill()
        if not args.keep_data:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        code = gateway.stop()
    archived = archive_lines(data_dir / "archive") if args.destination == "file" else None
    return GatewayRun(
        results, tmp, data_dir, code, warning_lines(gateway), list(gateway.lines), delivery_note, archived
    )


def stored_status(result: Result, unit: str) -> tuple[bool, str]:
    """Whether a gateway run stored every acknowledged ``unit`` (events, hits), and what to say of
    it: stored may exceed acknowledged by the requests in flight when wrk stopped, never fall short."""
    assert result.stored is not None
    extra = result.stored - result.acked_events
    in_flight = result.scenario.connections * result.wrk.get("events_per_request", 1)
    if extra < 0:
        return False, f"MISSING {-extra:,} acknowledged {unit}"
    if extra <= in_flight:
        return True, f"ok (+{extra:,} from requests in flight when wrk stopped, <= {in_flight:,})"
    return True, f"ok, but +{extra:,} more than acked (> {in_flight:,} possible in flight: socket errors?)"


def print_gateway_health(run: GatewayRun) -> None:
    """Delivery, exit code and warnings of the benchmarked gateway."""
    if run.delivery_note:
        print(f"  {run.delivery_note}; {run.archived:,} lines in the archive files")
    print(f"  gateway exit code {run.exit_code}; {len(run.warnings)} warning/error log lines")
    for line in run.warnings[:5]:
        print(f"    {line.rstrip()[:300]}")


def finish(results: list[Result], run: GatewayRun, args: argparse.Namespace) -> int:
    """Print the profiles, then keep or remove the gateway's data."""
    for r in results:
        if r.notes:
            print()
            print(f"profile of the gateway, {r.scenario.title}:")
            for note in r.notes:
                print(f"  {note}")
    if args.keep_data:
        print(f"  data kept in {run.tmp}")
    else:
        shutil.rmtree(run.tmp, ignore_errors=True)
    return 0
