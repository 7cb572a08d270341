"""A conformance kit for warehouse loaders: one call of each type sent with Segment's official
Python client, and the rows each table must then hold, written out by hand from Segment's
schema (not computed by the mapper), compared column by column.

    from gateway_warehouse.testing import WRITE_KEY, send_calls, assert_loaded

    await trio.to_thread.run_sync(send_calls, gw.url, WRITE_KEY)
    ...flush the destination, read every table into {table: [row dicts]}...
    assert_loaded(rows)

Needs ``segment-analytics-python`` (the gateway's test extras).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from gateway import Record

if TYPE_CHECKING:
    from gateway_warehouse.destination import WarehouseDestination
    from gateway_warehouse.tables import Load

__all__ = [
    "CALLS",
    "WRITE_KEY",
    "Json",
    "Near",
    "assert_loaded",
    "bought",
    "expected_tables",
    "mapped_event",
    "send_calls",
]

WRITE_KEY = "warehouse-kit-write-key"
T0 = datetime(2026, 3, 1, 9, 30, 0, 123000, tzinfo=UTC)


@dataclass(frozen=True)
class Json:
    """A column that holds JSON text (an array): compared by what it decodes to."""

    value: Any


@dataclass(frozen=True)
class Near:
    """A timestamp set by a server (the gateway's skew correction): within a minute of this one."""

    value: datetime


def _t(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


# (client method, keyword arguments) in the order they are sent.
CALLS: list[tuple[str, dict[str, Any]]] = [
    (
        "identify",
        {
            "user_id": "user-1",
            "traits": {
                "email": "ada@example.com",
                "plan": "pro",
                "logins": 3,
                "address": {"city": "Paris", "zip": "75001"},
                "tags": ["a", "b"],
                "vip": True,
                "createdAt": "2024-01-02T03:04:05Z",
            },
            "message_id": "wh-identify-1",
            "timestamp": _t(0),
        },
    ),
    (
        "identify",
        {
            "user_id": "user-1",
            "traits": {"plan": "team", "logins": 4},
            "message_id": "wh-identify-2",
            "timestamp": _t(1),
        },
    ),
    (
        "track",
        {
            "user_id": "user-1",
            "event": "Order Completed",
            "properties": {
                "order_id": "o-1",
                "total": 99.5,
                "currency": "EUR",
                "products": [{"sku": "s1", "qty": 2}],
                "coupon": None,
                "shipping": {"method": "post", "days": 2},
                "gift": False,
            },
            "message_id": "wh-track-1",
            "timestamp": _t(2),
        },
    ),
    (
        "track",
        {
            "anonymous_id": "anon-2",
            "event": "Signed Up",
            "properties": {"plan": "free", "referrer": {"utmSource": "news"}},
            "message_id": "wh-track-2",
            "timestamp": _t(3),
        },
    ),
    (
        "page",
        {
            "user_id": "user-1",
            "category": "Docs",
            "name": "Install",
            "properties": {"url": "https://example.com/docs", "title": "Install", "path": "/docs"},
            "message_id": "wh-page-1",
            "timestamp": _t(4),
        },
    ),
    (
        "screen",
        {
            "user_id": "user-1",
            "category": "Onboarding",
            "name": "Welcome",
            "properties": {"step": 1},
            "message_id": "wh-screen-1",
            "timestamp": _t(5),
        },
    ),
    (
        "group",
        {
            "user_id": "user-1",
            "group_id": "group-9",
            "traits": {"name": "Acme", "employees": 40},
            "message_id": "wh-group-1",
            "timestamp": _t(6),
        },
    ),
    ("alias", {"previous_id": "anon-1", "user_id": "user-1", "message_id": "wh-alias-1", "timestamp": _t(7)}),
]


def _library() -> dict[str, Any]:
    from segment.analytics.version import VERSION

    return {"context_library_name": "analytics-python", "context_library_version": VERSION, "context_ip": "127.0.0.1"}


def _event(message_id: str, minutes: int, user: str | None = "user-1", anonymous: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": message_id,
        "original_timestamp": _t(minutes),
        "timestamp": Near(_t(minutes)),
        **_library(),
    }
    if user is not None:
        row["user_id"] = user
    if anonymous is not None:
        row["anonymous_id"] = anonymous
    return row


def expected_tables(*, object_tables: bool = True, tracks_table: bool = True) -> dict[str, list[dict[str, Any]]]:
    """The rows each table must hold after :data:`CALLS` (``object_tables``: ``users`` and
    ``accounts``; ``tracks_table``: ``tracks``; a data lake has neither)."""
    identify_1 = {
        **_event("wh-identify-1", 0),
        "email": "ada@example.com",
        "plan": "pro",
        "logins": 3,
        "address_city": "Paris",
        "address_zip": "75001",
        "tags": Json(["a", "b"]),
        "vip": True,
        "created_at": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    identify_2 = {**_event("wh-identify-2", 1), "plan": "team", "logins": 4}
    order = {"event": "order_completed", "event_text": "Order Completed"}
    signed_up = {"event": "signed_up", "event_text": "Signed Up"}
    tables: dict[str, list[dict[str, Any]]] = {
        "identifies": [identify_1, identify_2],
        "order_completed": [
            {
                **_event("wh-track-1", 2),
                **order,
                "order_id": "o-1",
                "total": 99.5,
                "currency": "EUR",
                "products": Json([{"sku": "s1", "qty": 2}]),
                "shipping_method": "post",
                "shipping_days": 2,
                "gift": False,
            }
        ],
        "signed_up": [
            {
                **_event("wh-track-2", 3, user=None, anonymous="anon-2"),
                **signed_up,
                "plan": "free",
                "referrer_utm_source": "news",
            }
        ],
        "pages": [
            {
                **_event("wh-page-1", 4),
                "name": "Install",
                "category": "Docs",
                "url": "https://example.com/docs",
                "title": "Install",
                "path": "/docs",
            }
        ],
        "screens": [{**_event("wh-screen-1", 5), "name": "Welcome", "category": "Onboarding", "step": 1}],
        "groups": [{**_event("wh-group-1", 6), "group_id": "group-9", "name": "Acme", "employees": 40}],
        "aliases": [{**_event("wh-alias-1", 7), "previous_id": "anon-1"}],
    }
    if tracks_table:
        tables["tracks"] = [
            {**_event("wh-track-1", 2), **order},
            {**_event("wh-track-2", 3, user=None, anonymous="anon-2"), **signed_up},
        ]
    if object_tables:
        # Latest non-null trait per column: plan and logins from the second identify, the rest kept.
        latest = {k: v for k, v in identify_1.items() if k not in _event("x", 0)}
        tables["users"] = [{"id": "user-1", **latest, "plan": "team", "logins": 4}]
        tables["accounts"] = [{"id": "group-9", "name": "Acme", "employees": 40}]
    return tables


def send_calls(url: str, write_key: str = WRITE_KEY, calls: Iterable[tuple[str, dict[str, Any]]] = CALLS) -> None:
    """Send ``calls`` to the gateway at ``url`` with the official Python client and wait until
    it acknowledged them all (blocking: run it in a thread from trio)."""
    from segment.analytics import Client

    failures: list[Any] = []
    client = Client(write_key, host=url, on_error=lambda error, batch: failures.append(error), max_retries=2)
    try:
        for method, kwargs in calls:
            ok, _ = getattr(client, method)(**kwargs)
            assert ok, f"the client did not queue {method} {kwargs}"
        client.flush()
    finally:
        client.shutdown()
    assert not failures, f"the gateway refused calls: {failures}"


_SERVER_TIMESTAMPS = ("received_at", "sent_at", "uuid_ts")


def assert_loaded(
    loaded: Mapping[str, list[dict[str, Any]]],
    expected: Mapping[str, list[dict[str, Any]]] | None = None,
    *,
    object_tables: bool = True,
    tracks_table: bool = True,
) -> None:
    """Check ``loaded`` ({table: rows as column -> value}) against ``expected`` (default:
    :func:`expected_tables`): the same rows by ``id`` in each expected table, every expected
    column equal, the server's timestamps set, and no other column non-null."""
    expected = expected or expected_tables(object_tables=object_tables, tracks_table=tracks_table)
    problems: list[str] = []
    for table, rows in expected.items():
        got = {str(row["id"]): row for row in loaded.get(table, [])}
        want = {row["id"]: row for row in rows}
        if sorted(got) != sorted(want):
            problems.append(f"{table}: ids {sorted(got)}, expected {sorted(want)}")
            continue
        for row_id, want_row in want.items():
            got_row = got[row_id]
            for column, value in want_row.items():
                if not _same(got_row.get(column), value):
                    problems.append(f"{table}[{row_id}].{column}: {got_row.get(column)!r}, expected {value!r}")
            required = ("received_at", "uuid_ts") if table in ("users", "accounts") else _SERVER_TIMESTAMPS
            for column in required:
                if not isinstance(got_row.get(column), datetime):
                    problems.append(f"{table}[{row_id}].{column}: {got_row.get(column)!r}, expected a time")
            for column, value in got_row.items():
                if column not in want_row and column not in _SERVER_TIMESTAMPS and value is not None:
                    problems.append(f"{table}[{row_id}].{column}: unexpected value {value!r}")
    assert not problems, "loaded rows differ from what was sent:\n  " + "\n  ".join(problems)


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, Json):
        return isinstance(got, str) and json.loads(got) == want.value
    if isinstance(want, Near):
        return isinstance(got, datetime) and abs(got - want.value) < timedelta(minutes=1)
    if isinstance(want, datetime):
        return isinstance(got, datetime) and got == want
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    return bool(got == want)


# -- kill -9 during loads ----------------------------------------------------------------------


@dataclass
class CrashRun:
    """What :func:`load_through_kills` did.

    Attributes:
        acknowledged: messageIds the gateway acknowledged (the client reported no error).
        failed: messageIds in batches the client gave up on (they may or may not be stored).
        kills: How many times the daemon was killed.
        kills_mid_load: Kills that came after a ``warehouse_load_started`` line and before
            its ``warehouse_loaded`` (the load was under way, as far as the log tells).
    """

    acknowledged: set[str]
    failed: set[str]
    kills: int
    kills_mid_load: int


def bought(seq: int, properties: dict[str, Any]) -> Record:
    """A log record at ``seq``: a "Bought" track (message id ``m<seq>``) with ``properties``."""
    body = {
        "type": "track",
        "event": "Bought",
        "userId": "u",
        "messageId": f"m{seq}",
        "receivedAt": "2026-01-01T00:00:00Z",
        "properties": properties,
    }
    return Record(seq=seq, source="web", body=json.dumps(body).encode())


def mapped_event(destination: WarehouseDestination, first_seq: int) -> threading.Event:
    """An event set once ``destination`` has mapped the batch that starts at ``first_seq``: a
    test of a loader that overlaps holds one write until the next batch is mapped beside it."""
    mapped = threading.Event()
    mapper = destination.mapper()
    map_batch = mapper.map

    def map_and_tell(batch: Any, schemas: Any, **options: Any) -> Load:
        load = map_batch(batch, schemas, **options)
        if load.first_seq == first_seq:
            mapped.set()
        return load

    mapper.map = map_and_tell  # type: ignore[method-assign]
    return mapped


def _wait(predicate: Any, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)  # polling an event (a log line), not waiting for one to be likely


def _mid_load(lines: list[str]) -> bool:
    started = max((i for i, line in enumerate(lines) if '"warehouse_load_started"' in line), default=-1)
    loaded = max((i for i, line in enumerate(lines) if '"warehouse_loaded"' in line), default=-1)
    return started > loaded


def load_through_kills(
    config_path: Any,
    admin_url: str,
    admin_token: str,
    *,
    destination: str,
    messages: int,
    kills: int,
    write_key: str = WRITE_KEY,
) -> CrashRun:
    """Run the daemon on ``config_path`` (``gateway.testing.GatewayProcess``), send ``messages``
    track and identify calls with the official client from a thread, ``kill -9`` the daemon
    ``kills`` times while a load of ``destination`` is under way (watching its log), restart it
    each time, then flush ``destination`` through the admin API and stop the daemon."""
    import threading
    import urllib.request

    from segment.analytics import Client

    from gateway.testing import GatewayProcess

    process = GatewayProcess(config_path)
    process.start()
    url = process.url
    failed: set[str] = set()
    sent: list[str] = []

    def on_error(error: Exception, batch: list[dict[str, Any]]) -> None:
        failed.update(message["messageId"] for message in batch)

    def send() -> None:
        client = Client(write_key, host=url, on_error=on_error, max_retries=30, upload_size=250)
        for i in range(messages):
            message_id = f"crash-{i}"
            sent.append(message_id)
            if i % 10 == 0:
                client.identify(f"user-{i % 50}", {"seen": i, "plan": ["free", "pro"][i % 2]}, message_id=message_id)
            else:
                client.track(f"user-{i % 50}", ["Clicked", "Viewed Page"][i % 2], {"i": i}, message_id=message_id)
        client.flush()
        client.shutdown()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    mid_load = 0
    try:
        for _ in range(kills):
            _wait(lambda: _mid_load(process.lines), 120, "a load to start")
            mid_load += _mid_load(process.lines)
            process.kill()
            process.start()
            assert process.url == url, "the daemon came back on another address"
        sender.join(600)
        assert not sender.is_alive(), "the client did not finish sending"
        request = urllib.request.Request(
            f"{admin_url}/destinations/{destination}/flush?wait_secs=120",
            method="POST",
            headers={"Authorization": f"Bearer {admin_token}"},
        )
        with urllib.request.urlopen(request, timeout=180) as response:
            answer = json.loads(response.read())
        assert answer["done"], answer
    finally:
        process.kill()
    return CrashRun(acknowledged=set(sent) - failed, failed=failed, kills=kills, kills_mid_load=mid_load)
