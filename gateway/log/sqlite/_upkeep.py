"""Upkeep of the SQLite log, off the commit path: checkpoints, WAL restarts and truncation, purging
what every destination has, and measuring the size on disk."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from time import monotonic
from typing import Literal

import structlog
import trio

from gateway.log.sqlite._schema import transaction
from gateway.telemetry import ThrottledWarning

log = structlog.get_logger("gateway.log")

PURGE_CHUNK = 5000
#: Past this size (or an eighth of ``log.max_disk_bytes`` if less), a checkpoint restarts the
#: WAL and SQLite truncates the file back to it. Passive checkpoints alone never restart it while
#: commits keep coming, so under sustained load it grew by everything written: 660 MB in 25 s of
#: bench/ingest.py batches.
WAL_RESTART_BYTES = 64 * 1024 * 1024
#: A restart waits for every reader to leave the WAL, and commits wait behind it: this long at
#: most. Another process's reader (``gateway audit``, a backup, a sqlite3 shell) can hold it
#: for longer, so after a busy try the restart waits this many seconds, doubling up to the max.
WAL_RESTART_WAIT_MS = 10
WAL_RESTART_BACKOFF_SECS = (30.0, 600.0)

# Purge walks from the oldest rows only (seq order follows arrival), so it costs what it
# deletes, not the size of the log. It never reaches the newest row (seq < head).
_PURGE = (
    "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages WHERE seq <= ? AND seq < ? "
    f"ORDER BY seq LIMIT {PURGE_CHUNK}) AND received_at < ?"
)


#: The log refuses new messages this far below ``log.max_disk_bytes`` (or a sixteenth of it, if
#: less). What it cannot count before it happens lands in that room: the dedup keys written out
#: (a random key dirties a page of its slice: 4 KiB in the WAL for ~40 bytes of key), cursor and
#: series saves, the group commit already admitted. Without it, bench/log_growth.py went 0.5%
#: past the bound (4.7 MiB at 0.9 GiB).
DISK_RESERVE_BYTES = 64 * 1024 * 1024


def full_at(max_disk_bytes: int) -> int:
    """The size on disk from which appends are refused: ``max_disk_bytes`` less the reserve."""
    return max_disk_bytes - min(DISK_RESERVE_BYTES, max_disk_bytes // 16)


def wal_limit(max_disk_bytes: int) -> int:
    """How much the WAL may hold before a checkpoint restarts it (see WAL_RESTART_BYTES)."""
    return min(WAL_RESTART_BYTES, max_disk_bytes // 8)


class Upkeep:
    """Checkpoints, WAL restarts, purges and the size on disk of one engine's database.

    Args:
        path: The database file.
        writer: The engine's writing connection (purges and WAL restarts run on it, between
            commits, under ``write_lock``).
        maintainer: A connection of its own for passive checkpoints and measuring.
        write_lock: The writer's limiter (the committer holds it for each commit).
        read_lock: The reading connection's limiter: held during a WAL restart, so that this
            process's readers do not keep the WAL from starting over.
        wal_limit: See :func:`wal_limit`.
    """

    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection,
        maintainer: sqlite3.Connection,
        *,
        write_lock: trio.CapacityLimiter,
        read_lock: trio.CapacityLimiter,
        wal_limit: int,
    ) -> None:
        self._path = path
        self._writer = writer
        self._maintainer = maintainer
        self._write_lock = write_lock
        self._read_lock = read_lock
        self._maintain_lock = trio.CapacityLimiter(1)
        self._wal_limit = wal_limit
        #: When the WAL may next be restarted, and the wait after the next busy try.
        self._wal_restart_at = 0.0
        self._wal_restart_backoff = WAL_RESTART_BACKOFF_SECS[0]
        self._wal_busy_warning = ThrottledWarning(log, "wal_restart_busy", interval_secs=600.0)
        # Fixed once the database exists (a WAL database cannot change it).
        self._page_size: int = maintainer.execute("PRAGMA page_size").fetchone()[0]

    async def purge(self, delivered_up_to: int, head: int, cutoff_ms: int) -> int:
        """Delete messages up to ``delivered_up_to`` (never the newest row, ``head``) received
        before ``cutoff_ms``. Returns how many were deleted."""

        def purge_chunk() -> int:
            with transaction(self._writer):
                deleted: int = self._writer.execute(_PURGE, (delivered_up_to, head, cutoff_ms)).rowcount
            return deleted

        def forget_deleted_seqs() -> None:
            # No destination can start below the oldest message left, so older holes are moot.
            with transaction(self._writer):
                self._writer.execute("DELETE FROM deleted_seqs WHERE seq < (SELECT min(seq) FROM messages)")

        total = 0
        # One chunk per transaction, so commits interleave with a long purge.
        while True:
            deleted = await trio.to_thread.run_sync(purge_chunk, limiter=self._write_lock)
            total += deleted
            if deleted < PURGE_CHUNK:
                break
        if total:
            await trio.to_thread.run_sync(forget_deleted_seqs, limiter=self._write_lock)
        return total

    async def checkpoint(self) -> tuple[int, int]:
        """Copy the WAL into the database without blocking commits (PASSIVE), and re-measure.
        Returns the size on disk and how much the WAL holds since it last started over."""

        def run() -> tuple[int, int]:
            frames = self._maintainer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
            # What the WAL holds since it last started over; the file keeps its size after a
            # restart (up to the limit), so its size says nothing once a burst is over.
            return self.measure_disk_bytes(self._maintainer), max(frames, 0) * self._page_size

        return await trio.to_thread.run_sync(run, limiter=self._maintain_lock)

    async def restart_wal_if_due(self, wal_in_use: int) -> None:
        """Past :data:`WAL_RESTART_BYTES`, restart the WAL, which passive checkpoints never do
        while commits keep coming; after a busy try, not again before the backoff has passed."""
        now = monotonic()
        if wal_in_use <= self._wal_limit or now < self._wal_restart_at:
            return
        if await self.reset_wal("RESTART", wait_ms=WAL_RESTART_WAIT_MS):
            self._wal_restart_backoff = WAL_RESTART_BACKOFF_SECS[0]
            return
        self._wal_restart_at = now + self._wal_restart_backoff
        self._wal_busy_warning(
            wal_bytes=self._wal_bytes(),
            retry_in_secs=self._wal_restart_backoff,
            reason="another connection keeps reading the log, so the WAL cannot start over",
        )
        self._wal_restart_backoff = min(self._wal_restart_backoff * 2, WAL_RESTART_BACKOFF_SECS[1])

    async def truncate_wal(self) -> None:
        """Checkpoint the whole WAL into the database and truncate it to zero bytes, so the
        page images from before a deletion are gone from the disk. Retries while a reader
        (a worker, an admin command) holds an older snapshot."""
        for _ in range(50):
            if await self.reset_wal("TRUNCATE", wait_ms=100):
                return
            await trio.sleep(0.1)
        log.warning("wal_not_truncated", reason="a reader kept an old snapshot; the next checkpoints overwrite it")

    async def reset_wal(self, mode: Literal["RESTART", "TRUNCATE"], wait_ms: int) -> bool:
        """Checkpoint all of the WAL so the next commit writes it from the start (RESTART), or
        truncate it too (TRUNCATE). False if a reader of another process holds an older snapshot.

        It runs on the writer between commits, with this process's readers held back, so
        only what the last passive checkpoint left is copied while commits wait.
        """

        def run() -> bool:
            # Briefly: commits wait behind this, so a reader in the way means "try again later".
            self._writer.execute(f"PRAGMA busy_timeout = {wait_ms}")
            try:
                busy: int = self._writer.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0]
            finally:
                self._writer.execute("PRAGMA busy_timeout = 30000")
            return busy == 0

        async with self._maintain_lock, self._read_lock:
            return await trio.to_thread.run_sync(run, limiter=self._write_lock)

    def measure_disk_bytes(self, conn: sqlite3.Connection | None = None) -> int:
        """The bytes the database uses (free pages left out) plus the WAL's and its index's."""
        conn = conn or self._maintainer
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * self._page_size + self._wal_bytes() + self._file_bytes("-shm"))

    def _wal_bytes(self) -> int:
        return self._file_bytes("-wal")

    def _file_bytes(self, suffix: str) -> int:
        try:
            return os.path.getsize(f"{self._path}{suffix}")
        except OSError:
            return 0
