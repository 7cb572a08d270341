"""Rows written with multi-row statements: ``INSERT ... VALUES (...), (...), ...`` a chunk at a
time, one call into SQLite per chunk instead of per row. The Python side of ``executemany``
(binding row by row) cost more than the insert itself: 2.8 µs a dedup key against 1.2 µs in
chunks of 128. Chunk sizes are powers of two, so a handful of statements are prepared.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

#: Rows per statement: 4 x 128 parameters stay under 999, the variable limit of SQLite builds
#: before 3.32.
ROWS_PER_STATEMENT = 128
T = TypeVar("T")


def chunks(rows: Sequence[T]) -> Iterator[Sequence[T]]:
    """``rows`` in order, in chunks of ``ROWS_PER_STATEMENT``, then of decreasing powers of two."""
    start, left = 0, len(rows)
    size = ROWS_PER_STATEMENT
    while left:
        while size > left:
            size >>= 1
        yield rows[start : start + size]
        start += size
        left -= size


def insert_statements(head: str, columns: int, tail: str = "") -> dict[int, str]:
    """``head VALUES (?, ...), ... tail`` for each chunk size :func:`chunks` gives."""
    row = "(" + ", ".join(["?"] * columns) + ")"
    return {
        size: f"{head} VALUES {', '.join([row] * size)}{tail}"
        for size in (1 << bit for bit in range(ROWS_PER_STATEMENT.bit_length()))
    }
