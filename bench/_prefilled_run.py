"""bench/ingest.py ``--prefill N``: ``/v1/batch`` of 100 on a pre-filled log against an empty one,
UUIDv4 ids against time-ordered ones, and the gateway against the floor app
(bench/floor_app.py), all in one run with back-to-back pairs.

Three servers are up at once on the server core: the floor app, a gateway on an empty log and a
gateway on a log filled with N messages by the log's bulk writer (bench/_prefill.py). Each round
runs, back to back: the floor, empty/ordered, empty/uuid4, filled/ordered, filled/uuid4. Each
ratio is the median over rounds of the ratio inside a round, so drift of a shared VM stays out.

``--prefill 0`` leaves the filled log out: the floor and the empty log only (issue 19's floor
targets), and with ``--baseline-python`` an earlier gateway on an empty log of its own runs in
the same rounds, right before this one's runs (``before/ordered``, ``before/uuid4``), so the
change and the floor ratios come from one run.

Not a benchmark itself; bench/ingest.py imports it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _harness import (
    BENCH,
    LogReader,
    Result,
    Scenario,
    Server,
    _measure,
    gateway_config,
    gateway_server,
    hypercorn_server,
    print_table,
    run_wrk,
    stored_status,
    verdict,
    warning_lines,
)
from _prefill import prefill

from gateway.config import LogConfig

TARGET_FILLED_VS_EMPTY = 0.8  # uuid4 on the filled log >= 0.8 x uuid4 on an empty log
TARGET_UUID_VS_ORDERED = 0.8  # uuid4 on the filled log >= 0.8 x ordered ids on it
TARGET_ORDERED_VS_FLOOR = 0.75  # empty log, ordered ids >= 0.75 x the floor app
TARGET_UUID_VS_FLOOR = 0.6  # empty log, uuid4 >= 0.6 x the floor app


def run_prefilled(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-prefill-"))
    empty_dir, filled_dir = tmp / "empty", tmp / "filled"
    # Room for the filled log (about 700 bytes a message on disk) and the runs on top of it.
    bound = max(8 * 1024**3, args.prefill * 1000 + 8 * 1024**3)
    config = LogConfig(max_disk_bytes=bound)
    stored = 0
    if args.prefill:
        print(f"pre-filling a log with {args.prefill:,} messages ({args.prefill_ids} ids) ...", flush=True)
        stored, seconds = prefill(filled_dir / "data", args.prefill, args.prefill_ids, config)
        size = sum(p.stat().st_size for p in (filled_dir / "data").glob("log.sqlite3*"))
        print(
            f"  {stored:,} messages in {seconds:.0f} s ({stored / seconds:,.0f}/s), {size / 2**30:.1f} GiB on disk",
            flush=True,
        )
    logs = [("empty", empty_dir, sys.executable)]
    if args.prefill:
        logs.append(("filled", filled_dir, sys.executable))
    if args.baseline_python:
        logs.insert(0, ("before", tmp / "before", args.baseline_python))
    servers: list[Server] = []
    try:
        floor = hypercorn_server("floor", str(BENCH / "floor_app.py") + ":app").start()
        servers.append(floor)
        gateways = {}
        for name, folder, python in logs:
            folder.mkdir(exist_ok=True)
            config_path = folder / "gateway.toml"
            config_path.write_text(
                gateway_config(folder / "data", args.destination, args.synchronous, max_disk_bytes=bound)
            )
            gateways[name] = (
                gateway_server(config_path, python=python, name=name).start(),
                LogReader(folder / "data" / "log.sqlite3"),
            )
            servers.append(gateways[name][0])
        # A restarted gateway builds the Bloom filters of its older dedup slices in the
        # background, starting 10 s after it opened the log: production runs have them.
        if args.prefill:
            print("waiting 20 s for the gateways' dedup filters ...", flush=True)
            time.sleep(20)
        results = _rounds(args, floor, gateways)
        _report(results, args, stored)
        for name, (server, _) in gateways.items():
            warnings = warning_lines(server)
            print(f"  gateway {name}: {len(warnings)} warning/error log lines")
            for line in warnings[:5]:
                print(f"    {line.rstrip()[:300]}")
    finally:
        for server in servers:
            server.stop()
        if args.keep_data:
            print(f"  data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _scenario(ids: str, args: argparse.Namespace) -> Scenario:
    title = f"/v1/batch 100, {ids} ids"
    return Scenario(f"batch-{ids}", title, "batch.lua", args.connections, args.threads, message_ids=ids)


def _rounds(
    args: argparse.Namespace, floor: Server, gateways: dict[str, tuple[Server, LogReader]]
) -> dict[str, list[Result]]:
    ordered, uuid4 = _scenario("counter", args), _scenario("uuid4", args)
    plan: list[tuple[str, Server, LogReader | None, Scenario]] = [("floor", floor, None, ordered)]
    # On the empty logs, each of the earlier gateway's runs right before this one's.
    for logs in (("before", "empty"), ("filled",)):
        for ids, scenario in (("ordered", ordered), ("uuid4", uuid4)):
            plan += [(f"{log}/{ids}", *gateways[log], scenario) for log in logs if log in gateways]
    results: dict[str, list[Result]] = {label: [] for label, *_ in plan}
    for repeat in range(args.repeat):
        print(f"round {repeat + 1} of {args.repeat}:", flush=True)
        for label, server, log, scenario in plan:
            head = 0
            if log is not None:
                head = log.settle()
                log.catch_up(head)
                if args.warmup > 0 and repeat == 0:
                    run_wrk(server.url, scenario, args.warmup, f"w{uuid.uuid4().hex[:10]}")
                    head = log.settle()
                    log.catch_up(head)
            result = _measure(server, scenario, repeat, args, True, log, head)
            result.server = label
            results[label].append(result)
    return results


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def _report(results: dict[str, list[Result]], args: argparse.Namespace, stored: int) -> None:
    print()
    print(f"every run ({args.repeat} round(s), {args.duration} s each):")
    print_table([r for runs in results.values() for r in runs])
    print()

    def ratio(a: str, b: str) -> tuple[float, list[float]]:  # events/s
        pairs = [x.events_s / y.events_s for x, y in zip(results[a], results[b], strict=True)]
        return _median(pairs), pairs

    def cpu_ratio(a: str, b: str) -> float:
        # Events per second of server CPU: what each would reach with core 0 to itself.
        pairs = [
            (x.acked_events / x.server_cpu) / (y.acked_events / y.server_cpu)
            for x, y in zip(results[a], results[b], strict=True)
        ]
        return _median(pairs)

    rows = [
        (f"filled ({stored:,}) uuid4 / empty uuid4", "filled/uuid4", "empty/uuid4", TARGET_FILLED_VS_EMPTY),
        ("filled uuid4 / filled ordered", "filled/uuid4", "filled/ordered", TARGET_UUID_VS_ORDERED),
        ("empty ordered / floor", "empty/ordered", "floor", TARGET_ORDERED_VS_FLOOR),
        ("empty uuid4 / floor", "empty/uuid4", "floor", TARGET_UUID_VS_FLOOR),
        ("empty uuid4 / empty ordered", "empty/uuid4", "empty/ordered", None),
        ("filled ordered / empty ordered", "filled/ordered", "empty/ordered", None),
    ]
    rows = [row for row in rows if row[1] in results and row[2] in results]
    if "before/ordered" in results:
        rows += [
            ("this gateway / before, ordered ids", "empty/ordered", "before/ordered", None),
            ("this gateway / before, uuid4 ids", "empty/uuid4", "before/uuid4", None),
            ("before: ordered / floor", "before/ordered", "floor", TARGET_ORDERED_VS_FLOOR),
            ("before: uuid4 / floor", "before/uuid4", "floor", TARGET_UUID_VS_FLOOR),
        ]
    busy = min(r.server_cpu / r.seconds for runs in results.values() for r in runs)
    print(
        "events/s ratios (median of the ratios inside each round), and the same from server CPU per "
        "event (events per CPU second: what each would reach with core 0 to itself; the one to read "
        f"when the servers did not get their core, as here: one run got {busy:.0%} of it):"
    )
    for title, a, b, target in rows:
        median, pairs = ratio(a, b)
        by_cpu = cpu_ratio(a, b)
        each = ", ".join(f"{x:.2f}" for x in pairs)
        goal = (
            f"   target >= {target}: {verdict(median >= target)} / by CPU {verdict(by_cpu >= target)}" if target else ""
        )
        print(f"  {title:<38} {median:.2f}x  by CPU {by_cpu:.2f}x  (each round: {each}){goal}")
    print()
    print("server CPU per acknowledged event, median of the rounds (each round):")
    for label, runs in results.items():
        per_event = [r.server_cpu / r.acked_events * 1e6 for r in runs if r.acked_events]
        if per_event:
            each = ", ".join(f"{x:.1f}" for x in per_event)
            print(f"  {label:<16} {_median(per_event):5.1f} us  ({each})")
    print()
    print("honesty check (rows each gateway's log gained during each run vs 2xx x events):")
    for label, runs in results.items():
        if label == "floor":
            continue
        for r in runs:
            _, status = stored_status(r, "events")
            print(f"  {label:<16} acked {r.acked_events:>9,}  stored {r.stored:>9,}  {status}")
