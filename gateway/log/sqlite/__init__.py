"""The embedded engine of the ingest log: SQLite in WAL mode, with group commit and exact dedup.

May import gateway.log (the protocol and records it implements) and what gateway.log may; only
gateway.log imports it (``open_log``).
"""

# One concept per module: _engine (SQLiteLog: append and the group committer, and the methods that
# run the others' statements), _commit (one commit's transaction), _schema (tables, connections,
# ``transaction``), _dedup (the dedup keys, in slices of the window), _reads (reads and cursors),
# _dead_letters, _deletion (privacy requests), _inventory, _bulk (the bulk writer), _upkeep
# (checkpoints, WAL restarts, purge, size on disk), _reader (the offline reader) and _open (the
# data_dir lock, opening the engine).

from __future__ import annotations

from gateway.log.sqlite._bulk import BulkRow, bulk_load
from gateway.log.sqlite._engine import SQLiteLog
from gateway.log.sqlite._open import open_sqlite_log
from gateway.log.sqlite._reader import SQLiteReader, open_sqlite_reader
from gateway.log.sqlite._schema import DB_NAME

__all__ = ["DB_NAME", "BulkRow", "SQLiteLog", "SQLiteReader", "bulk_load", "open_sqlite_log", "open_sqlite_reader"]
