"""The console's Schema view: which events each source sent (call type and name), how many and
when last, with their properties, for the sources that keep a field inventory.

It rides on the inventory's message shapes (:meth:`gateway.privacy.classifier.Classifier.survey`
already gives one per message): a message is counted under its event and its shape, one dict
update, and the properties of an event are worked out from its shapes only when someone reads
them. Counts are kept in memory since the gateway started; the field paths themselves, with
first and last seen, are in the persisted inventory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.privacy.classifier import Shape

#: Events kept per source (Segment's Schema lists the first 4,000 too); later ones are counted
#: in no row, as there.
MAX_EVENTS_PER_SOURCE = 4000
#: Shapes remembered per event; messages of further shapes count for the event, not its properties.
MAX_SHAPES_PER_EVENT = 256
#: Where each call type keeps what the Schema lists as its properties.
PROPERTY_ROOT = {"track": "properties.", "page": "properties.", "screen": "properties.", "identify": "traits."}
PROPERTY_ROOT["group"] = "traits."


@dataclass(slots=True)
class _Seen:
    count: int = 0
    last_ms: int = 0
    #: shape -> [messages, last seen ms]
    shapes: dict[Shape, list[int]] = field(default_factory=dict)


@dataclass
class EventSchema:
    """Every inventoried source's events, by (call type, name)."""

    by_source: dict[str, dict[tuple[str, str | None], _Seen]] = field(default_factory=dict)

    def see(self, source_id: str, call: object, name: object, shape: Shape, now_ms: int) -> None:
        """Count one message of ``source_id``: its call type, event or page/screen name, shape."""
        events = self.by_source.get(source_id)
        if events is None:
            events = self.by_source[source_id] = {}
        key = (call if isinstance(call, str) else "", name if isinstance(name, str) else None)
        seen = events.get(key)
        if seen is None:
            if len(events) >= MAX_EVENTS_PER_SOURCE:
                return
            seen = events[key] = _Seen()
        seen.count += 1
        seen.last_ms = now_ms
        by_shape = seen.shapes.get(shape)
        if by_shape is not None:
            by_shape[0] += 1
            by_shape[1] = now_ms
        elif len(seen.shapes) < MAX_SHAPES_PER_EVENT:
            seen.shapes[shape] = [1, now_ms]

    def events(self, source_id: str) -> list[dict[str, Any]]:
        """The source's events, most recently seen first, each with its properties."""
        rows: list[dict[str, Any]] = []
        for (call, name), seen in self.by_source.get(source_id, {}).items():
            root = PROPERTY_ROOT.get(call)
            properties: dict[str, list[int]] = {}
            if root is not None:
                for shape, (count, last_ms) in seen.shapes.items():
                    for path, _, _ in shape.fields:
                        if path.startswith(root):
                            counted = properties.setdefault(path[len(root) :], [0, 0])
                            counted[0] += count
                            counted[1] = max(counted[1], last_ms)
            rows.append(
                {
                    "type": call or None,
                    "event": name,
                    "count": seen.count,
                    "last_seen": seen.last_ms / 1000,
                    "properties": [
                        {"name": path, "count": count, "last_seen": last_ms / 1000}
                        for path, (count, last_ms) in sorted(properties.items())
                    ],
                }
            )
        rows.sort(key=lambda row: row["last_seen"], reverse=True)
        return rows
