#!/usr/bin/env python3
"""Pixel benchmark: GET /v1/pixel/track on the gateway against a bare hypercorn (trio) app and,
for context, nginx ``empty_gif``, all answering a 1x1 GIF under the same wrk load.

It prints numbers; it is not a test and asserts nothing. In one run it:

1. starts ``bench/bare_app.py`` under ``hypercorn --worker-class trio`` pinned to core 0 and
   drives it with wrk pinned to core 1 (``bench/pixel.lua``);
2. if nginx is installed, starts it from a temp config (one worker, ``location / { empty_gif; }``,
   no access log) pinned to core 0, and drives it the same way;
3. does the same against ``python -m gateway run`` (a temp data_dir, durable acks, a ``file``
   destination by default so delivery runs too);
4. after each gateway run, counts the rows the log stored (``messages`` in
   ``<data_dir>/log.sqlite3``) and compares them with the 2xx responses wrk counted: the Pixel
   API answers its GIF even for a message it rejects, so a 200 alone proves nothing;
5. prints req/s, p50/p99 latency, the gateway/bare and gateway/nginx ratios and the target.

Every request carries ``data=<base64 of a JSON track message>`` with the writeKey and a unique
messageId (see bench/pixel.lua), so deduplication cannot skip the write.

    .venv/bin/python bench/pixel.py [--duration 10] [--connections 32]

Needs wrk (``apt-get install -y wrk``) and ``taskset`` (util-linux); nginx is optional
(``apt-get install -y nginx``). See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import (
    BENCH,
    LOADGEN_CORE,
    SERVER_CORE,
    LogReader,
    Result,
    Scenario,
    Server,
    add_load_arguments,
    check_load_arguments,
    drive,
    finish,
    free_port,
    hypercorn_server,
    medians,
    print_gateway_health,
    print_table,
    run_gateway,
    stored_status,
    verdict,
    wrk_version,
)

TARGET_PIXEL_RATIO = 0.6  # gateway pixel req/s >= 0.6 x bare GIF app, every hit stored durably
SATURATED = 0.9  # a server using less of its core than this during a run was not CPU-bound

# The gateway's Cache-Control on the GIF (bench/bare_app.py sends the same).
CACHE_CONTROL = "no-cache, no-store, must-revalidate"


# -- nginx --------------------------------------------------------------------------------------


def find_nginx() -> str | None:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def nginx_config(tmp: Path, port: int, nginx: str) -> str:
    """One worker, empty_gif everywhere, no access log, every path in ``tmp``."""
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True).stderr
    temp_paths = ["client_body_temp_path"] + [
        f"{module}_temp_path"
        for module in ("proxy", "fastcgi", "uwsgi", "scgi")
        if f"--without-http_{module}_module" not in built
    ]
    temp = "\n".join(f"    {directive} {tmp / directive.removesuffix('_temp_path')};" for directive in temp_paths)
    return f"""
daemon off;
master_process on;
worker_processes 1;
pid {tmp / "nginx.pid"};
error_log stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
{temp}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            empty_gif;
            add_header Cache-Control "{CACHE_CONTROL}";
        }}
    }}
}}
"""


def nginx_server(nginx: str, tmp: Path) -> Server:
    port = free_port()
    config = tmp / "nginx.conf"
    config.write_text(nginx_config(tmp, port, nginx))
    # -e: the error log before the config is read (nginx >= 1.19.5); -p: prefix for relative paths.
    argv = ["taskset", "-c", SERVER_CORE, nginx, "-p", str(tmp), "-c", str(config), "-e", "stderr"]
    return Server("nginx", argv, None, url=f"http://127.0.0.1:{port}")


# -- the report ---------------------------------------------------------------------------------


def ratio_line(label: str, a: Result, b: Result) -> str:
    if not (a.ok_requests and b.ok_requests and b.wrk["p50_us"] and b.wrk["p99_us"]):
        return f"  {label:<17} no ratio: a server answered no request with a 2xx"
    return (
        f"  {label:<17} req/s {a.req_s:>8,.0f} / {b.req_s:>8,.0f} = {a.req_s / b.req_s:.3f}x   "
        f"p50 {a.wrk['p50_us'] / b.wrk['p50_us']:.1f}x   p99 {a.wrk['p99_us'] / b.wrk['p99_us']:.1f}x   "
        f"server CPU per request {(a.server_cpu / a.ok_requests) / (b.server_cpu / b.ok_requests):.1f}x"
    )


def stored_sample(log: LogReader, seq: int) -> str:
    """What one stored row of a run looks like: proof the pixel was decoded, not just counted."""
    body = log.sample_body(seq)
    if body is None:
        return "no row stored"
    try:
        message = json.loads(body)
    except ValueError:
        return f"first row is not JSON ({len(body)} bytes)"
    keys = ("type", "event", "messageId", "userId")
    shown = ", ".join(f"{k}={message.get(k)!r}" for k in keys)
    user_agent = (message.get("context") or {}).get("userAgent")
    return (
        f"first stored row: {shown}, context.userAgent {'set' if user_agent else 'MISSING'}, "
        f"writeKey {'LEFT IN THE MESSAGE' if 'writeKey' in message else 'removed'} ({len(body)} bytes)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_load_arguments(parser, baseline="run the bare app and nginx too (default) or only the gateway")
    parser.add_argument("--no-nginx", action="store_true", help="skip nginx even when it is installed")
    args = parser.parse_args(argv)
    missing = check_load_arguments(parser, args, "pixel.py")
    if missing is not None:
        return missing

    scenario = Scenario(
        "pixel", f"GET /v1/pixel/track, {args.connections} conn", "pixel.lua", args.connections, args.threads
    )
    nginx = None if args.no_nginx or args.only == "gateway" else find_nginx()
    nginx_version = ""
    if nginx:
        nginx_version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
        nginx_version = nginx_version.removeprefix("nginx version: ")

    print("pixel benchmark")
    print(
        f"  python {platform.python_version()}, {os.cpu_count()} cores; servers on core {SERVER_CORE}, "
        f"wrk on core {LOADGEN_CORE}; {' '.join(wrk_version()) or 'wrk'}"
    )
    print(
        f"  {args.duration:g} s per run after {args.warmup:g} s warm-up; {args.connections} connections, "
        f"{args.threads} wrk thread(s); {args.repeat} run(s) per server"
    )
    print(
        "  load: GET /v1/pixel/track?data=<base64 of a JSON track message with writeKey and a unique "
        "messageId>, computed per request (bench/pixel.lua)"
    )
    destination = (
        "file (JSON Lines, fsync, delivery runs during the load)"
        if args.destination == "file"
        else "none (ingest only)"
    )
    print(
        f"  gateway: log synchronous={args.synchronous} (the GIF only after the commit is durable), "
        f"destination: {destination}"
    )
    print("  bare: hypercorn --worker-class trio serving bench/bare_app.py (answers the GIF, parses nothing)")
    if args.only == "gateway":
        print("  nginx: skipped (--only gateway)")
    elif args.no_nginx:
        print("  nginx: skipped (--no-nginx)")
    elif nginx:
        print(f"  nginx: {nginx_version or nginx}, one worker, empty_gif, access_log off")
    else:
        print("  nginx: nginx not installed, skipped (apt-get install -y nginx)")
    print()

    results: list[Result] = []
    notes: list[str] = []
    if args.only == "all":
        print("bare hypercorn (trio worker):", flush=True)
        bare = hypercorn_server("bare", str(BENCH / "bare_app.py") + ":app").start()
        try:
            results += drive(bare, [scenario], args, None, events=False)
        finally:
            bare.stop()

    if nginx:
        print("nginx empty_gif:", flush=True)
        nginx_tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-nginx-"))
        server = nginx_server(nginx, nginx_tmp)
        try:
            server.start()
        except RuntimeError as error:
            notes.append(f"nginx did not start, skipped: {str(error).strip()[-300:]}")
            print(f"  {notes[-1]}", flush=True)
        else:
            try:
                results += drive(server, [scenario], args, None, events=False)
            finally:
                server.stop()
        shutil.rmtree(nginx_tmp, ignore_errors=True)

    samples: dict[int, str] = {}
    prefixed: dict[int, int] = {}

    def inspect(gateway_results: list[Result], log: LogReader) -> None:
        for r in gateway_results:
            samples[id(r)] = stored_sample(log, r.log_rows_before)
            prefixed[id(r)] = log.rows_after_with_prefix(r.log_rows_before, r.run_id + "-")

    run = run_gateway(args, [scenario], events=False, inspect=inspect)
    results += run.results
    rejected = [line for line in run.lines if '"ingest_rejected"' in line]

    # -- the report -----------------------------------------------------------------------------
    print()
    if args.repeat > 1:
        print(f"median of {args.repeat} runs (by req/s) per server; all runs:")
        print_table(results, events=False)
        print()
    chosen = medians(results, ("bare", "nginx", "gateway"), [scenario])
    print_table(chosen, events=False)
    print(
        "  non-2xx: responses with status >= 400 (wrk's count); sockerr: connect/read/write errors and "
        "timeouts;\n  srv CPU: server CPU (all threads and processes) / wall time, main: the main threads "
        "alone (the event loop;\n  for nginx master + worker); CPU us/req: server CPU per 2xx response"
    )
    print()
    by = {r.server: r for r in chosen}
    gw, bare_r, nginx_r = by["gateway"], by.get("bare"), by.get("nginx")

    print("ratios:")
    if bare_r:
        print(ratio_line("gateway / bare", gw, bare_r))
    if nginx_r:
        print(ratio_line("gateway / nginx", gw, nginx_r))
        if bare_r:
            print(ratio_line("bare / nginx", bare_r, nginx_r))
    elif args.only == "all":
        print(
            "  gateway / nginx   nginx not installed, skipped"
            if not nginx and not args.no_nginx
            else "  gateway / nginx   skipped"
        )
    print()

    print("target:")
    if bare_r and bare_r.req_s:
        ratio = gw.req_s / bare_r.req_s
        print(
            f"  (pixel) gateway req/s >= {TARGET_PIXEL_RATIO}x bare: "
            f"{gw.req_s:,.0f} / {bare_r.req_s:,.0f} = {ratio:.3f}x   {verdict(ratio >= TARGET_PIXEL_RATIO)}"
        )
        if gw.ok_requests and bare_r.ok_requests:
            gw_us, bare_us = gw.server_cpu / gw.ok_requests * 1e6, bare_r.server_cpu / bare_r.ok_requests * 1e6
            print(
                f"  for context, by server CPU per request (what each would do with all of core 0): "
                f"{bare_us:,.0f} / {gw_us:,.0f} us = {bare_us / gw_us:.3f}x"
            )
    else:
        print(
            f"  (pixel) gateway req/s >= {TARGET_PIXEL_RATIO}x bare: not measured (--only gateway); "
            f"gateway {gw.req_s:,.0f} req/s"
        )
    for r in chosen:
        share, others = r.server_cpu / r.seconds, max(0.0, r.server_core_busy - r.server_cpu) / r.seconds
        if share < SATURATED:
            wrk_share = r.wrk_cpu / r.seconds
            if others >= 0.05:
                why = (
                    f"core 0 was busy another {others:.0%} outside the server's threads: other processes, "
                    f"kernel network or disk work"
                )
            elif wrk_share >= SATURATED:
                why = f"wrk was the limit: it used {wrk_share:.0%} of core 1"
            else:
                why = "it waited: on fsync for the gateway, or on wrk"
            print(
                f"  note: {r.server} used {share:.0%} of core 0 during its run ({why}): "
                f"its req/s understates what it does with a whole core"
            )
    print()

    print("honesty check (rows the gateway's log gained during each measured run vs 2xx GIFs):")
    all_stored = True
    for r in results:
        if r.server != "gateway":
            continue
        stored, status = stored_status(r, "hits")
        all_stored = all_stored and stored
        ours = prefixed[id(r)]
        print(
            f"  {r.scenario.title:<34} 2xx {r.acked_events:>9,}  stored {r.stored:>9,}  "
            f"non-2xx {r.wrk['status_errors']:,}  socket errors {r.socket_errors:,}  {status}"
        )
        print(
            f"  {'':<34} {ours:,} of the stored rows carry this run's messageIds"
            f"{'' if ours == r.stored else ' (MISMATCH)'}; log held {r.log_rows_before:,} rows before the run; "
            f"WAL {r.wal_bytes_after / 2**20:,.0f} MiB after it"
        )
        print(f"  {'':<34} {samples[id(r)]}")
    print(
        f"  every acknowledged hit stored: {'yes' if all_stored else 'NO'}; unique messageIds, so dedup skipped none"
        if all_stored
        else "  acknowledged hits are missing from the log!"
    )
    print(f"  pixels the gateway rejected (still answered with the GIF, not stored): {len(rejected):,}")
    for line in rejected[:3]:
        print(f"    {line.rstrip()[:300]}")
    print_gateway_health(run)
    print(
        f"  JSON message {gw.wrk['event_bytes']} bytes; request target (path + ?data=base64) "
        f"{gw.wrk['request_body_bytes']} bytes"
    )
    for note in notes:
        print(f"  {note}")

    return finish(results, run, args)


if __name__ == "__main__":
    sys.exit(main())
