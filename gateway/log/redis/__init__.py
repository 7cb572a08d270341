"""The shared engine of the ingest log: Redis Streams, for many gateways on one log.

How the log's promises map onto Redis, and why:

- **Seqs stay global and gap-free.** The append script takes each stored message's seq from
  ``P:seq`` (the head) and adds it to the stream ``P:log`` as entry id ``<seq>-0``; the body goes
  to the hash ``P:body`` under its seq. Every gateway appends through the same script, which
  Redis runs one at a time, so seqs are gap-free across gateways and ``head - start`` is still
  exactly what a destination is responsible for: the audit's arithmetic does not change.
  (Bodies live beside the stream, not in it, because a stream entry cannot change: a deletion
  request turns a body into a tombstone in place, or deletes it for good, bytes and all.)
- **Append, dedup and the source books are one script.** ``P:dedup`` maps
  ``source\\0messageId`` to its seq (HSETNX: a duplicate is skipped by the write that would
  store it); the books' counters (``P:books``, by source, outcome and hour) and source dead
  letters are written by the same call. A script runs whole or not at all against other
  clients, and with ``appendonly yes`` its effects reach the AOF as one MULTI/EXEC, which a
  restart replays whole or drops whole. Group commit: the requests that queued while the
  previous commit ran go as one pipeline of script calls (split between requests every
  few thousand entries, so no call blocks Redis for long), then one ``WAIT`` when
  ``log.replicas`` is set; a client is answered after that round trip. With ``appendfsync
  always`` Redis fsyncs the AOF before it replies; the gateway refuses to start on weaker
  settings than ``log.synchronous`` asks for (see ``_client.check_durability``).
- **Cursors, not consumer groups.** Each destination keeps one cursor (``P:cursors``) and its
  outcome rows (``P:out:<name>``), moved together by one script, as in SQLite. Several
  gateways share a destination through a lease (``P:lease:<name>``, ``log.lease_secs``): one
  gateway at a time holds it, renews it, and is the only one whose cursor moves are accepted
  (the script checks the holder, so a gateway that was paused past its lease cannot move a
  cursor another took over). A gateway that dies stops renewing; another takes the
  destination over from the saved cursor, re-sending at most what the dead one had in flight
  (``concurrency`` batches): the same bound as a crash of a lone gateway. Consumer groups
  (XREADGROUP/XACK/XAUTOCLAIM) would spread one destination's batches over gateways, but acks
  land out of order, so "everything up to the cursor is booked" would no longer hold: exact
  books would need a record per message instead of a position, and destinations would see
  batches out of log order. Delivery is rarely the bottleneck (ingestion's HTTP stack is); the
  lease keeps order and the books' exactness.
- **The dedup window** is the one of every engine: a key is a duplicate while its earlier copy
  was stored at most ``dedup_window_secs`` ago (the append script reads that copy's
  ``received_at`` from the stream; an older copy hands the key to the new message). **The
  archive**: a message stays until every destination has it and it is older than both
  ``archive_secs`` and ``dedup_window_secs``; purge trims the stream by id (XTRIM MINID) from
  the oldest end, with the bodies and the dedup keys still theirs. The newest message always stays.
  ``received_at`` never decreases along the log (the script keeps ``P:last_ms``), so a time
  range is found by binary search over entry ids (replays, ``start_at``).
- **Deletion requests** scan the log for the userId, ten thousand messages per script call
  (about a millisecond of Redis time per thousand messages; a full scan of 10M messages takes
  Redis ~10 s of CPU, spread over a thousand calls), then one script removes them, re-checking
  what was stored since the scan. Which rows may be in flight is known across gateways: every
  read records the highest seq handed to each reader (``P:read_upto``). Afterwards an AOF
  rewrite is started, so the removed bodies leave Redis's files too.
- **Shared state** every gateway caches (head, size, suppression list, deletion count,
  cursors) is refreshed by :meth:`RedisLog.checkpoint` every second; a gateway's own writes
  update it at once. A head watcher (a blocking XREAD on its own connection) wakes destination
  workers when another gateway appends.

Every key starts with ``{<log.prefix>}:``, a Cluster hash tag: a log's keys share one slot, as
its scripts need; a Redis Cluster spreads several logs (one prefix each), not one log.

redis-py runs in worker threads (it has no trio support; its asyncio client would need an
asyncio loop), at most a few at a time, like the SQLite engine's connections.

May import gateway.log (the protocol and records it implements) and what gateway.log may; only
gateway.log imports it (``open_log``).
"""

from __future__ import annotations

from gateway.log.redis._engine import RedisLog
from gateway.log.redis._open import open_redis_log, open_redis_reader

__all__ = ["RedisLog", "open_redis_log", "open_redis_reader"]
