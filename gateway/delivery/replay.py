"""Replays: a destination sent a range of the log again, through a cursor of its own."""

from __future__ import annotations

import msgspec


class Replay(msgspec.Struct, frozen=True):
    """A destination sent a range of the log again: seqs ``(start_seq, end_seq]``, through a
    cursor of its own named ``name`` (``replay:<destination>:<end_seq>:<created ms>``), which
    is persisted like any cursor, so a replay survives restarts and reloads until it is done."""

    destination: str
    start_seq: int
    end_seq: int
    created_ms: int

    @property
    def name(self) -> str:
        return f"{REPLAY_PREFIX}{self.destination}:{self.end_seq}:{self.created_ms}"

    @classmethod
    def parse(cls, name: str, start_seq: int) -> Replay | None:
        """The replay a cursor name stands for, or None when it is not a replay's."""
        if not name.startswith(REPLAY_PREFIX):
            return None
        destination, end, created = name[len(REPLAY_PREFIX) :].rsplit(":", 2)
        return cls(destination, start_seq, int(end), int(created))


#: Cursor names of replays start with this; the audit leaves them out of the books.
REPLAY_PREFIX = "replay:"
