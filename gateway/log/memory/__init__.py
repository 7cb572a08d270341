"""An ingest log in memory, for tests and the conformance suite: the whole IngestLog protocol with
no threads and no wall-clock waits, so delivery, retry and replay logic runs under trio's autojump
clock. Not an engine the config file can name (``log.engine``): nothing survives the process.

May import gateway.log (the protocol and records it implements) and what gateway.log may;
imported by tests, never by the rest of the gateway.
"""

# _store (what a restart would find: the SQLite engine's tables as Python objects, and the reads
# over them) and _engine (MemoryLog: the writes, each applied at once, and simulated failures).

from __future__ import annotations

from gateway.log.memory._engine import MemoryLog, open_memory_log, open_memory_reader, trio_wall_clock_ms
from gateway.log.memory._store import MemoryStore

__all__ = ["MemoryLog", "MemoryStore", "open_memory_log", "open_memory_reader", "trio_wall_clock_ms"]
