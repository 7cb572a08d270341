"""Rows written with multi-row statements: ``INSERT ... VALUES (...), (...), ...`` a chunk at a
time, one call into SQLite per chunk instead of per row. The Python side of ``executemany``
(binding row by row) cost more than the insert itself: 2.8 µs a dedup key against 1.2 µs in
chunks of 128. Chunk sizes are powers of two, so a handful of statements are prepared.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
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


def insert_statements(head: str, columns: int, tail: str = "", *, shared_last: bool = False) -> dict[int, str]:
    """``head VALUES (?, ...), ... tail`` for each chunk size :func:`chunks` gives.

    ``shared_last``: the last column is ``?1`` in every row (one value for the whole chunk,
    such as a commit's time), so the parameters are ``[shared, *the other columns of each row]``
    and can be flattened in C from row tuples (:func:`shared_parameters`).
    """
    sizes = [1 << bit for bit in range(ROWS_PER_STATEMENT.bit_length())]
    if not shared_last:
        row = "(" + ", ".join(["?"] * columns) + ")"
        return {size: f"{head} VALUES {', '.join([row] * size)}{tail}" for size in sizes}
    own = columns - 1
    rows = [
        "(" + ", ".join([*(f"?{2 + own * index + column}" for column in range(own)), "?1"]) + ")"
        for index in range(ROWS_PER_STATEMENT)
    ]
    return {size: f"{head} VALUES {', '.join(rows[:size])}{tail}" for size in sizes}


def shared_parameters(shared: object, rows: Iterable[Iterable[object]]) -> list[object]:
    """The parameters of a ``shared_last`` statement: ``shared``, then every row's values."""
    return [shared, *chain.from_iterable(rows)]
