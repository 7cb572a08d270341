"""The per-minute series in the SQLite log (the console's delivery charts): counters that add
up per (series, minute, metric), and the latest sample of each kind per series."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.log import SeriesCounts, SeriesSample
from gateway.log.sqlite._schema import transaction

_ADD_COUNT = (
    "INSERT INTO series_counts (series, minute, metric, count) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (series, minute, metric) DO UPDATE SET count = count + excluded.count"
)
_KEEP_SAMPLE = (
    "INSERT INTO series_samples (series, kind, at_ms, body) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (series, kind) DO UPDATE SET at_ms = excluded.at_ms, body = excluded.body "
    "WHERE excluded.at_ms >= series_samples.at_ms"
)


def add_series(conn: sqlite3.Connection, counts: SeriesCounts, samples: Sequence[SeriesSample]) -> None:
    """Add the counters and keep the newer samples, in one transaction."""
    with transaction(conn):
        conn.executemany(_ADD_COUNT, [(s, minute, metric, n) for (s, minute, metric), n in counts.items() if n])
        conn.executemany(_KEEP_SAMPLE, [(x.series, x.kind, x.at_ms, x.body) for x in samples])


def read_series(conn: sqlite3.Connection, series: str, since_ms: int, until_ms: int) -> dict[int, dict[str, int]]:
    rows = conn.execute(
        "SELECT minute, metric, count FROM series_counts WHERE series = ? AND minute >= ? AND minute < ?"
        " ORDER BY minute",
        (series, since_ms, until_ms),
    ).fetchall()
    out: dict[int, dict[str, int]] = {}
    for minute, metric, count in rows:
        out.setdefault(minute, {})[metric] = count
    return out


def series_samples(conn: sqlite3.Connection, series: str) -> list[SeriesSample]:
    rows = conn.execute(
        "SELECT kind, at_ms, body FROM series_samples WHERE series = ? ORDER BY at_ms DESC", (series,)
    ).fetchall()
    return [SeriesSample(series, kind, at_ms, bytes(body)) for kind, at_ms, body in rows]


def prune_series(conn: sqlite3.Connection, cutoff_ms: int) -> None:
    """Forget counters of minutes, and samples, older than ``cutoff_ms``."""
    with transaction(conn):
        conn.execute("DELETE FROM series_counts WHERE minute < ?", (cutoff_ms,))
        conn.execute("DELETE FROM series_samples WHERE at_ms < ?", (cutoff_ms,))
