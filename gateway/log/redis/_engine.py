"""The Redis engine's :class:`RedisLog`: group commit through one script call, reads, cursors
held by one gateway at a time, and the cached state (head, size, suppressions) every gateway
refreshes from Redis."""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import Any, TypeVar, cast

import msgspec
import redis
import structlog
import trio

from gateway.components import Record
from gateway.config import LogConfig
from gateway.errors import CursorLostError, LogUnavailableError
from gateway.log import (
    SEND_STAGE,
    SERIES_KEEP_MS,
    AppendResult,
    BacklogInfo,
    Clock,
    DeadLetter,
    DeletionReport,
    Entry,
    InventoryRow,
    LogBooks,
    LogStatistics,
    Outcomes,
    SeriesCounts,
    SeriesSample,
    SourceLetter,
    mentions_user,
    user_spellings,
)
from gateway.log.redis import _lua
from gateway.log.redis._books import assemble_books
from gateway.log.redis._client import unavailable

log = structlog.get_logger("gateway.log")
T = TypeVar("T")

#: Entries per script call: a script blocks Redis while it runs, so a large group goes as
#: several calls (split between requests, each request's entries and books in one call),
#: pipelined in one round trip.
SCRIPT_ENTRIES = 4096
#: Messages a deletion request's scan, and the books' pending count, look at per script call
#: (each call blocks Redis for about a millisecond per thousand).
SCAN_CHUNK = 10_000
PURGE_CHUNK = 5000
#: How long the head watcher's XREAD blocks before it looks again (ms).
WATCH_BLOCK_MS = 1000


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _b(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


class _Waiter:
    __slots__ = ("done", "entries", "error", "letters", "redriven", "result", "tally")

    def __init__(
        self,
        entries: Sequence[Entry],
        letters: Sequence[SourceLetter],
        tally: Mapping[tuple[str, str], int] | None,
        redriven: Sequence[int],
    ) -> None:
        self.entries, self.letters, self.tally, self.redriven = entries, letters, tally, redriven
        self.done = trio.Event()
        self.result: AppendResult | None = None
        self.error: LogUnavailableError | None = None

    def packed(self, args: list[Any]) -> None:
        """Add this request to an APPEND call's arguments (see ``_lua.APPEND``)."""
        tally = [(s, o, n) for (s, o), n in (self.tally or {}).items() if n]
        args += [
            len(self.entries),
            len(self.letters),
            1 if self.tally is not None else 0,
            len(tally),
            len(self.redriven),
        ]
        for e in self.entries:
            args += [e.source, e.message_id, e.body]
        for x in self.letters:
            args += [x.destination, x.source, x.body, x.error, x.stage]
        for t in tally:
            args += t
        args += self.redriven


class RedisLog:
    """The Redis engine behind :class:`gateway.log.IngestLog`. Build it with
    :func:`gateway.log.redis.open_redis_log` (or ``open_redis_reader``: every write refused).
    """

    def __init__(
        self,
        config: LogConfig,
        client: redis.Redis,
        *,
        clock_ms: Clock,
        observe_commit: Callable[[float], None] | None = None,
        read_only: bool = False,
    ) -> None:
        self._config = config
        self._client = client
        self._now_ms = clock_ms
        self._observe_commit = observe_commit
        prefix = "{" + config.prefix + "}"
        self._prefix = prefix
        self._stream = f"{prefix}:log"
        self._scripts = {name: client.register_script(getattr(_lua, name)) for name in _SCRIPT_NAMES}
        #: Who this gateway is, in leases (host, pid, a random part: a restarted one is another).
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._limiter = trio.CapacityLimiter(8)
        self._closed = read_only
        self._read_only = read_only
        self._failure: LogUnavailableError | None = None  # why the last write or probe failed
        self._commits = 0
        self._head = 0
        self._disk_bytes = 0
        self._cursors: dict[str, int] = {}
        self._supp_version = b""
        self.suppressed: frozenset[str] = frozenset()
        self.deletions = 0
        self._held: set[str] = set()
        self._queue: list[_Waiter] = []
        self._queued_messages = 0
        self._work = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._advanced = trio.Event()
        self._watching = 0  # tasks in wait_for_records
        self._watch_wanted = trio.Event()

    # -- running calls -------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` (a blocking redis-py call) in a worker thread; its errors as
        :class:`LogUnavailableError` (the HTTP layer's 503, the worker's retry)."""
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except redis.RedisError as error:
            raise unavailable(error) from error

    def _script(self, name: str, *args: Any) -> Any:
        return self._scripts[name](keys=[self._stream], args=[self._prefix, *args])

    async def _run(self, name: str, *args: Any) -> Any:
        return await self._call(self._script, name, *args)

    async def _write(self, name: str, *args: Any) -> Any:
        self._refuse_when_closed()
        return await self._run(name, *args)

    # -- starting --------------------------------------------------------------------------------

    async def load(self) -> None:
        """Mark the log as created (the offline reader checks it), and read the state every
        gateway caches: head, size, cursors, suppressions, deletions."""
        if not self._read_only:
            await self._call(self._client.set, f"{self._prefix}:created", self._now_ms(), None, None, True)
        await self.refresh()

    async def refresh(self) -> None:
        p = self._prefix

        def read() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            pipe.get(f"{p}:seq")
            pipe.get(f"{p}:bytes")
            pipe.get(f"{p}:deletions")
            pipe.hgetall(f"{p}:cursors")
            pipe.get(f"{p}:supp_v")
            return pipe.execute()

        head, size, deletions, cursors, supp_version = await self._call(read)
        self._set_head(int(head or 0))
        self._disk_bytes = int(size or 0)
        self.deletions = int(deletions or 0)
        self._cursors = {_s(name): int(value.split()[0]) for name, value in cursors.items()}
        if supp_version != self._supp_version or not self._supp_version:
            users = await self._call(self._client.hkeys, f"{p}:supp")
            self.suppressed = frozenset(_s(u) for u in users)
            self._supp_version = supp_version or b"0"

    def _set_head(self, head: int) -> None:
        if head > self._head:
            self._head = head
            self._advanced.set()
            self._advanced = trio.Event()

    # -- appending: the group committer ---------------------------------------------------------

    async def append(
        self,
        entries: Sequence[Entry],
        *,
        letters: Sequence[SourceLetter] = (),
        tally: Mapping[tuple[str, str], int] | None = None,
        redriven: Sequence[int] = (),
    ) -> AppendResult:
        self._refuse_when_closed()
        if self._disk_bytes >= self._config.max_disk_bytes:
            raise LogUnavailableError(
                "log_full",
                f"the log holds {self._disk_bytes} bytes in Redis, at or past log.max_disk_bytes "
                f"({self._config.max_disk_bytes}); waiting for delivery and purging to free space",
            )
        if self._queued_messages + len(entries) > self._config.max_pending_messages:
            raise LogUnavailableError("overloaded", "too many messages are waiting for a commit")
        if not entries and not letters and not tally and not redriven:
            return AppendResult(stored=0, duplicates=0)
        waiter = _Waiter(entries, letters, tally, redriven)
        self._queue.append(waiter)
        self._queued_messages += len(entries)
        self._work.set()
        if self._idle.is_set():
            self._idle = trio.Event()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        assert waiter.result is not None
        return waiter.result

    async def run_committer(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit whatever queued while the previous commit ran, for ever (group commit): one
        round trip of script calls, then (with ``log.replicas``) one WAIT."""
        task_status.started()
        while True:
            await self._work.wait()
            self._work = trio.Event()
            waiters, self._queue = self._queue, []
            self._queued_messages = 0
            started = time.perf_counter()
            try:
                results = await trio.to_thread.run_sync(self._commit_group, waiters, self._now_ms())
            except Exception as error:  # redis errors, and a bug must not take the committer down either
                failure = unavailable(error) if isinstance(error, redis.RedisError | LogUnavailableError) else None
                if isinstance(error, LogUnavailableError):
                    failure = error
                if failure is None:
                    failure = LogUnavailableError("log_error", f"the commit failed: {type(error).__name__}: {error}")
                log.error("log_commit_failed", reason=failure.reason, error=str(error))
                for waiter in waiters:
                    waiter.error = failure
                self._failure = failure
            else:
                self._failure = None
                self._commits += 1
                if self._observe_commit is not None:
                    self._observe_commit(time.perf_counter() - started)
                head = self._head
                for waiter, (result, chunk_head) in zip(waiters, results, strict=True):
                    waiter.result = result
                    head = max(head, chunk_head)
                self._disk_bytes += sum(len(e.body) + 64 for w in waiters for e in w.entries)
                self._set_head(head)
            finally:
                for waiter in waiters:
                    waiter.done.set()
                if not self._work.is_set():
                    self._idle.set()

    def _commit_group(self, waiters: list[_Waiter], now: int) -> list[tuple[AppendResult, int]]:
        """One pipeline: the group's requests in script calls of about :data:`SCRIPT_ENTRIES`
        entries, then WAIT for the replicas. Runs in a worker thread."""
        chunks: list[list[_Waiter]] = [[]]
        size = 0
        for waiter in waiters:
            if chunks[-1] and size + len(waiter.entries) > SCRIPT_ENTRIES:
                chunks.append([])
                size = 0
            chunks[-1].append(waiter)
            size += len(waiter.entries)
        pipe = self._client.pipeline(transaction=False)
        append = self._scripts["APPEND"]
        for chunk in chunks:
            args: list[Any] = [self._prefix, now, self._config.dedup_window_secs * 1000]
            for waiter in chunk:
                waiter.packed(args)
            append(keys=[self._stream], args=args, client=pipe)
        if self._config.replicas:
            pipe.wait(self._config.replicas, self._config.replica_timeout_ms)
        replies = pipe.execute()
        if self._config.replicas and replies[-1] < self._config.replicas:
            raise LogUnavailableError(
                "replicas_behind",
                f"only {replies[-1]} of log.replicas = {self._config.replicas} replicas confirmed the commit "
                f"within {self._config.replica_timeout_ms} ms",
            )
        results = []
        for chunk, reply in zip(chunks, replies, strict=False):
            head = int(reply[0])
            for waiter, (stored, *duplicate_positions) in zip(chunk, reply[2:], strict=True):
                stored = max(int(stored), 0)  # -1: another gateway redrove its letters first
                result = AppendResult(
                    stored=stored,
                    duplicates=len(waiter.entries) - stored,
                    duplicate_positions=tuple(map(int, duplicate_positions)),
                )
                results.append((result, head))
        return results

    # -- the head: this gateway's commits, and a watcher for everyone else's ---------------------

    def head(self) -> int:
        return self._head

    async def wait_for_records(self, after_seq: int) -> None:
        if self._head > after_seq:
            return
        self._watching += 1
        self._watch_wanted.set()
        try:
            while self._head <= after_seq:
                await self._advanced.wait()
        finally:
            self._watching -= 1

    async def run_watcher(
        self, client: redis.Redis, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """While someone waits for records, block in XREAD (its own connection) for entries
        after the head this gateway knows, and take the head from Redis when one comes."""
        task_status.started()
        backoff = 0.1
        while True:
            if not self._watching:
                self._watch_wanted = trio.Event()
                await self._watch_wanted.wait()
            known = self._head

            def block(known: int = known) -> int | None:
                found = client.xread({self._stream: f"{known}-0"}, count=1, block=WATCH_BLOCK_MS)
                return int(client.get(f"{self._prefix}:seq") or 0) if found else None

            try:
                head = await trio.to_thread.run_sync(block, abandon_on_cancel=True)
            except redis.RedisError:
                await trio.sleep(backoff)  # Redis is away: look again, less often
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if head is not None:
                self._set_head(head)

    # -- cursors, and holding them -----------------------------------------------------------------

    async def cursor(self, destination: str, *, start_ms: int | None = None) -> int:
        if destination not in self._cursors:
            seq = await self._write("CURSOR", destination, "" if start_ms is None else start_ms, self._now_ms())
            self._cursors[destination] = int(seq)
            self._commits += 1
        return self._cursors[destination]

    async def hold(self, destination: str) -> int | None:
        """Wait until no other gateway holds ``destination``'s cursor, then hold it (renewed by
        :meth:`run_renewer` until :meth:`release`); returns its position then (None when the
        cursor is gone: a replay another gateway finished)."""
        lease_ms = int(self._config.lease_secs * 1000)
        while True:
            try:
                got, value, *rest = await self._run("HOLD", destination, self.holder, lease_ms)
            except LogUnavailableError:
                await trio.sleep(self._config.lease_secs / 4)
                continue
            if int(got):
                self._held.add(destination)
                seq = int(value)
                if seq < 0:
                    return None
                self._cursors[destination] = seq
                return seq
            left_ms = int(rest[0]) if rest else lease_ms
            await trio.sleep(min(max(left_ms, 50), lease_ms / 4) / 1000)

    async def release(self, destination: str) -> None:
        """Stop holding ``destination``'s cursor, so another gateway may take it at once."""
        self._held.discard(destination)
        with suppress(LogUnavailableError):  # else the hold runs out by itself
            await self._run("RELEASE", self.holder, destination)

    async def run_renewer(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew this gateway's holds every third of ``log.lease_secs``."""
        task_status.started()
        while True:
            await trio.sleep(self._config.lease_secs / 3)
            if not self._held:
                continue
            try:
                lost = await self._run("RENEW", self.holder, int(self._config.lease_secs * 1000), *sorted(self._held))
            except LogUnavailableError as error:
                log.warning("cursor_holds_not_renewed", reason=error.reason)
                continue
            for name in lost:
                self._held.discard(_s(name))
                log.warning("cursor_taken_over", cursor=_s(name))

    async def set_cursor(self, destination: str, seq: int, outcomes: Outcomes | None = None) -> None:
        self._refuse_when_closed()
        args: list[Any] = [destination, seq, self._now_ms(), self.holder]
        for (source, outcome), count in (outcomes or {}).items():
            args += [source, outcome, count]
        try:
            await self._run("SET_CURSOR", *args)
        except CursorLostError as error:
            self._held.discard(destination)
            raise CursorLostError(destination, error.holder) from error
        self._cursors[destination] = seq
        self._commits += 1

    async def cursors(self) -> dict[str, tuple[int, int]]:
        rows = await self._call(self._client.hgetall, f"{self._prefix}:cursors")
        out = {}
        for name, value in rows.items():
            seq, start = value.split()
            out[_s(name)] = (int(seq), int(start))
        return out

    async def forget_cursor(self, name: str) -> None:
        await self._write("FORGET_CURSOR", name)
        self._cursors.pop(name, None)
        self._held.discard(name)

    async def seq_range(self, since_ms: int, until_ms: int | None = None) -> tuple[int, int]:
        after, upto = await self._run("SEQ_RANGE", since_ms, "" if until_ms is None else until_ms)
        return int(after), int(upto)

    # -- reads -----------------------------------------------------------------------------------

    async def read(
        self, after_seq: int, *, max_records: int, max_bytes: int, reader: str | None = None
    ) -> list[Record]:
        name = "-" if self._read_only else (reader or "")
        flat = await self._run("READ", after_seq, max_records, max_bytes, name)
        return [
            Record(seq=int(flat[i]), source=_s(flat[i + 1]), body=flat[i + 3], received_at=int(flat[i + 2]))
            for i in range(0, len(flat), 4)
        ]

    async def books(self, since_ms: int | None = None) -> LogBooks:
        for _ in range(5):
            snapshot = await self._run("BOOKS")
            positions = sorted({int(_s(v).split()[0]) for v in snapshot[2][1::2]})
            pending = await self._pending(positions, int(snapshot[0]))
            if int(await self._call(self._client.get, f"{self._prefix}:deletions") or 0) == int(snapshot[1]):
                return assemble_books(snapshot, pending, since_ms)
        raise LogUnavailableError("busy", "deletion requests kept changing the log while its books were read")

    async def _pending(self, positions: list[int], head: int) -> dict[int, Counter[str]]:
        """Stored messages by source above each cursor position, up to ``head``."""
        pending: dict[int, Counter[str]] = {}
        above: Counter[str] = Counter()
        for low, high in reversed(list(zip(positions, [*positions[1:], head], strict=False))):
            after = low
            while after < high:
                reply = await self._run("COUNT_SOURCES", after, high, SCAN_CHUNK)
                after = int(reply[0])
                for i in range(1, len(reply), 2):
                    above[_s(reply[i])] += int(reply[i + 1])
            pending[low] = Counter(above)
        return pending

    async def backlog(self, destinations: Sequence[str]) -> list[BacklogInfo]:
        infos = []
        for destination in destinations:
            cursor = self._cursors.get(destination, self._head)
            waiting = max(0, self._head - cursor)
            oldest, average = 0, 0.0
            if waiting:
                first_ms, avg = await self._run("BACKLOG", cursor)
                oldest, average = int(first_ms), float(_s(avg))
            infos.append(BacklogInfo(destination, waiting, int(waiting * average), oldest / 1000))
        return infos

    # -- dead letters ----------------------------------------------------------------------------

    async def add_dead_letters(
        self, destination: str, records: Sequence[Record], error: str, attempts: int, *, stage: str = SEND_STAGE
    ) -> None:
        args: list[Any] = [destination, error, attempts, stage, self._now_ms()]
        for r in records:
            args += [r.seq, r.source, r.body]
        await self._write("ADD_DEAD_LETTERS", *args)

    async def _letters(self, destination: str | None, state: str, limit: int) -> list[DeadLetter]:
        flat = await self._run("LIST_LETTERS", destination or "", state, limit)
        letters = []
        for i in range(0, len(flat), 10):
            lid, d, q, s, b, e, a, f, st, g = flat[i : i + 10]
            letters.append(DeadLetter(int(lid), _s(d), int(q), _s(s), b, _s(e), int(a), int(f) / 1000, _s(st), _s(g)))
        return letters

    async def dead_letters(self, *, destination: str | None = None, limit: int = 100) -> list[DeadLetter]:
        return await self._letters(destination, "", limit)

    async def take_redrive(self, destination: str, limit: int) -> list[tuple[int, Record, str]]:
        letters = await self._letters(destination, "redrive", limit)
        return [(x.id, Record(seq=x.seq, source=x.source, body=x.body), x.stage) for x in letters]

    async def finish_redrive(
        self,
        destination: str,
        delivered: Sequence[tuple[int, Record]],
        failed: Sequence[int],
        error: str,
        *,
        dropped: Sequence[int] = (),
    ) -> None:
        counts = Counter(record.source for _, record in delivered if record.seq)
        args: list[Any] = [
            destination,
            self._cursors.get(destination, 0),
            self._now_ms(),
            error,
            " ".join(str(i) for i, _ in delivered),
            " ".join(str(i) for i in failed),
            " ".join(str(i) for i in dropped),
        ]
        for source, n in counts.items():
            args += [source, n]
        await self._write("FINISH_REDRIVE", *args)

    async def change_dead_letters(self, action: str, *, destination: str | None = None, ids: Sequence[int] = ()) -> int:
        if action not in ("redrive", "discard"):
            raise ValueError(f"unknown action {action!r}")
        if not ids and not destination:
            raise ValueError("choose dead letters by ids or by destination")
        return int(await self._write("CHANGE_LETTERS", action, "" if ids else destination, *[int(i) for i in ids]))

    # -- privacy -------------------------------------------------------------------------------

    async def set_suppressed(self, user_id: str, suppressed: bool) -> bool:
        changed = await self._write("SET_SUPPRESSED", user_id, "1" if suppressed else "0", self._now_ms())
        self.suppressed = self.suppressed | {user_id} if suppressed else self.suppressed - {user_id}
        return bool(changed)

    async def delete_user(self, user_id: str, destinations: Sequence[str]) -> DeletionReport:
        """Scan the log for ``user_id``'s messages (:data:`SCAN_CHUNK` at a time, so Redis is
        never blocked long), then remove them in one script, which also checks what was stored
        since the scan: rows no worker can hold are deleted (their bodies and dedup keys go), the
        newest and those a worker of any gateway has read become tombstones, and what a cursor
        had not reached is booked for it as ``filtered:deleted``. The AOF is rewritten after,
        so the removed bodies leave Redis's files too."""
        self._refuse_when_closed()
        await self._drain()
        candidates: list[int] = []
        after = 0
        while True:
            reply = await self._run("FIND_USER", after, SCAN_CHUNK, user_id)
            candidates += [int(x) for x in reply[1:]]
            if int(reply[0]) == 0:
                break
            after = int(reply[0])
        scanned_to = max([after, *candidates])
        deleted, kept, letters, *pending = await self._write(
            "DELETE_USER", user_id, scanned_to, self._now_ms(), " ".join(map(str, candidates)), *destinations
        )
        await self._forget_samples_of(user_id)
        shared_deletions = await self._call(self._client.get, f"{self._prefix}:deletions")
        self.deletions = max(self.deletions + 1, int(shared_deletions or 0))
        try:
            await self._call(self._client.bgrewriteaof)
        except LogUnavailableError as error:  # one already runs, or Redis is busy: the next one cleans up
            log.info("aof_rewrite_not_started", reason=error.detail)
        report = DeletionReport(
            user_id, int(deleted), int(kept), int(letters), dict(zip(destinations, map(int, pending), strict=True))
        )
        log.info(
            "user_deleted",
            messages_deleted=report.messages_deleted,
            tombstoned=report.tombstoned,
            dead_letters_deleted=report.dead_letters_deleted,
        )
        return report

    async def _drain(self) -> None:
        """Return once the appends queued before this call are committed (or failed)."""
        while not self._idle.is_set():
            await self._idle.wait()

    async def save_inventory(self, rows: Sequence[InventoryRow]) -> None:
        args: list[Any] = []
        for r in rows:
            args += [r.source, r.path, r.cls, msgspec.json.encode(r.hits), r.first_seen, r.last_seen]
        if args:
            await self._write("SAVE_INVENTORY", *args)

    async def load_inventory(self) -> list[InventoryRow]:
        rows = await self._call(self._client.hgetall, f"{self._prefix}:inv")
        out = []
        for key, value in rows.items():
            source, path = _s(key).split("\0", 1)
            first, last, cls, hits = _s(value).split("\0", 3)
            out.append(InventoryRow(source, path, cls, tuple(msgspec.json.decode(hits)), int(first), int(last)))
        return sorted(out, key=lambda r: (r.source, r.path))

    # -- series (the console's charts) -----------------------------------------------------------
    # One hash per series and minute ({prefix}:series:<series>:<minute>), metric -> count, listed
    # in a sorted set by minute so purge() finds the old ones (on the log's clock, as the other
    # engines). The samples are one hash, "<series>\0<kind>" -> "<at_ms>\0<body>".

    def _series_key(self, series: str, minute: int) -> str:
        return f"{self._prefix}:series:{series}:{minute}"

    async def add_series(self, counts: SeriesCounts, samples: Sequence[SeriesSample] = ()) -> None:
        self._refuse_when_closed()
        samples_key = f"{self._prefix}:series-samples"

        def write() -> None:
            pipe = self._client.pipeline(transaction=True)
            minutes: dict[str, int] = {}
            for (series, minute, metric), count in counts.items():
                if count:
                    pipe.hincrby(self._series_key(series, minute), metric, count)
                    minutes[f"{series}\0{minute}"] = minute
            if minutes:
                pipe.zadd(f"{self._prefix}:series-minutes", minutes)
            pipe.execute()
            for sample in samples:  # the newest wins (a race between gateways keeps a recent one)
                field = f"{sample.series}\0{sample.kind}"
                kept = self._client.hget(samples_key, field)
                if kept is None or int(_b(kept).split(b"\0", 1)[0]) <= sample.at_ms:
                    self._client.hset(samples_key, field, b"%d\0%s" % (sample.at_ms, sample.body))

        await self._call(write)

    async def read_series(self, series: str, since_ms: int, until_ms: int) -> dict[int, dict[str, int]]:
        index = f"{self._prefix}:series-minutes"

        def read() -> list[tuple[int, Any]]:
            listed = cast("list[bytes | str]", self._client.zrangebyscore(index, since_ms, f"({until_ms}"))
            minutes = [int(minute) for name, minute in (_s(m).split("\0", 1) for m in listed) if name == series]
            pipe = self._client.pipeline(transaction=False)
            for minute in minutes:
                pipe.hgetall(self._series_key(series, minute))
            return list(zip(minutes, pipe.execute(), strict=True))

        return {
            minute: {_s(metric): int(count) for metric, count in counts.items()}
            for minute, counts in await self._call(read)
            if counts
        }

    async def series_samples(self, series: str) -> list[SeriesSample]:
        kept = await self._call(self._client.hgetall, f"{self._prefix}:series-samples")
        found = []
        for key, value in kept.items():
            name, kind = _s(key).split("\0", 1)
            if name == series:
                at_ms, body = _b(value).split(b"\0", 1)
                found.append(SeriesSample(name, kind, int(at_ms), body))
        return sorted(found, key=lambda sample: sample.at_ms, reverse=True)

    async def _forget_samples_of(self, user_id: str) -> None:
        """Drop the series samples that may hold ``user_id``'s data (a deletion request)."""
        samples_key = f"{self._prefix}:series-samples"
        spellings = user_spellings(user_id)

        def forget() -> None:
            kept = self._client.hgetall(samples_key)
            found = [key for key, value in kept.items() if mentions_user(_b(value), spellings)]
            if found:
                self._client.hdel(samples_key, *found)

        await self._call(forget)

    async def _prune_series(self) -> None:
        """Forget the minutes and samples older than SERIES_KEEP_MS."""
        p = self._prefix
        cutoff = self._now_ms() - SERIES_KEEP_MS

        def prune() -> None:
            index = f"{p}:series-minutes"
            old = cast("list[bytes | str]", self._client.zrangebyscore(index, "-inf", f"({cutoff}"))
            for chunk in range(0, len(old), 1000):
                names = [_s(member).split("\0", 1) for member in old[chunk : chunk + 1000]]
                self._client.delete(*(self._series_key(series, int(minute)) for series, minute in names))
                self._client.zrem(index, *old[chunk : chunk + 1000])
            kept = self._client.hgetall(f"{p}:series-samples")
            stale = [key for key, value in kept.items() if int(_b(value).split(b"\0", 1)[0]) < cutoff]
            if stale:
                self._client.hdel(f"{p}:series-samples", *stale)

        await self._call(prune)

    # -- upkeep ----------------------------------------------------------------------------------

    async def purge(self, destinations: Sequence[str]) -> int:
        """Trim, from the oldest end, what every one of ``destinations`` has and what is past
        both the archive period and the dedup window (their dedup keys go with them), and
        the series older than SERIES_KEEP_MS."""
        self._refuse_when_closed()
        await self._prune_series()
        delivered_up_to = min((self._cursors.get(d, self._head) for d in destinations), default=self._head)
        cutoff = self._now_ms() - max(self._config.archive_secs, self._config.dedup_window_secs) * 1000
        total = 0
        while True:
            gone = int(await self._write("PURGE", delivered_up_to, cutoff, PURGE_CHUNK))
            total += gone
            if gone < PURGE_CHUNK:
                break
        return total

    async def checkpoint(self) -> None:
        """Refresh what this gateway caches of the shared state (the head, the size, cursors,
        suppressions and deletions other gateways changed); after a failed commit, find out
        whether Redis takes writes again."""
        if self._failure is not None and not self._closed:
            try:
                await self._run("PROBE", self._now_ms())
            except LogUnavailableError as error:
                self._failure = error
                return
            log.info("log_available_again", after=self._failure.reason)
            self._failure = None
        try:
            await self.refresh()
        except LogUnavailableError as error:
            # No request may come while /ready says no, so this is how an idle gateway
            # notices Redis went away (and, with the probe above, that it came back).
            if not self._closed:
                if self._failure is None:
                    log.warning("log_unavailable", reason=error.reason, error=error.detail)
                self._failure = error

    def writable(self) -> bool:
        return self.unavailable() is None

    def unavailable(self) -> LogUnavailableError | None:
        if self._closed:
            return LogUnavailableError("closed", "the gateway is shutting down")
        if self._failure is not None:
            return self._failure
        if self._disk_bytes >= self._config.max_disk_bytes:
            return LogUnavailableError(
                "log_full", f"the log holds {self._disk_bytes} bytes in Redis, at or past log.max_disk_bytes"
            )
        return None

    def reconfigure(self, config: LogConfig) -> None:
        self._config = config

    def statistics(self) -> LogStatistics:
        return LogStatistics(
            head_seq=self._head,
            disk_bytes=self._disk_bytes,
            pending_messages=self._queued_messages,
            commits=self._commits,
            cursors=dict(self._cursors),
        )

    async def aclose(self) -> None:
        """Refuse new appends, wait until everything queued is committed, let go of the holds."""
        self._closed = True
        await self._drain()
        if self._held:
            held, self._held = sorted(self._held), set()
            with suppress(LogUnavailableError):  # else they run out by themselves
                await self._run("RELEASE", self.holder, *held)

    def _refuse_when_closed(self) -> None:
        if self._closed:
            raise LogUnavailableError("closed", "the gateway is shutting down")


_SCRIPT_NAMES = (
    "APPEND",
    "READ",
    "CURSOR",
    "SET_CURSOR",
    "HOLD",
    "RENEW",
    "RELEASE",
    "FORGET_CURSOR",
    "SEQ_RANGE",
    "BOOKS",
    "COUNT_SOURCES",
    "FIND_USER",
    "DELETE_USER",
    "PURGE",
    "ADD_DEAD_LETTERS",
    "LIST_LETTERS",
    "CHANGE_LETTERS",
    "FINISH_REDRIVE",
    "SET_SUPPRESSED",
    "SAVE_INVENTORY",
    "PROBE",
    "BACKLOG",
)
