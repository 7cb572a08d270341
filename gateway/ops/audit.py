"""Loss accounting: for every destination, every message the log accepted since the destination
started is delivered, filtered (by reason), dead-lettered, or still pending. Nothing else.

The numbers come from the log itself (:meth:`gateway.log.LogReader.books`; this module only does
the arithmetic): seqs are gap-free and never reused, so ``head - start``
is exactly how many messages a destination is responsible for; the outcome rows are written in
the same transaction as the cursor, so a crash can never leave the two apart. Counters a crash
could lose play no part.
"""

from __future__ import annotations

import msgspec

from gateway.delivery.replay import REPLAY_PREFIX
from gateway.log import CursorBooks, LogBooks


class DestinationAudit(msgspec.Struct):
    """The books of one destination, over seqs ``(from_seq, head]``."""

    destination: str
    from_seq: int
    cursor: int
    head: int
    delivered: int = 0
    filtered: dict[str, int] = msgspec.field(default_factory=dict)
    dead_lettered: int = 0
    redriven: int = 0
    dead_letters_held: int = 0
    pending: int = 0
    by_source: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)

    @property
    def expected(self) -> int:
        return self.head - self.from_seq

    @property
    def unaccounted(self) -> int:
        return self.expected - (self.delivered + sum(self.filtered.values()) + self.dead_lettered + self.pending)


class SourceAudit(msgspec.Struct):
    """The books of one source: what became of each valid message it received. ``received``
    is their sum, by construction: the books say where each message went, exactly (they are
    written in the commit that stored the messages), with the reason of each drop."""

    source: str
    stored: int = 0
    duplicates: int = 0
    filtered: dict[str, int] = msgspec.field(default_factory=dict)
    dead_lettered: int = 0
    suppressed: int = 0

    @property
    def received(self) -> int:
        return self.stored + self.duplicates + sum(self.filtered.values()) + self.dead_lettered + self.suppressed


class AuditReport(msgspec.Struct):
    destinations: list[DestinationAudit]
    since_ms: int | None = None
    sources: list[SourceAudit] = msgspec.field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return all(d.unaccounted == 0 for d in self.destinations)


def audit(books: LogBooks) -> AuditReport:
    """Reconcile every destination's books, as the log holds them (:meth:`gateway.log.LogReader.books`).

    With ``books.since_ms``, each destination's books start at its cursor position when
    ``since_ms`` came (to the batch), so the check is still exact. Replays' cursors are left
    out: a replay sends again what its destination's own books already count.
    """
    destinations = [
        _destination_audit(cursor, books.head)
        for cursor in books.cursors
        if not cursor.destination.startswith(REPLAY_PREFIX)
    ]
    sources = [_source_audit(source, books.sources[source]) for source in sorted(books.sources)]
    return AuditReport(destinations=destinations, since_ms=books.since_ms, sources=sources)


def _destination_audit(books: CursorBooks, head: int) -> DestinationAudit:
    report = DestinationAudit(destination=books.destination, from_seq=books.from_seq, cursor=books.cursor, head=head)
    by_source: dict[str, dict[str, int]] = {source: dict(outcomes) for source, outcomes in books.outcomes.items()}
    for outcomes in books.outcomes.values():
        for outcome, count in outcomes.items():
            if outcome == "delivered":
                report.delivered += count
            elif outcome == "dead_lettered":
                report.dead_lettered += count
            elif outcome == "redriven":
                report.redriven += count
            elif outcome.startswith("filtered:"):
                reason = outcome.removeprefix("filtered:")
                report.filtered[reason] = report.filtered.get(reason, 0) + count
    for source, count in books.pending.items():
        by_source.setdefault(source, {})["pending"] = count
        report.pending += count
    report.dead_letters_held = books.dead_letters_held
    report.by_source = by_source
    return report


def _source_audit(source: str, outcomes: dict[str, int]) -> SourceAudit:
    """A source's books: where each message it received went, with the reason of each drop."""
    book = SourceAudit(source)
    for outcome, count in outcomes.items():
        if outcome.startswith("filtered:"):
            reason = outcome.removeprefix("filtered:")
            book.filtered[reason] = book.filtered.get(reason, 0) + count
        elif outcome in ("stored", "duplicates", "dead_lettered", "suppressed"):
            setattr(book, outcome, getattr(book, outcome) + count)
    return book


def _filtered_text(filtered: dict[str, int]) -> str:
    reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(filtered.items())) or "none"
    return f"filtered {sum(filtered.values())} ({reasons})"


def format_report(report: AuditReport) -> str:
    """The audit as an operator reads it, ending with a plain verdict."""
    lines = []
    for d in report.destinations:
        lines.append(
            f"{d.destination}: accepted {d.expected} (seq {d.from_seq + 1}..{d.head}) = delivered {d.delivered} "
            f"+ {_filtered_text(d.filtered)} + dead-lettered {d.dead_lettered} "
            f"+ pending {d.pending}"
            + (f"; {d.redriven} dead letters redriven since" if d.redriven else "")
            + (f"; {d.dead_letters_held} dead letters held" if d.dead_letters_held else "")
        )
        for source, outcomes in sorted(d.by_source.items()):
            parts = ", ".join(f"{outcome} {n}" for outcome, n in sorted(outcomes.items()))
            lines.append(f"    source {source}: {parts}")
        if d.unaccounted:
            lines.append(
                f"    UNACCOUNTED: {d.unaccounted} message(s) are neither delivered, filtered, "
                "dead-lettered nor pending"
            )
    if not report.destinations:
        lines.append("no destination has read the log yet")
    for b in report.sources:
        lines.append(
            f"source {b.source}: received {b.received} = stored {b.stored} + duplicates {b.duplicates} "
            f"+ {_filtered_text(b.filtered)} + dead-lettered {b.dead_lettered} "
            f"+ suppressed {b.suppressed}"
        )
    lines.append(
        "every accepted message is accounted for"
        if report.balanced
        else "NOT BALANCED: some messages are unaccounted for"
    )
    return "\n".join(lines)
