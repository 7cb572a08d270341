#!/usr/bin/env python3
"""Restart benchmark: how long from ``exec`` to the first 2xx on ``/v1/track`` after a ``kill -9``.

It prints numbers; it is not a test and asserts nothing. Issue 19's target: a restart after
``kill -9`` with a 10M-message backlog serves requests within 5 s (recovery must not scan the log).

In one run it fills a log with ``--prefill N`` messages that a down ``http`` destination has not
got (``bench/_prefill.py``; or reuses ``--data-dir`` filled by an earlier run with ``--keep-data``),
then in each of ``--rounds`` rounds, for this checkout (and ``--baseline-python``'s, right before):

1. a gateway on an empty log: the time from ``exec`` to its first 200 on ``/v1/track``;
2. on the filled log: a gateway takes ``--batches`` batches of 100 UUIDv4-id events (keys the
   dedup slices do not hold yet, as after real traffic), is killed with SIGKILL, and is started
   again: the time from that ``exec`` to its first 200.

Every gateway is pinned to core 0 and polled every 10 ms on a port fixed in its config, so the
time counts the interpreter, the imports, the plugins, the log's open and recovery, and the
listener. The report gives each round, the medians and the load average before each round.

    .venv/bin/python bench/restart.py --prefill 10000000 --keep-data     # fills for ~6 min, then 3 rounds
    .venv/bin/python bench/restart.py --data-dir /tmp/gateway-bench-restart-XXXX/data --rounds 3 \\
        --baseline-python /tmp/base/.venv/bin/python
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.request import Request, urlopen

from _harness import CLK_TCK, SERVER_CORE, WRITE_KEY, free_port
from _prefill import prefill

from gateway.config import LogConfig

TARGET_SECS = 5.0
#: The destination that is down: its URL refuses connections, so its backlog only grows.
DOWN = "down"


def config_text(data_dir: Path, port: int, down_port: int) -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"
data_dir = "{data_dir}"
graceful_shutdown_secs = 5

[log]
synchronous = "full"

[sources.web]
write_key = "{WRITE_KEY}"

[destinations.{DOWN}]
type = "http"
url = "http://127.0.0.1:{down_port}/refused"
"""


def post(port: int, path: str, body: dict[str, object]) -> int:
    """One POST; its status (0: no answer yet)."""
    auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    request = Request(
        f"http://127.0.0.1:{port}{path}",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
    )
    try:
        with urlopen(request, timeout=5) as answer:
            return int(answer.status)
    except OSError as error:
        return int(getattr(error, "code", 0) or 0)


class Gateway:
    """A gateway process on a config whose port is fixed, started by ``python``."""

    def __init__(self, python: str, data_dir: Path, workdir: Path) -> None:
        self.python, self.port = python, free_port()
        self.config = workdir / f"gateway-{self.port}.toml"
        self.config.write_text(config_text(data_dir, self.port, free_port()))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> tuple[float, float]:
        """Exec the gateway and poll ``/v1/track``; seconds from the exec to the first 200, and the
        CPU seconds the gateway had used by then (what a core to itself would take)."""
        argv = ["taskset", "-c", SERVER_CORE, self.python, "-m", "gateway", "run", "--config", str(self.config)]
        started = time.monotonic()
        # An earlier checkout's python runs in the config's folder, so -m gateway finds its own package.
        cwd = None if self.python == sys.executable else self.config.parent
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = {"userId": "u", "event": "restart probe", "type": "track"}
        while time.monotonic() - started < timeout:
            if post(self.port, "/v1/track", probe) == 200:
                return time.monotonic() - started, cpu_secs(self.proc.pid)
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.proc.returncode} before it answered")
            time.sleep(0.01)
        raise RuntimeError(f"no 200 on /v1/track within {timeout:g} s")

    def load(self, batches: int) -> None:
        for _ in range(batches):
            events = [
                {"type": "track", "userId": "u", "event": "e", "messageId": str(uuid.uuid4())} for _ in range(100)
            ]
            post(self.port, "/v1/batch", {"batch": events})

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def cpu_secs(pid: int) -> float:
    """User and system CPU seconds of a process so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def backlog(data_dir: Path) -> int:
    conn = sqlite3.connect(f"file:{data_dir / 'log.sqlite3'}?mode=ro", uri=True, timeout=30)
    try:
        head = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
        row = conn.execute("SELECT seq FROM cursors WHERE destination = ?", (DOWN,)).fetchone()
        return int(head - (row[0] if row else 0))
    finally:
        conn.close()


def fill(data_dir: Path, count: int) -> None:
    print(f"pre-filling {count:,} messages the destination has not got ...", flush=True)
    stored, seconds = prefill(data_dir, count, "uuid4", LogConfig())
    conn = sqlite3.connect(data_dir / "log.sqlite3", isolation_level=None)
    conn.execute(
        "INSERT INTO cursors (destination, seq, start_seq, updated_at) VALUES (?, 0, 0, ?)",
        (DOWN, int(time.time() * 1000)),
    )
    conn.close()
    print(f"  {stored:,} in {seconds:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prefill", type=int, default=0, metavar="N", help="messages in the backlog (a new log)")
    parser.add_argument("--data-dir", type=Path, help="a log filled by an earlier run (--keep-data) instead")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--batches", type=int, default=20, help="batches of 100 before each kill (default 20)")
    parser.add_argument("--baseline-python", help="an earlier checkout's venv python, run right before this one")
    parser.add_argument("--keep-data", action="store_true", help="keep the filled log (its path is printed)")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-restart-"))
    data_dir = args.data_dir or tmp / "data"
    if args.data_dir is None:
        data_dir.mkdir()
        fill(data_dir, args.prefill)
    sides = {"before": args.baseline_python, "after": sys.executable} if args.baseline_python else {"": sys.executable}
    print("restart benchmark")
    print(f"  python {sys.version.split()[0]}, {os.cpu_count()} cores; backlog {backlog(data_dir):,} messages")
    # Per side: (seconds to the first 200, CPU seconds by then), each round.
    empty: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
    filled: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
    try:
        for python in sides.values():  # the first start on the filled log is not measured
            warm = Gateway(python, data_dir, tmp)
            warm.start()
            warm.load(args.batches)
            warm.kill()
        for number in range(1, args.rounds + 1):
            load = " ".join(f"{x:.1f}" for x in os.getloadavg())
            for side, python in sides.items():
                empty_dir = tmp / f"empty-{side or 'this'}-{number}"
                on_empty = Gateway(python, empty_dir, tmp)
                empty[side].append(on_empty.start())
                on_empty.stop()
                shutil.rmtree(empty_dir)
                again = Gateway(python, data_dir, tmp)
                filled[side].append(again.start())
                again.load(args.batches)
                again.kill()
                print(
                    f"round {number} (load average {load}) {side or 'this'}: "
                    f"empty log {empty[side][-1][0]:.2f} s (CPU {empty[side][-1][1]:.2f} s), "
                    f"after kill -9 with the backlog {filled[side][-1][0]:.2f} s (CPU {filled[side][-1][1]:.2f} s)",
                    flush=True,
                )
        print(f"backlog at the end {backlog(data_dir):,} messages")
        for side in sides:
            after_kill = statistics.median(t for t, _ in filled[side])
            print(
                f"{side or 'this'}: medians: empty log {statistics.median(t for t, _ in empty[side]):.2f} s "
                f"(CPU {statistics.median(c for _, c in empty[side]):.2f} s), after kill -9 {after_kill:.2f} s "
                f"(CPU {statistics.median(c for _, c in filled[side]):.2f} s; target <= {TARGET_SECS:g} s: "
                f"{'MET' if after_kill <= TARGET_SECS else 'MISSED'})"
            )
    finally:
        if args.keep_data:
            print(f"  data kept in {data_dir}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
