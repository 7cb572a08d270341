"""The Redis engine's books: what the BOOKS script read at one moment, and the pending counts
above each cursor, put together as :class:`gateway.log.LogBooks` (the same arithmetic as the
other engines: ``audit --since`` starts each cursor where it was then)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from gateway.log import DELETED_OUTCOME, CursorBooks, LogBooks


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def assemble_books(snapshot: list[Any], pending: dict[int, Counter[str]], since_ms: int | None) -> LogBooks:
    """``snapshot``: the BOOKS script's reply (head, deletions, cursors, outcome rows per cursor,
    source books, letters held per destination); ``pending``: cursor position -> source -> count."""
    head, _, flat_cursors, flat_outcomes, flat_books, flat_held = snapshot
    rows_of = {_s(flat_outcomes[i]): flat_outcomes[i + 1] for i in range(0, len(flat_outcomes), 2)}
    held = {_s(flat_held[i]): int(flat_held[i + 1]) for i in range(0, len(flat_held), 2)}
    cursors = []
    for i in range(0, len(flat_cursors), 2):
        name = _s(flat_cursors[i])
        seq, start = (int(x) for x in _s(flat_cursors[i + 1]).split())
        rows: list[tuple[int, int, int, str, str]] = []
        for raw in rows_of.get(name, []):
            fields = _s(raw).split("\0", 4)
            rows.append((int(fields[0]), int(fields[1]), int(fields[2]), fields[3], fields[4]))
        from_seq = start
        if since_ms is not None:
            # Deletion requests book runs of removed seqs above a cursor, not its positions.
            moves = [
                upto
                for upto, at, _, _, outcome in rows
                if at < since_ms and outcome not in ("redriven", DELETED_OUTCOME)
            ]
            from_seq = max([start, *moves])
        outcomes: dict[str, dict[str, int]] = {}
        for row_upto, _, count, source, outcome in rows:
            if row_upto > from_seq:
                by_source = outcomes.setdefault(source, {})
                by_source[outcome] = by_source.get(outcome, 0) + count
        cursors.append(
            CursorBooks(name, seq, start, from_seq, outcomes, dict(pending.get(seq, Counter())), held.get(name, 0))
        )
    cursors.sort(key=lambda c: c.destination)
    sources: dict[str, dict[str, int]] = {}
    since_hour = (since_ms or 0) // 3_600_000
    for i in range(0, len(flat_books), 2):
        source, outcome, hour = _s(flat_books[i]).split("\0")
        if int(hour) >= since_hour:
            books = sources.setdefault(source, {})
            books[outcome] = books.get(outcome, 0) + int(flat_books[i + 1])
    return LogBooks(head=int(head), cursors=cursors, sources=sources, since_ms=since_ms)
