"""Exact dedup of the SQLite log against a plain model, over programs hypothesis writes: appends
from two sources, flushes stopped between any two of their steps, restarts (what a kill -9
leaves: a clean close writes nothing of the keys in memory either), bulk loads, deletions,
purges, reloads and restarts with another window, the clock stepped both ways, keys written to
the open slice in their commit or later from memory, Bloom filters built while a commit runs,
slices closed by their keys every few keys, and commits, flush steps and new slices that fail
(a full disk) after their rows went in."""

from __future__ import annotations

import sqlite3
import tempfile
from contextlib import AbstractAsyncContextManager, suppress
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import LogConfig
from gateway.errors import LogUnavailableError
from gateway.log import Entry, open_log
from gateway.log import sqlite as sqlite_log
from gateway.log.sqlite import DB_NAME, _commit, _dedup

_KEYS = 4
_WINDOWS = (4, 10, 40)
Op = tuple[Any, ...]

_key = st.tuples(st.sampled_from(["web", "app"]), st.integers(0, _KEYS - 1))
_append = st.tuples(st.just("append"), st.lists(_key, min_size=1, max_size=8))
_flush_step = st.tuples(st.just("flush_step"))
_delete = st.tuples(st.just("delete"), st.integers(0, _KEYS - 1))
_op: st.SearchStrategy[Op] = st.one_of(
    _append,
    _append,
    _flush_step,
    _flush_step,
    _delete,
    st.tuples(st.just("tick"), st.sampled_from(["1", "second", "slice", "slice+1", "window", "window+1"])),
    st.tuples(st.just("back"), st.sampled_from([1, 1000, 3000])),
    st.tuples(st.just("append_fails"), st.lists(_key, min_size=1, max_size=8)),
    st.tuples(st.just("flush_step_fails")),
    st.tuples(st.just("slice_fails")),
    st.tuples(st.just("purge")),
    st.tuples(st.just("checkpoint")),
    st.tuples(st.just("filters"), st.lists(_key, min_size=1, max_size=4)),
    st.tuples(st.just("restart"), st.sampled_from(_WINDOWS)),
    st.tuples(st.just("reload"), st.sampled_from(_WINDOWS)),
    st.tuples(st.just("bulk"), st.lists(_key, min_size=1, max_size=8)),
)


class _Model:
    """Exact dedup: a key is a duplicate while its newest stored copy is at most a window old
    (the archive keeps every message here, so a window grown reaches them all)."""

    def __init__(self) -> None:
        self.stored_at: dict[tuple[str, str], int] = {}

    def append(self, batch: list[tuple[str, str]], now: int, window_ms: int) -> int:
        stored, seen = 0, set()
        for key in batch:
            at = self.stored_at.get(key)
            if key not in seen and (at is None or now - at > window_ms):
                self.stored_at[key] = now
                stored += 1
            seen.add(key)
        return stored


def _body(message_id: str, user_id: str) -> bytes:
    return b'{"messageId":"%s","userId":"%s"}' % (message_id.encode(), user_id.encode())


class _Program:
    """Runs one program against a log in ``data_dir`` and the model side by side. Every
    append ends with a message of its own (a "filler"), so a deleted key's message is never
    the newest row (which a deletion keeps as a tombstone, key and all)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.now = 1_800_000_000_000
        self.window = 10
        self.model = _Model()
        self.fillers = 0
        self.newest = self.now  # the newest received_at in the log
        self.trace: list[Op] = []

    def config(self) -> LogConfig:
        return LogConfig(dedup_window_secs=self.window, archive_secs=1_000_000)

    def open(self) -> AbstractAsyncContextManager[Any]:
        return open_log(self.config(), self.data_dir, clock_ms=lambda: self.now)

    def entries(self, batch: list[tuple[str, int]]) -> tuple[list[Entry], list[tuple[str, str]]]:
        keys = [(source, f"k{i}") for source, i in batch]
        self.fillers += 1
        filler = Entry("web", f"filler{self.fillers}", _body(f"filler{self.fillers}", "filler"))
        return [Entry(s, m, _body(m, m)) for s, m in keys] + [filler], keys

    async def append(self, log: Any, batch: list[tuple[str, int]]) -> None:
        entries, keys = self.entries(batch)
        expected = self.model.append(keys, self.now, self.window * 1000) + 1
        self.newest = max(self.newest, self.now)
        assert (await log.append(entries)).stored == expected, self.trace

    async def run(self, ops: list[Op]) -> None:
        opened = self.open()
        log = await opened.__aenter__()
        try:
            for op in ops:
                self.trace.append(op)
                kind = op[0]
                window_ms = self.window * 1000
                if kind == "append":
                    await self.append(log, op[1])
                elif kind == "tick":
                    slice_ms = window_ms // _dedup.SLICES_PER_WINDOW
                    self.now += {
                        "1": 1,
                        "second": 1000,
                        "slice": slice_ms,
                        "slice+1": slice_ms + 1,
                        "window": window_ms,
                        "window+1": window_ms + 1,
                    }[op[1]]
                elif kind == "back":
                    self.now -= op[1]
                elif kind == "flush_step":  # one step: the next op may come between two
                    await log._write(log._dedup.flush_step, log.head(), self.now, window_ms)
                elif kind == "append_fails":  # after its rows and keys went in, before its commit
                    with pytest.MonkeyPatch.context() as patch, pytest.raises(LogUnavailableError):
                        patch.setattr(_commit, "head_seq", _disk_full)
                        await log.append(self.entries(op[1])[0])
                elif kind == "flush_step_fails":  # after its keys went in (and in the filter)
                    with pytest.MonkeyPatch.context() as patch, suppress(LogUnavailableError):
                        patch.setattr(_dedup.DedupSlices, "_write", _write_then_fail)
                        await log._write(log._dedup.flush_step, log.head(), self.now, window_ms)
                elif kind == "slice_fails":  # a flush step opening a slice fails before its commit
                    with pytest.MonkeyPatch.context() as patch, suppress(LogUnavailableError):
                        patch.setattr(_dedup.DedupSlices, "open_slice", _open_then_fail)
                        await log._write(log._dedup.flush_step, log.head(), self.now, window_ms)
                elif kind == "purge":
                    await log.purge([])
                elif kind == "checkpoint":
                    await log.checkpoint()
                elif kind == "filters":
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(trio.to_thread.run_sync, log._dedup.build_filters, self.data_dir / DB_NAME)
                        await self.append(log, op[1])
                elif kind in ("restart", "bulk"):
                    await opened.__aexit__(None, None, None)
                    if kind == "restart":
                        self.window = op[1]
                    else:
                        self.bulk(op[1])
                    opened = self.open()
                    log = await opened.__aenter__()
                elif kind == "reload":
                    self.window = op[1]
                    log.reconfigure(self.config())
                else:
                    report = await log.delete_user(f"k{op[1]}", [])
                    assert report.tombstoned == 0
                    self.model.stored_at.pop(("web", f"k{op[1]}"), None)
                    self.model.stored_at.pop(("app", f"k{op[1]}"), None)
        finally:
            await opened.__aexit__(None, None, None)

    def bulk(self, batch: list[tuple[str, int]]) -> None:
        """The bulk writer, at the newest time in the log (its rows never go back)."""
        entries, keys = self.entries(batch)
        at = self.newest = max(self.newest, self.now)
        expected = self.model.append(keys, at, self.window * 1000) + 1
        rows = [(e.source, e.message_id, at, e.body) for e in entries]
        stored = sqlite_log.bulk_load(self.config(), self.data_dir, rows, clock_ms=lambda: self.now)
        assert stored == expected, self.trace


def _disk_full(*args: object) -> Any:
    raise sqlite3.OperationalError("database or disk is full")


_write = _dedup.DedupSlices._write


def _write_then_fail(self: _dedup.DedupSlices, *args: Any) -> None:
    _write(self, *args)
    _disk_full()


_open_slice = _dedup.DedupSlices.open_slice


def _open_then_fail(self: _dedup.DedupSlices, *args: Any) -> _dedup.Slice:
    _open_slice(self, *args)
    _disk_full()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, min_size=1, max_size=40), cluster_min=st.sampled_from([1, 2]))
def test_dedup_is_exact_over_any_program(ops: list[Op], cluster_min: int) -> None:
    with pytest.MonkeyPatch.context() as patch, tempfile.TemporaryDirectory() as data_dir:
        patch.setattr(_dedup, "FLUSH_CHUNK", 2)
        patch.setattr(_dedup, "FLUSH_KEYS", 5)
        patch.setattr(_dedup, "FLUSH_AGE_MS", 3000)
        patch.setattr(_dedup, "SLICE_KEYS", 8)
        patch.setattr(_dedup, "CLUSTER_MIN", cluster_min)  # a commit's new keys go straight to the
        patch.setattr(_dedup, "CLUSTER_GAP", 1)  # slice when at most one of its keys sorts between
        trio.run(_Program(Path(data_dir)).run, ops)
