"""Filling a gateway's log before a benchmark (bench/ingest.py ``--prefill``,
bench/log_growth.py): N messages of about 640 bytes, received evenly over the archive period up
to now, written by the log's own bulk writer (``gateway.log.sqlite.bulk_load``), so the messages
table and the dedup slices look as they would after that much production traffic.

Not a benchmark itself; the scripts import it (``bench/`` is on ``sys.path`` when they run).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.config import LogConfig
from gateway.log.sqlite import BulkRow, bulk_load

#: A track call as the gateway stores it (server fields added), about 640 bytes.
_BODY = (
    b'{"type":"track","messageId":"%s","userId":"user-%d","anonymousId":"anon-%08x",'
    b'"event":"Order Completed","properties":{"orderId":"ord-%d","revenue":49.99,"currency":"USD",'
    b'"products":[{"sku":"SKU-1234","name":"Widget","price":24.99,"quantity":2}],"coupon":"SPRING-%04d"},'
    b'"context":{"library":{"name":"analytics-python","version":"2.4.0"},"locale":"en-US",'
    b'"ip":"203.0.113.%d","userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"},'
    b'"timestamp":"2024-05-01T12:00:00.000Z","sentAt":"2024-05-01T12:00:00.050Z",'
    b'"receivedAt":"2024-05-01T12:00:00.120Z",'
    b'"writeKey":"web","channel":"server","integrations":{}}'
)


def _uuid4(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[raw[8] & 3]}{h[17:20]}-{h[20:32]}"


def rows(count: int, ids: str, archive_secs: int, now_ms: int, source: str = "web") -> Iterator[BulkRow]:
    """``count`` messages received evenly over the ``archive_secs`` before ``now_ms``; ``ids``:
    "uuid4" (random) or "ordered" (time-ordered, as the Node and browser clients send)."""
    span = archive_secs * 1000
    start = now_ms - span
    randoms = os.urandom(16 * 4096)
    offset = len(randoms)
    for i in range(count):
        if offset == len(randoms):
            randoms, offset = os.urandom(16 * 4096), 0
        raw = randoms[offset : offset + 16]
        offset += 16
        at = start + span * i // count
        message_id = _uuid4(raw) if ids == "uuid4" else f"node-next-{at}-{raw.hex()}"
        body = _BODY % (message_id.encode(), i % 100_000, raw[0] << 24 | raw[1], i, i % 10_000, raw[2])
        yield source, message_id, at, body


def prefill(data_dir: Path, count: int, ids: str, config: LogConfig) -> tuple[int, float]:
    """Fill the log in ``data_dir`` (no gateway running on it); returns rows stored and seconds."""
    started = time.monotonic()
    now_ms = int(time.time() * 1000)
    stored = bulk_load(config, data_dir, rows(count, ids, config.archive_secs, now_ms))
    return stored, time.monotonic() - started
