"""The privacy field inventory: which field paths each source sends, their most severe class
and the matchers that recognised them, first and last seen; never a value. Kept in memory,
saved to the log every few seconds by the runtime."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import structlog

from gateway.log import InventoryRow
from gateway.privacy.classifier import RANK, FieldClass, Shape

log = structlog.get_logger("gateway.ingest")

#: Distinct (source, path) pairs the field inventory holds at most: keys that are data (ids,
#: emails used as keys) must not grow it without bound.
INVENTORY_MAX_PATHS = 10_000
#: Message shapes per source whose last sighting is remembered instead of booked field by field.
INVENTORY_MAX_SHAPES = 1024


@dataclass(slots=True)
class _Seen:
    """One inventoried field path: most severe class and matcher hits seen, first and last
    seen (ms), and what was last saved, to find the rows to flush."""

    cls: str
    hits: tuple[str, ...]
    first: int
    last: int
    saved: tuple[str, tuple[str, ...], int] | None = None

    def row(self, source: str, path: str) -> InventoryRow:
        return InventoryRow(source, path, self.cls, self.hits, self.first, self.last)


@dataclass
class FieldInventory:
    """The inventory of every source with ``inventory = true``."""

    by_source: dict[str, dict[str, _Seen]] = field(default_factory=dict)
    #: Per source, the message shapes booked already and when one was last seen (ms): a message
    #: of a known shape only refreshes that; its fields' last_seen follow on :meth:`settle`.
    shapes: dict[str, dict[Shape, int]] = field(default_factory=dict)
    size: int = 0
    full_warned: bool = False

    def see(self, source_id: str, shape: Shape, now_ms: int) -> None:
        """Book a message of ``shape`` from ``source_id``: its fields if the shape is new."""
        shapes = self.shapes.get(source_id)
        if shapes is None:
            shapes = self.shapes[source_id] = {}
        elif shape in shapes:
            shapes[shape] = now_ms  # booked already: only last seen moves
            return
        if len(shapes) >= INVENTORY_MAX_SHAPES:
            self.settle()
            shapes.clear()
        self._see_fields(source_id, shape.fields, now_ms)
        shapes[shape] = now_ms

    def settle(self) -> None:
        """Carry the shapes' last sightings over to their fields."""
        for source, shapes in self.shapes.items():
            seen = self.by_source.get(source, {})
            for shape, last in shapes.items():
                for path, _, _ in shape.fields:
                    entry = seen.get(path)
                    if entry is not None and entry.last < last:
                        entry.last = last

    def _see_fields(self, source_id: str, fields: Iterable[FieldClass], now_ms: int) -> None:
        seen = self.by_source.get(source_id)
        if seen is None:
            seen = self.by_source[source_id] = {}
        for finding in fields:
            entry = seen.get(finding.path)
            if entry is not None:
                entry.last = now_ms
                if finding.cls != entry.cls and RANK[finding.cls] > RANK[entry.cls]:
                    entry.cls = finding.cls
                if finding.hits and finding.hits != entry.hits and not set(finding.hits) <= set(entry.hits):
                    entry.hits = tuple(sorted({*entry.hits, *finding.hits}))
                continue
            if self.size >= INVENTORY_MAX_PATHS:
                if not self.full_warned:
                    self.full_warned = True
                    log.warning("privacy_inventory_full", paths=self.size, source=source_id)
                continue
            seen[finding.path] = _Seen(finding.cls, tuple(sorted(finding.hits)), now_ms, now_ms)
            self.size += 1
            # The path, never the value.
            log.info(
                "privacy_field_seen",
                source=source_id,
                path=finding.path,
                hits=list(finding.hits),
                **{"class": finding.cls},
            )

    def load(self, rows: Sequence[InventoryRow]) -> None:
        """Start from the inventory saved by earlier runs (known paths are not logged again)."""
        self.settle()
        self.shapes.clear()  # booked against entries about to be replaced
        for row in rows:
            seen = self.by_source.setdefault(row.source, {})
            if row.path not in seen:
                self.size += 1
            seen[row.path] = _Seen(
                row.cls, row.hits, row.first_seen, row.last_seen, saved=(row.cls, row.hits, row.last_seen)
            )

    def changes(self) -> list[InventoryRow]:
        """Rows that are new or changed since they were last saved."""
        self.settle()
        return [
            entry.row(source, path)
            for source, seen in self.by_source.items()
            for path, entry in seen.items()
            if entry.saved != (entry.cls, entry.hits, entry.last)
        ]

    def saved(self, rows: Sequence[InventoryRow]) -> None:
        """Mark ``rows`` (from :meth:`changes`) as saved, as they were then."""
        for row in rows:
            entry = self.by_source[row.source][row.path]
            entry.saved = (row.cls, row.hits, row.last_seen)
