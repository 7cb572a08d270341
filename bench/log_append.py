#!/usr/bin/env python3
"""The SQLite log's append path alone: CPU per event of the commits, the dedup key checks and
the keys written out, without HTTP, validation or delivery (where a whole-gateway run on a
shared VM is too noisy to see a few µs an event).

It prints numbers; it is not a test and asserts nothing. One run opens a fresh log, appends
``--rounds`` groups of 3,200 events (one group commit each; a checkpoint, which writes the dedup
keys out, after every fifth), then purges, and prints the process CPU per event (every thread).
The messageIds are made before the clock starts: ``counter`` ids (a run prefix and a counter,
clustered as the Node and browser clients' are) or ``uuid4`` (random, as the Python client's).

    .venv/bin/python bench/log_append.py --ids counter
    PYTHONPATH=<another checkout> .venv/bin/python bench/log_append.py --ids counter   # its log

Run the two back to back, several times, and compare medians.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import trio

from gateway.config import LogConfig
from gateway.log import Entry, open_log

GROUP = 3200
BODY = b'{"type":"track","messageId":"%s","event":"Order Completed","properties":{"revenue":49.99}}' + b" " * 300


def make_groups(ids: str, rounds: int) -> list[list[Entry]]:
    run = uuid.uuid4().hex[:8]
    groups = []
    for group in range(rounds):
        entries = []
        for i in range(GROUP):
            n = group * GROUP + i
            message_id = str(uuid.uuid4()) if ids == "uuid4" else f"{run}-{n:010d}-{os.urandom(4).hex()}"
            entries.append(Entry("web", message_id, BODY % message_id.encode()))
        groups.append(entries)
    return groups


async def measure(groups: list[list[Entry]]) -> tuple[float, float]:
    """CPU and wall seconds for appending ``groups`` to a fresh log."""
    with tempfile.TemporaryDirectory(prefix="gateway-bench-append-") as folder:
        async with open_log(LogConfig(), Path(folder)) as log:
            cpu, wall = time.process_time(), time.perf_counter()
            for number, group in enumerate(groups):
                await log.append(group)
                if number % 5 == 4:
                    await log.checkpoint()
            await log.purge([])
            return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", choices=("counter", "uuid4"), default="counter")
    parser.add_argument("--rounds", type=int, default=60, help="groups of 3,200 events (default 60)")
    args = parser.parse_args()
    groups = make_groups(args.ids, args.rounds)
    cpu, wall = trio.run(measure, groups)
    events = sum(len(group) for group in groups)
    per_event = f"{cpu / events * 1e6:.2f} µs CPU an event, {wall / events * 1e6:.2f} µs wall"
    print(f"{args.ids} ids: {per_event}, {events:,} events")


if __name__ == "__main__":
    main()
