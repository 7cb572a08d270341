"""The promises of the ingest log, written once against the protocol (``gateway.log.IngestLog``
and ``LogReader``) and held by every engine: tests/test_log_conformance.py runs each of them on
each harness of tests/log_engines.py.

Every test takes ``engine`` (a :class:`tests.log_engines.LogEngine`) and, when time matters,
``clock`` (milliseconds the log keeps: received_at, the dedup window, the archive period).
"""

from __future__ import annotations

import os
import random
import urllib.parse
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
import trio
import trio.testing

from gateway.components import Record
from gateway.config import LogConfig
from gateway.errors import CursorLostError, LogUnavailableError
from gateway.ingest.hub import forwarded_key
from gateway.log import SERIES_KEEP_MS, Entry, IngestLog, InventoryRow, SeriesSample, SourceLetter, source_letters
from gateway.ops.audit import AuditReport, DestinationAudit, audit
from tests.log_engines import LogEngine

START_MS = 1_800_000_000_000  # a fixed time, so books by hour and time ranges are exact


class FakeClock:
    """The log's clock in milliseconds; only :meth:`advance` moves it."""

    def __init__(self) -> None:
        self.now = START_MS

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def entry(message_id: str, source: str = "web", **fields: Any) -> Entry:
    return Entry(source, message_id, msgspec.json.encode({"messageId": message_id, **fields}))


async def everything(log: IngestLog) -> list[Record]:
    return await log.read(0, max_records=1_000_000, max_bytes=1 << 40)


async def stored_ids(log: IngestLog) -> list[str]:
    return [r.message()["messageId"] for r in await everything(log)]


async def books(log: IngestLog, since_ms: int | None = None) -> AuditReport:
    report = audit(await log.books(since_ms))
    assert report.balanced, report
    return report


async def destination(log: IngestLog, name: str, since_ms: int | None = None) -> DestinationAudit:
    return next(d for d in (await books(log, since_ms)).destinations if d.destination == name)


# -- appends: durable, deduplicated, booked ---------------------------------------------------------


async def test_an_append_returns_once_another_reader_would_see_it(engine: LogEngine) -> None:
    async with engine.open() as log:
        result = await log.append([entry("a"), entry("b")])
        assert (result.stored, result.duplicates) == (2, 0)
        async with engine.open_reader() as reader:  # SQLite: a connection of its own, read-only
            records = await reader.read(0, max_records=10, max_bytes=1 << 20)
            assert [r.message()["messageId"] for r in records] == ["a", "b"]
    async with engine.open() as log:  # and after a restart
        assert await stored_ids(log) == ["a", "b"]
        assert log.head() == 2


async def test_every_acknowledged_append_survives_a_crash_and_the_books_balance(engine: LogEngine) -> None:
    acked = await engine.crash_during_traffic(acks=300)
    acked |= await engine.crash_during_traffic(acks=200)  # recovery, then a second crash
    assert len(acked) >= 500
    async with engine.open() as log:
        records = await everything(log)
        keys = Counter((r.source, r.message()["messageId"]) for r in records)
        assert max(keys.values()) == 1, "a message was stored twice"
        missing = acked - {mid for _, mid in keys}
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
        report = await books(log)  # the cursor and its outcomes were saved together
        [crm] = report.destinations
        assert crm.delivered + sum(crm.filtered.values()) + crm.pending == crm.expected > 0
        by_source = Counter(r.source for r in records)
        assert {b.source: b.stored for b in report.sources} == by_source  # stored with the messages


async def test_dedup_is_exact_inside_the_window_and_forgets_after_it(engine: LogEngine, clock: FakeClock) -> None:
    async with engine.open(LogConfig(dedup_window_secs=60, archive_secs=0), clock_ms=clock) as log:
        await log.cursor("crm")
        assert (await log.append([entry("a"), entry("b")])).stored == 2
        await log.set_cursor("crm", 2)
        clock.advance(60_000)
        assert await log.purge(["crm"]) == 0  # delivered, archive 0, but the window is not over
        assert (await log.append([entry("a")])).duplicates == 1
        clock.advance(1)
        assert await log.purge(["crm"]) == 1  # "a" goes; "b" is the newest row and stays
        assert (await log.append([entry("a")])).stored == 1  # past the window: new again
        assert (await log.append([entry("b")])).stored == 1  # its row stayed, its key's window did not
        assert (await log.append([entry("a"), entry("b")])).duplicates == 2  # the new copies hold the keys
    async with engine.open(LogConfig(dedup_window_secs=60, archive_secs=0), clock_ms=clock) as log:
        assert (await log.append([entry("a"), entry("b")])).duplicates == 2  # across a restart


async def test_dedup_windows_over_time_and_restarts(engine: LogEngine, clock: FakeClock) -> None:
    """Keys stored over several windows (SQLite keeps them in slices of a window, dropped by
    purge): each is a duplicate for exactly one window after it was stored, across restarts,
    whether or not purge has dropped what held it."""
    config = LogConfig(dedup_window_secs=100, archive_secs=0)
    stored_at: dict[str, int] = {}
    for step in range(12):  # 12 x 30 s: keys in many slices, and windows that end between them
        async with engine.open(config, clock_ms=clock) as log:
            for key in list(stored_at):
                age = clock.now - stored_at[key]
                result = await log.append([entry(key)])
                if age <= 100_000:
                    assert result.duplicates == 1, (key, age)
                else:
                    assert result.stored == 1, (key, age)
                    stored_at[key] = clock.now
            assert (await log.append([entry(f"k{step}"), entry(f"k{step}")])).stored == 1
            stored_at[f"k{step}"] = clock.now
            if step % 2:
                await log.purge([])
        clock.advance(30_000)


async def test_duplicates_inside_one_append_and_across_appends_are_skipped_in_order(engine: LogEngine) -> None:
    # Large appends go in chunks in SQLite: duplicates inside one chunk, across chunks of one
    # request and across requests are all skipped, and the seqs follow the request's order.
    ids = [f"m{i}" for i in range(600)]
    request = [entry(i) for i in ids]
    request[300] = entry("m5")
    request[301] = entry("m299")
    request[599] = entry("m598")
    async with engine.open() as log:
        first = await log.append(request)
        assert (first.stored, first.duplicates, first.duplicate_positions) == (597, 3, (300, 301, 599))
        second = await log.append([entry("m300"), entry("m0"), entry("m600"), entry("m300")])
        assert (second.stored, second.duplicates, second.duplicate_positions) == (2, 2, (1, 3))
        expected = [i for i in ids if i not in ("m300", "m301", "m599")]
        assert await stored_ids(log) == [*expected, "m300", "m600"]
        assert [r.seq for r in await everything(log)] == list(range(1, 600))


async def test_dedup_is_per_source_and_forwards_have_keys_of_their_own(engine: LogEngine) -> None:
    async with engine.open() as log:
        assert (await log.append([entry("m1"), entry("m1", source="app")])).stored == 2
        forward_web = Entry("other", forwarded_key("web", "m1"), entry("m1").body)
        forward_app = Entry("other", forwarded_key("app", "m1"), entry("m1").body)
        result = await log.append([entry("m1", source="other"), forward_web, forward_app])
        assert (result.stored, result.duplicates) == (3, 0)  # three different events
        assert (await log.append([forward_web])).duplicates == 1  # a retry of the same forward
        # Runs of several sources in one append: positions count across them.
        mixed = await log.append([entry("m2"), entry("m1", source="app"), entry("m2", source="app"), entry("m1")])
        assert (mixed.stored, mixed.duplicate_positions) == (2, (1, 3))


async def test_source_books_letters_and_redrives_are_in_the_commit_of_the_messages(engine: LogEngine) -> None:
    letter = SourceLetter(source_letters("web"), "web", entry("x").body, "f: KeyError")
    tally = {("web", "filtered:bot"): 2, ("web", "suppressed"): 1, ("web", "dead_lettered"): 1}
    async with engine.open() as log:
        await log.append([entry("a"), entry("a"), entry("b", source="app")], letters=[letter], tally=tally)
        with engine.failing_commits(log), pytest.raises(LogUnavailableError):
            await log.append([entry("c")], letters=[letter], tally=tally)  # none of it is kept
        web, app = _by_source(await books(log))
        assert (web.stored, web.duplicates, web.filtered, web.suppressed, web.dead_lettered) == (1, 1, {"bot": 2}, 1, 1)
        assert (app.stored, app.received) == (1, 1)
        [held] = await log.dead_letters(destination=source_letters("web"))
        assert (held.seq, held.stage, held.error, held.body) == (0, "source", "f: KeyError", letter.body)
        # Redriven: stored, and moved from dead_lettered in the books, in one commit.
        assert await log.change_dead_letters("redrive", destination=source_letters("web")) == 1
        [(letter_id, record, stage)] = await log.take_redrive(source_letters("web"), 10)
        assert (record.body, stage) == (letter.body, "source")
        await log.append([entry("x")], tally={("web", "dead_lettered"): -1}, redriven=[letter_id])
        assert await log.dead_letters() == []
        web, _ = _by_source(await books(log))
        assert (web.stored, web.dead_lettered, web.received) == (2, 0, 6)
    async with engine.open() as log:
        assert _by_source(await books(log))[0].stored == 2


def _by_source(report: AuditReport) -> tuple[Any, ...]:
    return tuple(sorted(report.sources, key=lambda b: b.source != "web"))


async def test_a_cursor_and_its_outcomes_are_saved_together_and_exactly(engine: LogEngine) -> None:
    async with engine.open() as log:
        await log.append([entry("old")])
        assert await log.cursor("crm") == 1  # a new destination starts at the head
        await log.append([entry(f"m{i}") for i in range(10)])
        await log.set_cursor("crm", 5, {("web", "delivered"): 3, ("web", "filtered:bot"): 1})
        with engine.failing_commits(log), pytest.raises(LogUnavailableError):
            await log.set_cursor("crm", 11, {("web", "delivered"): 6})
        crm = await destination(log, "crm")
        assert (crm.cursor, crm.delivered, crm.filtered, crm.pending, crm.expected) == (5, 3, {"bot": 1}, 6, 10)
        await log.set_cursor("crm", 11, {("web", "delivered"): 5, ("web", "dead_lettered"): 1})
        crm = await destination(log, "crm")
        assert (crm.delivered, crm.dead_lettered, crm.pending, crm.by_source["web"]["delivered"]) == (8, 1, 0, 8)
    async with engine.open() as log:
        assert await log.cursor("crm") == 11
        assert (await log.cursors())["crm"] == (11, 1)


async def test_reads_keep_order_and_bounds(engine: LogEngine) -> None:
    async with engine.open() as log:
        await log.append([entry("old")])
        await log.append([entry(f"m{i}") for i in range(10)])
        records = await log.read(1, max_records=4, max_bytes=10_000)
        assert [r.seq for r in records] == [2, 3, 4, 5]
        assert (records[0].message(), records[0].source) == ({"messageId": "m0"}, "web")
        assert records[0].received_at > 0
        assert len(await log.read(1, max_records=100, max_bytes=40)) == 2  # bytes bound beyond the first
        assert len(await log.read(1, max_records=100, max_bytes=1)) == 1  # the first always comes
        assert await log.read(11, max_records=100, max_bytes=10_000) == []


async def test_wait_for_records_wakes_on_the_commit(engine: LogEngine) -> None:
    async with engine.open() as log:
        woke = trio.Event()

        async def waiter() -> None:
            await log.wait_for_records(0)
            woke.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not woke.is_set()
            await log.append([entry("x")])
            with trio.fail_after(5):
                await woke.wait()
        await log.wait_for_records(0)  # already there: at once


# -- dead letters ---------------------------------------------------------------------------------


async def test_dead_letters_are_kept_listed_redriven_finished_and_discarded(engine: LogEngine) -> None:
    async with engine.open() as log:
        await log.cursor("crm")
        await log.append([entry(f"m{i}") for i in range(4)])
        records = await log.read(0, max_records=10, max_bytes=1 << 20)
        await log.add_dead_letters("crm", records[:2], "HTTP 400", 3)
        await log.add_dead_letters("crm", records[2:3], "strict: KeyError", 1, stage="filter")
        await log.add_dead_letters("hook", records[3:], "HTTP 422", 1)
        letters = await log.dead_letters()
        assert [(x.destination, x.seq, x.error, x.attempts, x.state, x.stage) for x in letters] == [
            ("crm", 1, "HTTP 400", 3, "dead", "send"),
            ("crm", 2, "HTTP 400", 3, "dead", "send"),
            ("crm", 3, "strict: KeyError", 1, "dead", "filter"),
            ("hook", 4, "HTTP 422", 1, "dead", "send"),
        ]
        assert letters[0].body == records[0].body and letters[0].failed_at > 0
        assert [x.seq for x in await log.dead_letters(destination="crm", limit=2)] == [1, 2]
        ids = [x.id for x in letters]

        assert await log.change_dead_letters("redrive", ids=ids[:3]) == 3
        assert await log.change_dead_letters("discard", destination="crm") == 0  # marked ones stay
        assert await log.take_redrive("hook", 10) == []
        taken = await log.take_redrive("crm", 10)
        assert [(i, r.seq, stage) for i, r, stage in taken] == [
            (ids[0], 1, "send"),
            (ids[1], 2, "send"),
            (ids[2], 3, "filter"),
        ]
        assert [i for i, _, _ in await log.take_redrive("crm", 1)] == [ids[0]]
        await log.set_cursor("crm", 4, {("web", "dead_lettered"): 3, ("web", "delivered"): 1})
        await log.finish_redrive("crm", [(ids[0], taken[0][1])], [ids[1]], "HTTP 400 again", dropped=[ids[2]])
        [again, hook] = await log.dead_letters()
        assert (again.id, again.state, again.attempts, again.error) == (ids[1], "dead", 4, "HTTP 400 again")
        crm = await destination(log, "crm")
        assert (crm.redriven, crm.dead_letters_held, crm.dead_lettered) == (1, 1, 3)

        assert await log.change_dead_letters("discard", ids=[hook.id]) == 1
        with pytest.raises(ValueError, match="by ids or by destination"):
            await log.change_dead_letters("redrive")
        with pytest.raises(ValueError, match="unknown action"):
            await log.change_dead_letters("resend", destination="crm")
    async with engine.open_reader() as reader:
        assert [x.id for x in await reader.dead_letters()] == [ids[1]]


# -- deletion requests ----------------------------------------------------------------------------


def message(message_id: str, user: str) -> Entry:
    return entry(message_id, type="track", event="e", userId=user, properties={"note": f"secret of {user}"})


async def test_a_deletion_removes_rows_books_them_and_tombstones_what_must_stay(engine: LogEngine) -> None:
    users = ["a", "gone", "b", "c", "gone", "d", "e", "gone", "f", "gone"]  # seqs 1..10; 10 is the newest
    async with engine.open() as log:
        await log.cursor("fast")
        await log.cursor("slow")
        await log.append([message(f"m{i + 1}", user) for i, user in enumerate(users)])
        await log.set_cursor("fast", 10, {("web", "delivered"): 10})
        await log.set_cursor("slow", 4, {("web", "delivered"): 4})
        await log.read(4, max_records=2, max_bytes=1 << 20, reader="slow")  # 5 and 6 may be in flight to it
        refused = await log.read(1, max_records=2, max_bytes=1 << 20, reader="fast")  # 2 and 3, behind its cursor
        await log.add_dead_letters("fast", refused, "HTTP 400", 1)
        deletions = log.deletions

        report = await log.delete_user("gone", ["fast", "slow"])

        assert (report.messages_deleted, report.tombstoned, report.dead_letters_deleted) == (2, 2, 1)
        assert report.messages_removed == 4 and report.pending == {"fast": 0, "slow": 3}
        assert log.deletions == deletions + 1 and log.head() == 10
        rows = {r.seq: r for r in await everything(log)}
        assert sorted(rows) == [1, 3, 4, 5, 6, 7, 9, 10]  # 2 and 8 are gone
        assert rows[5].message() == {"messageId": "m5", "type": "deleted"}  # read by slow: a tombstone
        assert rows[10].message() == {"messageId": "m10", "type": "deleted"}  # the newest: a tombstone
        assert all(b"secret of gone" not in r.body for r in rows.values())
        assert [x.seq for x in await log.dead_letters()] == [3]
        fast, slow = await destination(log, "fast"), await destination(log, "slow")
        assert (fast.delivered, fast.filtered, fast.pending) == (10, {}, 0)  # it had them all
        assert (slow.delivered, slow.filtered, slow.pending) == (4, {"deleted": 1}, 5)  # 8 booked; 5, 10 pending
        # A worker that held 5 gives up on it: its personal data does not come back.
        await log.add_dead_letters("slow", [Record(5, "web", message("m5", "gone").body)], "HTTP 400", 2)
        assert [x.seq for x in await log.dead_letters()] == [3]
        assert (await log.append([message("m11", "b")])).stored == 1
        assert log.head() == 11  # no seq reused
        assert (await log.append([message("m10", "gone")])).duplicates == 1  # the tombstone keeps the key
        assert (await log.append([message("m2", "gone")])).stored == 1  # a deleted row's key went with it
        await log.set_cursor("slow", 12, {("web", "delivered"): 5, ("web", "filtered:deleted"): 2})
        assert (await destination(log, "slow")).pending == 0


async def test_a_replay_of_the_archive_books_what_was_deleted(engine: LogEngine) -> None:
    async with engine.open() as log:
        await log.cursor("live")
        await log.append([message(f"m{i}", user) for i, user in enumerate(["a", "gone", "b", "gone", "c", "d"])])
        await log.set_cursor("live", 6, {("web", "delivered"): 6})
        await log.delete_user("gone", ["live"])
        assert await log.cursor("replay", start_ms=0) == 0
        replay = await destination(log, "replay")
        assert (replay.filtered, replay.pending) == ({"deleted": 2}, 4)


async def test_audit_since_stays_exact_across_a_deletion(engine: LogEngine, clock: FakeClock) -> None:
    users = ["a", "b", "gone", "gone", "c", "d", "gone", "e", "f", "g"]
    async with engine.open(clock_ms=clock) as log:
        await log.cursor("d")
        await log.append([message(f"m{i}", user) for i, user in enumerate(users)])
        await log.set_cursor("d", 2, {("web", "delivered"): 2})
        clock.advance(1_000)
        await log.delete_user("gone", ["d"])  # runs [3, 4] and [7]
        clock.advance(1_000)
        await log.set_cursor("d", 5, {("web", "delivered"): 1})
        clock.advance(1_000)
        await log.set_cursor("d", 10, {("web", "delivered"): 4})
        for since, expected in ((500, 8), (1_500, 8), (2_500, 5), (3_500, 0)):
            d = await destination(log, "d", since_ms=START_MS + since)
            assert d.expected == expected, since
        assert (await destination(log, "d", since_ms=START_MS + 2_500)).filtered == {"deleted": 1}


async def test_suppressions_persist(engine: LogEngine) -> None:
    async with engine.open() as log:
        assert await log.set_suppressed("spam", True) is True
        assert await log.set_suppressed("spam", True) is False
        assert await log.set_suppressed("ham", True) is True
        assert await log.set_suppressed("ham", False) is True
        assert log.suppressed == {"spam"}
    async with engine.open() as log:
        assert log.suppressed == {"spam"}


# -- replay ranges and cursors, purging -----------------------------------------------------------


async def test_seq_ranges_and_replay_cursors(engine: LogEngine, clock: FakeClock) -> None:
    async with engine.open(clock_ms=clock) as log:
        await log.append([entry("old-1"), entry("old-2"), entry("old-3")])
        clock.advance(60_000)
        await log.append([entry("new-1"), entry("new-2")])
        clock.advance(60_000)
        await log.append([entry("newest")])
        assert await log.seq_range(START_MS) == (0, 6)
        assert await log.seq_range(START_MS + 1) == (3, 6)
        assert await log.seq_range(START_MS + 60_000, START_MS + 120_000) == (3, 5)
        assert await log.seq_range(START_MS + 1, START_MS + 2) == (3, 3)  # nothing received then
        assert await log.seq_range(START_MS + 999_999) == (6, 6)
        async with engine.open_reader() as reader:
            assert await reader.seq_range(START_MS + 60_000, START_MS + 120_000) == (3, 5)

        assert await log.cursor("replay", start_ms=START_MS + 60_000) == 3  # before new-1
        assert await log.cursor("live") == 6
        assert await log.cursor("later", start_ms=START_MS + 999_999) == 6  # nothing that recent
        assert await log.cursor("replay", start_ms=0) == 3  # an existing cursor wins
        assert {name: c for name, c in (await log.cursors()).items()} == {
            "replay": (3, 3),
            "live": (6, 6),
            "later": (6, 6),
        }
        await log.set_cursor("replay", 5, {("web", "delivered"): 2})
        await log.forget_cursor("replay")
        assert "replay" not in await log.cursors()
        assert "replay" not in log.statistics().cursors
        assert await log.cursor("replay") == 6  # a new cursor: its old books went with it
        assert (await destination(log, "replay")).delivered == 0


async def test_purge_keeps_what_a_cursor_has_not_passed_the_archive_and_the_newest_row(
    engine: LogEngine, clock: FakeClock
) -> None:
    config = LogConfig(archive_secs=3600, dedup_window_secs=60)
    async with engine.open(config, clock_ms=clock) as log:
        await log.cursor("crm")
        await log.cursor("slow")
        await log.append([entry(f"m{i}") for i in range(6)])
        await log.set_cursor("crm", 4)
        await log.set_cursor("slow", 6)
        assert await log.purge(["crm", "slow"]) == 0  # delivered but within the archive period
        clock.advance(3_600_001)
        assert await log.purge(["crm", "slow"]) == 4
        assert await stored_ids(log) == ["m4", "m5"]  # only what crm has not got yet stays
        await log.set_cursor("crm", 6)
        assert await log.purge(["crm", "slow"]) == 1
        assert await stored_ids(log) == ["m5"]  # the newest row is kept, so no seq is reused
        assert (await log.append([entry("m0")])).stored == 1  # its dedup key went with it
        assert [r.seq for r in await log.read(6, max_records=10, max_bytes=10_000)] == [7]
    async with engine.open(config, clock_ms=clock) as log:
        assert log.head() == 7


# -- limits and failures --------------------------------------------------------------------------


async def test_a_full_log_refuses_appends_and_takes_them_again_once_purged(engine: LogEngine, clock: FakeClock) -> None:
    config = LogConfig(max_disk_bytes=1024 * 1024, archive_secs=0, dedup_window_secs=1)
    body = b"x" * 50_000
    async with engine.open(config, clock_ms=clock) as log:
        await log.cursor("crm")
        with pytest.raises(LogUnavailableError) as raised:
            for i in range(100):
                await log.append([Entry("web", f"m{i}", body)])
                await log.checkpoint()
        assert raised.value.reason == "log_full"
        assert not log.writable()
        await log.set_cursor("crm", log.head())
        clock.advance(2_000)
        assert await log.purge(["crm"]) > 0
        for _ in range(3):  # the size is re-measured by checkpoints (WAL restarts take two in SQLite)
            await log.checkpoint()
        assert log.writable()
        assert (await log.append([Entry("web", "after", body)])).stored == 1


async def test_a_failed_commit_fails_its_requests_and_writable_comes_back(engine: LogEngine) -> None:
    async with engine.open() as log:
        await log.append([entry("a")])
        assert log.writable()
        with engine.failing_commits(log):
            with pytest.raises(LogUnavailableError) as raised:
                await log.append([entry("b")])
            assert raised.value.reason in ("busy", "disk_full", "redis_full")
            assert not log.writable()
            await log.checkpoint()
            assert not log.writable()  # still refused
        assert await stored_ids(log) == ["a"]
        # No request comes while /ready says no: the log must find out by itself.
        await log.checkpoint()
        assert log.writable()
        assert (await log.append([entry("b")])).stored == 1


async def test_overload_and_closed_refuse_appends(engine: LogEngine) -> None:
    async with engine.open(LogConfig(max_pending_messages=5)) as log:
        with pytest.raises(LogUnavailableError) as raised:
            await log.append([entry(f"m{i}") for i in range(6)])
        assert raised.value.reason == "overloaded"
    with pytest.raises(LogUnavailableError) as raised:
        await log.append([entry("late")])
    assert raised.value.reason == "closed"
    assert not log.writable()


async def test_statistics_and_backlog(engine: LogEngine, clock: FakeClock) -> None:
    async with engine.open(clock_ms=clock) as log:
        await log.cursor("crm")
        await log.append([entry(f"m{i}", pad="x" * 100) for i in range(5)])
        await log.set_cursor("crm", 2)
        stats = log.statistics()
        assert (stats.head_seq, stats.cursors, stats.pending_messages) == (5, {"crm": 2}, 0)
        assert stats.commits >= 3 and stats.disk_bytes > 0
        [crm, new] = await log.backlog(["crm", "new"])
        assert (crm.messages, crm.oldest_received_at, new.messages) == (3, START_MS / 1000, 0)
        assert 100 * 3 < crm.bytes_estimate < 200 * 3


async def test_the_inventory_keeps_the_first_and_last_sight(engine: LogEngine) -> None:
    rows = [
        InventoryRow("web", "traits.email", "yellow", ("email",), 2_000, 3_000),
        InventoryRow("app", "x", "green", (), 1, 1),
    ]
    async with engine.open() as log:
        await log.save_inventory(rows)
        await log.save_inventory([InventoryRow("web", "traits.email", "red", ("email", "ssn"), 1_000, 2_500)])
        expected = [rows[1], InventoryRow("web", "traits.email", "red", ("email", "ssn"), 1_000, 3_000)]
        assert await log.load_inventory() == expected
    async with engine.open_reader() as reader:
        assert await reader.load_inventory() == expected


async def test_series_counters_add_up_keep_the_newest_sample_and_go_after_seven_days(
    engine: LogEngine, clock: FakeClock
) -> None:
    minute = START_MS - START_MS % 60_000
    later = minute + 60_000
    old_error = SeriesSample("crm", "http_500", START_MS - 5, b'{"n": 1}')
    new_error = SeriesSample("crm", "http_500", START_MS, b'{"n": 2}')
    async with engine.open(clock_ms=clock) as log:
        await log.add_series(
            {("crm", minute, "delivered"): 3, ("crm", minute, "latency:40"): 2, ("ads", minute, "delivered"): 7},
            [new_error],
        )
        await log.add_series(
            {("crm", minute, "delivered"): 2, ("crm", later, "retries"): 1, ("crm", later, "filtered:bot"): 0},
            [old_error, SeriesSample("crm", "timeout", START_MS - 10, b"{}")],
        )
        expected = {minute: {"delivered": 5, "latency:40": 2}, later: {"retries": 1}}
        assert await log.read_series("crm", minute, later + 60_000) == expected
        assert await log.read_series("crm", later, later + 60_000) == {later: {"retries": 1}}
        assert await log.read_series("crm", minute, later) == {minute: {"delivered": 5, "latency:40": 2}}
        assert await log.read_series("nobody", minute, later + 60_000) == {}
        samples = await log.series_samples("crm")
        assert [(x.kind, x.body) for x in samples] == [("http_500", b'{"n": 2}'), ("timeout", b"{}")]
        assert await log.series_samples("ads") == []
    async with engine.open(clock_ms=clock) as log:  # on disk: a restart keeps them
        assert await log.read_series("crm", minute, later + 60_000) == expected
        clock.advance(SERIES_KEEP_MS - (START_MS - minute) + 1)  # the first minute is past the keep period
        await log.purge([])
        assert await log.read_series("crm", 0, later + 60_000) == {later: {"retries": 1}}
        assert await log.series_samples("crm") == []
        clock.advance(60_000)
        await log.purge([])
        assert await log.read_series("crm", 0, later + 60_000) == {}


async def test_the_reader_sees_what_the_log_sees(engine: LogEngine) -> None:
    async with engine.open() as log:
        await log.cursor("crm")
        await log.append([entry("a"), entry("b")], tally={})
        await log.set_cursor("crm", 1, {("web", "delivered"): 1})
        async with engine.open_reader() as reader:
            assert await reader.books() == await log.books()
            assert await reader.cursors() == await log.cursors()
            assert await reader.read(0, max_records=5, max_bytes=1 << 20) == await everything(log)


# -- several gateways on one log (engines several processes may open at once) -------------------


def shared_only(engine: LogEngine) -> None:
    if not engine.shared:
        pytest.skip(f"one process at a time writes a {engine.name} log")


async def test_gateways_on_one_log_store_a_message_once_and_book_it_once(engine: LogEngine) -> None:
    shared_only(engine)
    ids = [f"m{i}" for i in range(300)]
    async with engine.open() as a, engine.open() as b:
        results = {}

        async def send(name: str, log: IngestLog) -> None:
            results[name] = await log.append([entry(i) for i in ids], tally={})

        async with trio.open_nursery() as nursery:  # the same messages to both gateways at once
            nursery.start_soon(send, "a", a)
            nursery.start_soon(send, "b", b)
        assert results["a"].stored + results["b"].stored == 300
        assert sorted(await stored_ids(a)) == sorted(await stored_ids(b)) == sorted(ids)
        assert [r.seq for r in await everything(b)] == list(range(1, 301))  # one gap-free sequence
        with trio.fail_after(10):  # whichever stored them, both gateways' workers are woken
            await a.wait_for_records(299)
            await b.wait_for_records(299)
        [web] = (await books(b)).sources
        assert (web.stored, web.duplicates) == (300, 300)


async def test_one_gateway_at_a_time_moves_a_cursor_and_another_takes_over_when_it_dies(engine: LogEngine) -> None:
    shared_only(engine)
    async with engine.open() as a, engine.open() as b:
        assert await a.cursor("crm") == 0
        await a.append([entry(f"m{i}") for i in range(10)])
        assert await a.hold("crm") == 0
        with pytest.raises(CursorLostError):  # b does not hold it: its moves are refused
            await b.set_cursor("crm", 5, {("web", "delivered"): 5})
        await a.set_cursor("crm", 4, {("web", "delivered"): 4})

        taken: list[int | None] = []
        async with trio.open_nursery() as nursery:

            async def take() -> None:
                taken.append(await b.hold("crm"))

            nursery.start_soon(take)
            await a.set_cursor("crm", 5, {("web", "delivered"): 1})  # b waits meanwhile
            assert taken == []
            await a.release("crm")  # a's worker stops: b takes over from the saved cursor
        assert taken == [5]
        with pytest.raises(CursorLostError):
            await a.set_cursor("crm", 8, {("web", "delivered"): 3})
        await b.set_cursor("crm", 10, {("web", "delivered"): 5})

        engine.vanish(b)  # b dies holding it: once its hold runs out, another gateway takes over
        async with engine.open() as c:
            with trio.fail_after(20):
                assert await c.hold("crm") == 10
            crm = await destination(c, "crm")  # every gateway's moves, in one set of books
            assert (crm.delivered, crm.pending, crm.expected) == (10, 0, 10)


# -- the conformance traffic (for the crash test) -----------------------------------------------


async def traffic(log: IngestLog, acked: Callable[[list[str]], None]) -> None:
    """Appends from four tasks (with duplicates, a second source and the sources' books) and a
    destination that delivers, filters some, and saves its cursor with the outcomes, for ever.
    ``acked`` gets the ids of each append once it returned."""
    await log.cursor("crm")
    run = os.urandom(4).hex()  # each run (each process) sends messages of its own

    async def appender(task: int) -> None:
        rng = random.Random(task)
        for batch in range(1_000_000):
            ids = [f"{run}-t{task}-{batch}-{i}" for i in range(rng.randint(1, 8))]
            entries = [entry(mid, source="web" if task % 2 else "app") for mid in ids]
            if batch:
                entries.append(entry(f"{run}-t{task}-{batch - 1}-0", source=entries[0].source))  # a client's retry
            await log.append(entries, tally={})
            acked(ids)

    async def deliver() -> None:
        cursor = await log.cursor("crm")
        while True:
            await log.wait_for_records(cursor)
            records = await log.read(cursor, max_records=50, max_bytes=1 << 20, reader="crm")
            outcomes = Counter((r.source, "filtered:test" if r.seq % 7 == 0 else "delivered") for r in records)
            cursor = records[-1].seq
            await log.set_cursor("crm", cursor, dict(outcomes))

    async with trio.open_nursery() as nursery:
        for task in range(4):
            nursery.start_soon(appender, task)
        nursery.start_soon(deliver)


async def test_a_deletion_request_drops_the_series_samples_that_hold_the_user(engine: LogEngine) -> None:
    """An error sample holds what was sent (the event) and the request: a deletion request
    removes those naming the user, in any spelling a request body may use, and keeps the rest."""
    user = 'ann "é"'
    event = msgspec.json.encode({"userId": user, "event": "Signed Up"})
    as_sent = msgspec.json.encode({"sent": event.decode(), "request": "POST /hook"})  # JSON in a JSON string
    as_form = b"data=" + urllib.parse.quote_plus(event.decode()).encode()  # a form body (Mixpanel's /engage)
    other = msgspec.json.encode({"sent": msgspec.json.encode({"userId": "bob"}).decode()})
    async with engine.open() as log:
        await log.append([Entry("web", "m-1", msgspec.json.encode({"userId": user, "messageId": "m-1"}))])
        await log.add_series(
            {},
            [
                SeriesSample("crm", "http_400", START_MS, as_sent),
                SeriesSample("crm", "timeout", START_MS, other),
                SeriesSample("mix", "refused", START_MS, as_form),
            ],
        )
        await log.delete_user(user, [])
        assert [(x.kind, x.body) for x in await log.series_samples("crm")] == [("timeout", other)]
        assert await log.series_samples("mix") == []


async def test_gateways_on_one_log_add_up_to_one_series(engine: LogEngine) -> None:
    shared_only(engine)
    minute = START_MS - START_MS % 60_000
    async with engine.open() as a, engine.open() as b:
        await a.add_series({("crm", minute, "delivered"): 2}, [SeriesSample("crm", "http_500", START_MS, b"a")])
        await b.add_series({("crm", minute, "delivered"): 3}, [SeriesSample("crm", "http_500", START_MS + 1, b"b")])
        for log in (a, b):
            assert await log.read_series("crm", minute, minute + 60_000) == {minute: {"delivered": 5}}
            assert [x.body for x in await log.series_samples("crm")] == [b"b"]


async def test_dedup_holds_when_the_clock_is_set_back_and_runs_on(engine: LogEngine, clock: FakeClock) -> None:
    """A key stored just before the clock is set back (an NTP step) stays a duplicate for its
    window as the clock runs on. SQLite filed such a key, flushed while the clock was back, in
    the slice the clock pointed at, which ended before the key was received: lookups skipped
    that slice, and purge dropped it, while the key was still inside its window."""
    config = LogConfig(dedup_window_secs=100, archive_secs=0)
    async with engine.open(config, clock_ms=clock) as log:
        assert (await log.append([entry("x")])).stored == 1
        await log.purge([])  # SQLite: "x" goes to a slice of [0 s, 25 s)
        clock.advance(30_000)
        assert (await log.append([entry("k")])).stored == 1  # received at 30 s
        clock.advance(-20_000)  # the clock is set back to 10 s
        await log.purge([])  # SQLite: "k" is flushed while the clock says 10 s
        clock.advance(116_000)  # 126 s: "k" was received 96 s ago
        assert (await log.append([entry("y")])).stored == 1
        assert (await log.append([entry("k")])).duplicates == 1
        await log.purge([])
        assert (await log.append([entry("k")])).duplicates == 1
    async with engine.open(config, clock_ms=clock) as log:
        assert (await log.append([entry("k")])).duplicates == 1


@pytest.mark.parametrize("how", ["restart", "reload"])
async def test_a_longer_dedup_window_covers_the_keys_the_log_still_holds(
    engine: LogEngine, clock: FakeClock, how: str
) -> None:
    """``dedup_window_secs`` raised (on a restart, or a reload): a key stored within the new
    window is a duplicate while its message is still in the log (``archive_secs``), although
    the shorter window had passed it. SQLite had dropped its dedup slice with the shorter window."""
    short = LogConfig(dedup_window_secs=100, archive_secs=10_000)
    long = LogConfig(dedup_window_secs=1000, archive_secs=10_000)
    async with engine.open(short, clock_ms=clock) as log:
        assert (await log.append([entry("a")])).stored == 1
        await log.purge([])  # SQLite: "a" goes to a slice of [0 s, 25 s)
        clock.advance(150_000)
        assert (await log.append([entry("b")])).stored == 1
        await log.purge([])  # SQLite: "a"'s slice is past the short window, and dropped
        if how == "reload":
            log.reconfigure(long)
            assert (await log.append([entry("a"), entry("b")])).duplicates == 2  # 150 s, 0 s ago
    clock.advance(100_000)
    async with engine.open(long, clock_ms=clock) as log:
        assert (await log.append([entry("a"), entry("b")])).duplicates == 2  # 250 s, 100 s ago
        await log.purge([])
    clock.advance(1)
    async with engine.open(short, clock_ms=clock) as log:  # shorter again: the window is the config's
        assert (await log.append([entry("a"), entry("b")])).stored == 2
        assert (await log.append([entry("a"), entry("b")])).duplicates == 2
