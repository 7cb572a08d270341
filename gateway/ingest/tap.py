"""The console's tap: the last calls each source saw (accepted, duplicate, rejected, filtered), kept in
memory for the Source Debugger, and fanned out live to its subscribers.

Ingest pays as little as possible for it. A call is booked as a row tuple holding what ingest
has at hand anyway (the stored body's bytes, the candidate's payload, the filtered dict), in a
bounded ring per source: one tuple and one ``deque.append`` per message, and nothing else while
no one watches. The JSON a reader sees (:class:`TapEntry`) is built from a row only when it is
read, once per row whoever reads it.

A subscriber (an SSE stream) has a small bounded buffer. A publish offers it rows and drops
what does not fit, counting them (``gateway_console_tap_dropped_total``) and telling the
subscriber as a gap before its next row; a subscriber that reads slowly, or not at all, never
grows memory and never makes ingest wait.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
import trio

from gateway.log import Entry, mentions_user

#: Calls kept per source for the debugger (what a browser sees again after a reload).
RING_SIZE = 500
#: Rows a subscriber's buffer holds; past it, rows are dropped until the subscriber drains it.
SUBSCRIBER_BUFFER = 100
#: A rejected call's payload is kept up to this many bytes (then shown as text, cut).
MAX_RAW_BYTES = 64 * 1024

ACCEPTED, REJECTED, FILTERED, DUPLICATE = "accepted", "rejected", "filtered", "duplicate"
#: Why a duplicate was not stored (the debugger's reason column).
DUPLICATE_REASON = "a copy of a message this source stored within the dedup window: acknowledged, not stored again"

# A row: (id, at, outcome, payload, code, reason). ``payload`` is the stored body (bytes), a
# candidate's payload (bytes or a dict) or a filtered message (a dict). Tuples, not objects:
# one is made per message ingested, so it must cost next to nothing.
Row = tuple[int, float, str, Any, str | None, str | None]

_decode = msgspec.json.decode
_encode = msgspec.json.Encoder(enc_hook=repr).encode
_WRITE_KEY_IN_TEXT = re.compile(rb'("write_?key"\s*:\s*)"(?:[^"\\]|\\.)*"?', re.IGNORECASE)
#: Keys whose values are write keys wherever they sit in a call (what the console's JS hides too).
_WRITE_KEY_NAMES = frozenset({"writekey", "write_key"})
_WRITE_KEY_BYTES = re.compile(rb"write_?key", re.IGNORECASE)


class TapEntry(msgspec.Struct, omit_defaults=False):
    """One call a source saw, as the console shows it. Never holds a write key or a header."""

    id: int
    at: float
    outcome: str
    type: str | None
    event: str | None
    userId: str | None
    anonymousId: str | None
    messageId: str | None
    code: str | None
    reason: str | None
    message: Any


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _payload_message(payload: Any) -> Any:
    """The call as a JSON object when it is one (``writeKey`` left out), else its text (cut)."""
    if payload is None:
        return None
    message: Any = payload
    data = b""
    if type(payload) is not dict:
        data = bytes(payload) if isinstance(payload, msgspec.Raw | bytearray | memoryview) else payload
        if isinstance(data, str):
            data = data.encode()
        if not isinstance(data, bytes):
            return repr(data)[: MAX_RAW_BYTES // 4]
        try:
            message = _decode(data) if len(data) <= MAX_RAW_BYTES else None
        except msgspec.DecodeError:
            message = None
        if type(message) is not dict:
            return _WRITE_KEY_IN_TEXT.sub(rb'\1"***"', data[:MAX_RAW_BYTES]).decode("utf-8", "replace")
    if "writeKey" in message:
        message = {k: v for k, v in message.items() if k != "writeKey"}
    # Deeper ones (an item's context, a batch refused whole): walked only when the call names one.
    if type(payload) is dict or _WRITE_KEY_BYTES.search(data):
        message = _hide_write_keys(message)
    return message


def _hide_write_keys(value: Any) -> Any:
    """``value`` with the value of every write-key-named key at any depth shown as ``***``."""
    if type(value) is dict:
        return {
            k: "***" if type(k) is str and k.lower() in _WRITE_KEY_NAMES else _hide_write_keys(v)
            for k, v in value.items()
        }
    if type(value) is list:
        return [_hide_write_keys(v) for v in value]
    return value


def render(row: Row) -> TapEntry:
    """The :class:`TapEntry` of a row."""
    rid, at, outcome, payload, code, reason = row
    message = _payload_message(payload)
    fields: dict[str, Any] = message if type(message) is dict else {}
    call = _text(fields.get("type"))
    event = fields.get("event") if call in (None, "track") else fields.get("name")
    return TapEntry(
        id=rid,
        at=at,
        outcome=outcome,
        type=call,
        event=_text(event),
        userId=_text(fields.get("userId")),
        anonymousId=_text(fields.get("anonymousId")),
        messageId=_text(fields.get("messageId")),
        code=code,
        reason=reason,
        message=message,
    )


class _RenderCache:
    """Each row's JSON, built once for however many readers (bounded: the newest rows)."""

    def __init__(self, size: int = 4 * SUBSCRIBER_BUFFER) -> None:
        self._json: dict[int, bytes] = {}
        self._order: deque[int] = deque()
        self._size = size

    def json(self, row: Row) -> bytes:
        found = self._json.get(row[0])
        if found is None:
            found = self._json[row[0]] = _encode(render(row))
            self._order.append(row[0])
            if len(self._order) > self._size:
                self._json.pop(self._order.popleft(), None)
        return found


class Subscriber:
    """One live reader of a source's calls, with a bounded buffer."""

    def __init__(self, source: str, capacity: int) -> None:
        self.source = source
        self.capacity = capacity
        self._rows: list[Row] = []
        self._dropped = 0
        self._arrived = trio.Event()
        #: Set when the gateway stops: the reader ends its stream.
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self._arrived.set()

    def offer(self, rows: Sequence[Row]) -> int:
        """Buffer what fits of ``rows``; returns how many were dropped."""
        room = self.capacity - len(self._rows)
        if room >= len(rows):
            self._rows.extend(rows)
            dropped = 0
        else:
            if room > 0:
                self._rows.extend(rows[:room])
            dropped = len(rows) - max(room, 0)
            self._dropped += dropped
        self._arrived.set()
        return dropped

    async def wait(self) -> None:
        """Return once rows (or a gap) wait to be taken."""
        await self._arrived.wait()

    def take(self) -> tuple[list[Row], int]:
        """The buffered rows, and how many were dropped after them (a gap before the next row)."""
        rows, dropped = self._rows, self._dropped
        self._rows, self._dropped = [], 0
        self._arrived = trio.Event()
        return rows, dropped


class Tap:
    """The rings of every source and their subscribers, for one gateway process."""

    def __init__(self, on_dropped: Any = None, *, ring_size: int = RING_SIZE) -> None:
        self._rings: dict[str, deque[Row]] = {}
        self._seen: dict[str, int] = {}
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._next_id = 1
        self._ring_size = ring_size
        self._on_dropped = on_dropped  # called with a count: the metric
        self._cache = _RenderCache()

    def _ring(self, source: str) -> deque[Row]:
        ring = self._rings.get(source)
        if ring is None:
            ring = self._rings[source] = deque(maxlen=self._ring_size)
        return ring

    # -- booking (ingest's side: no awaits, next to no work) --------------------------------

    def accepted(self, entries: Iterable[Entry], duplicate_positions: Sequence[int] = ()) -> None:
        """Book stored calls (as the log holds them: server fields set, privacy applied); the
        entries at ``duplicate_positions`` were duplicates the log did not store again."""
        at = time.time()
        rid = self._next_id
        rings = self._rings
        seen = self._seen
        watched = self._subscribers
        published: dict[str, list[Row]] | None = {} if watched else None
        duplicates = frozenset(duplicate_positions) if duplicate_positions else None
        for position, entry in enumerate(entries):
            source = entry.source
            row: Row
            if duplicates is not None and position in duplicates:
                row = (rid, at, DUPLICATE, entry.body, None, DUPLICATE_REASON)
            else:
                row = (rid, at, ACCEPTED, entry.body, None, None)
            rid += 1
            ring = rings.get(source)
            if ring is None:
                ring = self._ring(source)
            ring.append(row)
            seen[source] = seen.get(source, 0) + 1
            if published is not None and source in watched:
                published.setdefault(source, []).append(row)
        self._next_id = rid
        if published:
            self._publish(published)

    def book(self, source: str, outcome: str, payload: Any, code: str | None, reason: str | None) -> None:
        """Book one rejected or filtered call."""
        if isinstance(payload, msgspec.Raw | bytearray | memoryview):
            payload = bytes(payload)
        if isinstance(payload, bytes) and len(payload) > MAX_RAW_BYTES:
            payload = payload[:MAX_RAW_BYTES]
        row = (self._next_id, time.time(), outcome, payload, code, reason)
        self._next_id += 1
        self._ring(source).append(row)
        self._seen[source] = self._seen.get(source, 0) + 1
        if source in self._subscribers:
            self._publish({source: [row]})

    def _publish(self, rows_by_source: dict[str, list[Row]]) -> None:
        dropped = 0
        for source, rows in rows_by_source.items():
            for subscriber in self._subscribers.get(source, ()):
                dropped += subscriber.offer(rows)
        if dropped and self._on_dropped is not None:
            self._on_dropped(dropped)

    def forget_user(self, spellings: tuple[bytes, ...]) -> int:
        """Drop the kept calls that hold a deleted user's data (a deletion request); returns
        how many went. Rows are matched on their JSON, as a reader would see them."""
        forgotten = 0
        for source, ring in self._rings.items():
            kept = [row for row in ring if not mentions_user(_encode(render(row)), spellings)]
            if len(kept) < len(ring):
                forgotten += len(ring) - len(kept)
                self._rings[source] = deque(kept, maxlen=ring.maxlen)
        if forgotten:
            self._cache = _RenderCache()
        return forgotten

    # -- reading (the admin API's side) -----------------------------------------------------

    def recent(self, source: str, limit: int = RING_SIZE) -> list[Row]:
        """The last ``limit`` rows of ``source``, newest first."""
        ring = self._rings.get(source)
        if not ring or limit <= 0:
            return []
        rows = list(ring)[-limit:]
        rows.reverse()
        return rows

    def seen(self, source: str) -> int:
        """How many calls of ``source`` were booked since the process started (kept or not)."""
        return self._seen.get(source, 0)

    def json(self, row: Row) -> bytes:
        """The JSON of a row's :class:`TapEntry`."""
        return self._cache.json(row)

    @contextmanager
    def subscribe(self, source: str, capacity: int = SUBSCRIBER_BUFFER) -> Iterator[Subscriber]:
        """A live subscriber to ``source``'s calls, for the duration of the block."""
        subscriber = Subscriber(source, capacity)
        self._subscribers.setdefault(source, set()).add(subscriber)
        try:
            yield subscriber
        finally:
            subscribers = self._subscribers[source]
            subscribers.discard(subscriber)
            if not subscribers:
                del self._subscribers[source]

    def close_subscribers(self) -> None:
        """End every live stream (the gateway is stopping: they must not hold its shutdown)."""
        for subscribers in self._subscribers.values():
            for subscriber in subscribers:
                subscriber.close()

    def subscribers(self) -> int:
        """How many subscribers are connected, over every source."""
        return sum(len(s) for s in self._subscribers.values())
