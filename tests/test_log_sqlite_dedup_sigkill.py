"""Exact dedup across SIGKILL: a process appends keys drawn from a small pool to the SQLite log
(flushes of a few keys a transaction, slices closed every 50 keys, Bloom filters of the slices
found on open built while commits go on) and is killed at a random point, again and again.
After each kill the messages are the truth: no key stored twice within the window, and every
key sent once more is stored exactly when its newest copy is more than a window old.

The kill schedule is random but seeded; re-run a failure with ``GATEWAY_FAULT_SEED=<seed>``.
"""

from __future__ import annotations

import itertools
import os
import random
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import trio

from gateway.config import LogConfig
from gateway.log import Entry, open_log
from gateway.log.sqlite import DB_NAME

WINDOW_SECS = 4
KEYS = 60
SOURCES = ("web", "app")

_WRITER = """
import random, sqlite3, sys
from pathlib import Path

import trio

from gateway.config import LogConfig
from gateway.log import Entry, open_log
from gateway.log.sqlite import DB_NAME, _dedup, _engine

_dedup.FLUSH_CHUNK, _dedup.FLUSH_KEYS, _dedup.FLUSH_AGE_MS, _dedup.SLICE_KEYS = 16, 40, 500, 50
_dedup.CLUSTER_MIN, _dedup.CLUSTER_GAP = 4, 8  # some commits write their keys to the slice
_engine.FILTER_START_SECS = _engine.FILTER_CHECK_SECS = 0.001
data_dir, seed, window, keys = Path(sys.argv[1]), *map(int, sys.argv[2:5])
with sqlite3.connect(data_dir / DB_NAME) as db:
    now = [db.execute("SELECT coalesce(max(received_at), 1800000000000) FROM messages").fetchone()[0]]


async def main() -> None:
    rnd = random.Random(seed)
    config = LogConfig(dedup_window_secs=window, archive_secs=10**6)
    async with open_log(config, data_dir, clock_ms=lambda: now[0]) as log:
        while True:
            now[0] += rnd.choice([0, 1, 10, 300, 1000, 2000, window * 1000, window * 1000 + 1])
            batch = [(rnd.choice(("web", "app")), f"k{rnd.randrange(keys)}") for _ in range(rnd.randint(1, 30))]
            await log.append([Entry(source, key, b"{}") for source, key in batch])
            print("appended", flush=True)
            if log._dedup.flush_due(now[0]):  # the engine's flush, a line after each step
                while await log._write(log._dedup.flush_step, log.head(), now[0], window * 1000):
                    print("flush step", flush=True)
                print("flushed", flush=True)
            if rnd.random() < 0.1:
                await log.checkpoint()
            if rnd.random() < 0.05:
                await log.purge([])


trio.run(main)
"""


def _copies(data_dir: Path) -> dict[tuple[str, str], list[int]]:
    copies: dict[tuple[str, str], list[int]] = defaultdict(list)
    with sqlite3.connect(data_dir / DB_NAME) as db:
        for source, key, at in db.execute("SELECT source, message_id, received_at FROM messages ORDER BY seq"):
            copies[(source, key)].append(at)
    return copies


async def _check(data_dir: Path, seed: int, rnd: random.Random) -> None:
    copies = _copies(data_dir)
    window_ms = WINDOW_SECS * 1000
    for key, times in copies.items():
        assert all(b - a > window_ms for a, b in itertools.pairwise(times)), (seed, key, times)
    # Every key once more, a little after the newest message: some within their window, some past it.
    now = max(at for times in copies.values() for at in times) + rnd.choice([1, 1000, 2000, 3999, 4001])
    keys = [(source, f"k{i}") for source in SOURCES for i in range(KEYS)]
    expected = {key for key in keys if key not in copies or now - copies[key][-1] > window_ms}
    async with open_log(
        LogConfig(dedup_window_secs=WINDOW_SECS, archive_secs=10**6), data_dir, clock_ms=lambda: now
    ) as log:
        result = await log.append([Entry(source, key, b"{}") for source, key in keys])
    stored = {key for key, times in _copies(data_dir).items() if times[-1] == now}
    assert stored == expected, (seed, sorted(stored ^ expected))
    assert result.stored == len(expected)


def test_dedup_stays_exact_across_sigkills(tmp_path: Path) -> None:
    seed = int(os.environ.get("GATEWAY_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"seed {seed}")
    rnd = random.Random(seed)
    trio.run(_create, tmp_path)
    for round_ in range(5):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), str(rnd.randrange(2**32)), str(WINDOW_SECS), str(KEYS)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        try:
            for _ in range(rnd.randint(20, 300)):  # steps done, then the kill lands anywhere after
                assert writer.stdout.readline(), (seed, round_, "the writer died")
        finally:
            writer.kill()
            writer.wait()
            writer.stdout.close()
        trio.run(_check, tmp_path, seed, rnd)


async def _create(data_dir: Path) -> None:
    """Create the log, so the writer finds its tables."""
    async with open_log(LogConfig(dedup_window_secs=WINDOW_SECS), data_dir, clock_ms=lambda: 1_800_000_000_000) as log:
        assert log.head() == 0
