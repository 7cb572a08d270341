"""Finished batches and the cursor: it moves only over a contiguous run of them, so a crash at
any point re-sends, never skips."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Acks:
    """Finished batches, so the cursor can move over a contiguous prefix of them, and the
    outcomes of the batches it moved over that are not saved yet."""

    cursor: int
    in_flight: list[int] = field(default_factory=list)  # last seq of each batch, in log order
    finished: dict[int, Counter[tuple[str, str]]] = field(default_factory=dict)
    unsaved: Counter[tuple[str, str]] = field(default_factory=Counter)

    def start(self, last_seq: int) -> None:
        self.in_flight.append(last_seq)

    def finish(self, last_seq: int, outcomes: Counter[tuple[str, str]]) -> int:
        """Mark a batch done; return how many batches the cursor moved past (0 if it is
        still held by an earlier batch)."""
        self.finished[last_seq] = outcomes
        passed = 0
        while self.in_flight and self.in_flight[0] in self.finished:
            self.cursor = self.in_flight.pop(0)
            self.unsaved.update(self.finished.pop(self.cursor))
            passed += 1
        return passed
