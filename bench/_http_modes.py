"""The --http mode of bench/privacy.py and bench/filter_chain.py: the same modes measured end to
end, through the HTTP Tracking API, as bench/ingest.py measures ingest (wrk on core 1 posting
batches of 100 copies of the benchmark's event, the gateway pinned to core 0, synchronous=full,
no destination). One gateway per mode, all started first; the modes take turns, round by round,
and each mode's median round is kept. This is the cost as a share of ingest throughput as a
client sees it; the in-process mode leaves out HTTP and shows the matching or filter cost alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import Scenario, gateway_server, run_wrk

SCENARIO = Scenario("template", "/v1/batch of 100 bench events", "template_batch.lua", 32, 1)


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--http", action="store_true", help="measure through the HTTP API with wrk (see module doc)")
    parser.add_argument("--duration", type=int, default=6, help="--http: seconds per measured wrk run (default 6)")


def http_rates(
    event: dict[str, Any], config_for: Callable[[Path, str], str], modes: list[str], args: argparse.Namespace
) -> dict[str, float]:
    """Median events/s per mode over ``args.rounds`` rounds of ``args.duration`` seconds."""
    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-http-"))
    template = tmp / "event.json"
    template.write_text(json.dumps({**event, "messageId": "__MID__"}, separators=(",", ":")))
    servers = {}
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for n, mode in enumerate(modes):
            config = tmp / f"{n}.toml"
            text = config_for(tmp / f"data-{n}", mode)
            config.write_text(text.replace("[server]\n", '[server]\nlisten = "127.0.0.1:0"\n', 1))
            servers[mode] = gateway_server(config).start()
        os.environ["BENCH_EVENT_TEMPLATE"] = str(template)  # run_wrk passes the environment on
        for mode in modes:  # warm-up
            run_wrk(servers[mode].url, SCENARIO, 2, f"w{uuid.uuid4().hex[:10]}")
        for round_no in range(args.rounds):
            for mode in modes:
                data, _ = run_wrk(servers[mode].url, SCENARIO, args.duration, uuid.uuid4().hex[:12])
                ok = data["requests"] - data["status_errors"]
                errors = data["status_errors"] + data["connect_errors"] + data["read_errors"] + data["timeouts"]
                rate = ok * data["events_per_request"] / (data["duration_us"] / 1e6)
                rates[mode].append(rate)
                print(
                    f"  round {round_no + 1} {mode:<22} {rate:>9,.0f} events/s over HTTP"
                    + (f"  ({errors} non-2xx or socket errors)" if errors else ""),
                    flush=True,
                )
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {mode: statistics.median(values) for mode, values in rates.items()}
