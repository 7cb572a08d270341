"""The Tracking API over HTTP (in process, on a real SQLite log): endpoints, auth, errors, limits."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.http.app import create_app
from gateway.ingest.hub import IngestHub
from gateway.log.memory import open_memory_log
from gateway.plugins import Registry
from tests.conftest import App, open_app
from tests.gatewayproc import WRITE_KEY, config_text

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}


async def stored(app: App) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in await app.log.read(0, max_records=10_000, max_bytes=1 << 30)]


async def post(app: App, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await app.client().post(
        path, data=data, headers={**AUTH, **(headers or {})}, scope_base={"client": ("127.0.0.1", 50000)}
    )
    return response.status_code, await response.get_json(), response.headers


@pytest.mark.parametrize(
    ("path", "call_type", "extra"),
    [
        ("/v1/identify", "identify", {"traits": {"plan": "pro"}}),
        ("/v1/track", "track", {"event": "Clicked"}),
        ("/v1/page", "page", {"name": "Home"}),
        ("/v1/screen", "screen", {"name": "Home"}),
        ("/v1/group", "group", {"groupId": "g1"}),
        ("/v1/alias", "alias", {"previousId": "anon-1"}),
        ("/v1/i", "identify", {}),
        ("/v1/t", "track", {"event": "Clicked"}),
        ("/v1/p", "page", {}),
        ("/v1/s", "screen", {}),
        ("/v1/g", "group", {"groupId": "g1"}),
        ("/v1/a", "alias", {"previousId": "anon-1"}),
    ],
)
async def test_single_call_paths_set_the_type(gateway_app: App, path: str, call_type: str, extra: dict) -> None:
    status, body, _ = await post(gateway_app, path, {"userId": "u1", "type": "bogus", **extra})
    assert (status, body) == (200, {"success": True})
    [message] = await stored(gateway_app)
    assert message["type"] == call_type
    assert message["userId"] == "u1"


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/import", "/v1/b"])
async def test_batch_paths(gateway_app: App, path: str) -> None:
    batch = {"batch": [{"type": "track", "userId": "u", "event": "e", "messageId": f"m{i}"} for i in range(3)]}
    assert (await post(gateway_app, path, batch))[:2] == (200, {"success": True})
    assert [m["messageId"] for m in (await stored(gateway_app))] == ["m0", "m1", "m2"]


async def test_write_key_in_body_and_text_plain(gateway_app: App) -> None:
    # analytics.js: text/plain, writeKey in the event, no Authorization header.
    response = await gateway_app.client().post(
        "/v1/t",
        data=json.dumps({"writeKey": WRITE_KEY, "anonymousId": "a", "event": "e"}).encode(),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 200
    [message] = await stored(gateway_app)
    assert "writeKey" not in message


async def test_batch_root_write_key_and_per_item_write_keys(gateway_app: App) -> None:
    client = gateway_app.client()
    root = {"writeKey": WRITE_KEY, "batch": [{"type": "identify", "userId": "u"}]}
    assert (await client.post("/v1/batch", data=json.dumps(root).encode())).status_code == 200
    items = {
        "batch": [
            {"type": "identify", "userId": "u", "writeKey": WRITE_KEY},
            {"type": "identify", "userId": "v", "writeKey": "wrong"},
        ]
    }
    response = await client.post("/v1/b", data=json.dumps(items).encode())
    assert response.status_code == 200
    assert (await response.get_json())["rejected"] == [
        {"index": 1, "code": "invalid_write_key", "message": "unknown or missing write key"}
    ]
    assert len(await stored(gateway_app)) == 2


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"wrong:").decode()},
        {"Authorization": "Bearer x"},
        {"Authorization": "Basic !!!"},
    ],
)
async def test_unknown_or_missing_key_is_401(gateway_app: App, headers: dict[str, str]) -> None:
    response = await gateway_app.client().post("/v1/track", data=b'{"userId":"u","event":"e"}', headers=headers)
    assert response.status_code == 401
    assert (await response.get_json())["code"] == "invalid_write_key"
    assert (await stored(gateway_app)) == []


async def test_header_key_wins_over_body_key(gateway_app: App) -> None:
    wrong = {"Authorization": "Basic " + base64.b64encode(b"wrong:").decode()}
    status, _, _ = await post(gateway_app, "/v1/track", {"writeKey": WRITE_KEY, "userId": "u", "event": "e"}, wrong)
    assert status == 401


async def test_bare_key_without_colon_is_accepted(gateway_app: App) -> None:
    bare = {"Authorization": "Basic " + base64.b64encode(WRITE_KEY.encode()).decode()}
    assert (await post(gateway_app, "/v1/track", {"userId": "u", "event": "e"}, bare))[0] == 200


async def test_partially_bad_batch_is_accepted_and_lists_rejections(gateway_app: App) -> None:
    batch = {
        "batch": [
            {"type": "track", "userId": "u", "event": "ok-1"},
            {"type": "track", "userId": "u"},
            "not an object",
            {"type": "nonsense", "userId": "u"},
            {"type": "identify", "userId": "u", "traits": {"big": "x" * 40_000}},
            {"type": "track", "userId": "u", "event": "ok-2"},
        ]
    }
    status, body, _ = await post(gateway_app, "/v1/batch", batch)
    assert status == 200
    assert body["success"] is True
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [
        (1, "event_not_defined"),
        (2, "message_not_object"),
        (3, "type_invalid"),
        (4, "message_too_large"),
    ]
    assert [m["event"] for m in (await stored(gateway_app))] == ["ok-1", "ok-2"]


async def test_a_batch_with_nothing_valid_is_400(gateway_app: App) -> None:
    status, body, _ = await post(gateway_app, "/v1/batch", {"batch": [{"type": "track", "userId": "u"}]})
    assert status == 400
    assert body["code"] == "event_not_defined"
    assert body["rejected"][0]["index"] == 0


async def test_batch_limit_keeps_the_first_items(gateway_app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    batch = {"batch": [{"type": "identify", "userId": f"u{i}"} for i in range(2502)]}
    status, body, _ = await post(gateway_app, "/v1/batch", batch)
    assert status == 200
    # One entry for all the items past the limit: a small request of millions of tiny items
    # made a 395 MB answer (an adversarial test).
    assert body["rejected"] == [
        {
            "index": 2500,
            "code": "batch_limit_exceeded",
            "message": "a batch may hold at most 2500 messages: items 2500 to 2501 were not taken",
        }
    ]
    assert len(await stored(gateway_app)) == 2500
    status, body, _ = await post(gateway_app, "/v1/batch", b'{"batch":[' + b",".join([b"1"] * 200_000) + b"]}")
    assert status == 400 and body["code"] == "invalid_batch"  # far past any batch: refused whole
    # Nothing valid in it, past the limit too: still a 400 (the one entry stands for many).
    status, body, _ = await post(gateway_app, "/v1/batch", {"batch": [{"type": "track", "userId": "u"}] * 2502})
    assert status == 400 and [r["code"] for r in body["rejected"]][-1] == "batch_limit_exceeded"
    assert len(await stored(gateway_app)) == 2500


async def test_server_fields_and_client_ip(gateway_app: App) -> None:
    await post(
        gateway_app,
        "/v1/batch",
        {
            "batch": [{"type": "track", "userId": "u", "event": "e", "timestamp": "2026-01-01T00:00:00Z"}],
            "sentAt": "2026-01-01T00:00:01Z",
            "context": {"library": {"name": "x"}},
            "integrations": {"All": True},
        },
    )
    [message] = await stored(gateway_app)
    assert message["sentAt"] == "2026-01-01T00:00:01Z"
    assert message["context"] == {"library": {"name": "x"}, "ip": "127.0.0.1"}
    assert message["integrations"] == {"All": True}
    assert message["originalTimestamp"] == "2026-01-01T00:00:00Z"
    assert message["timestamp"] < message["receivedAt"]
    assert len(message["messageId"]) == 36


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("10.0.0.5", "203.0.113.9", "203.0.113.9"),  # trusted proxy: believe it
        ("10.0.0.5", "198.51.100.1, 203.0.113.9, 10.0.0.7", "203.0.113.9"),  # nearest untrusted hop
        ("198.51.100.77", "203.0.113.9", "198.51.100.77"),  # untrusted peer: ignore the header
        ("10.0.0.5", None, "10.0.0.5"),
        ("10.0.0.5", "not-an-ip", "10.0.0.5"),
        ("<local>", None, None),
    ],
)
async def test_forwarded_for_is_honoured_only_from_trusted_proxies(
    gateway_app: App, peer: str, forwarded: str | None, expected: str | None
) -> None:
    import dataclasses

    from gateway.config import ServerConfig

    server = dataclasses.replace(
        gateway_app.config,
        server=ServerConfig(trusted_proxies=["10.0.0.0/8"], data_dir=gateway_app.config.server.data_dir),
    )
    gateway_app.hub.use_config(server, {})
    assert gateway_app.hub.client_ip(peer, forwarded) == expected


async def test_gzip_body(gateway_app: App) -> None:
    body = gzip.compress(json.dumps({"batch": [{"type": "identify", "userId": "u"}]}).encode())
    status, _, _ = await post(gateway_app, "/v1/batch", body, {"Content-Encoding": "gzip"})
    assert status == 200
    assert len(await stored(gateway_app)) == 1


async def test_gzip_bomb_is_refused_without_inflating_it(gateway_app: App) -> None:
    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]", compresslevel=9)
    assert len(bomb) < 300_000
    status, body, _ = await post(gateway_app, "/v1/batch", bomb, {"Content-Encoding": "gzip"})
    assert status == 400
    assert body["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        (b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}, "invalid_gzip"),
        (gzip.compress(b'{"userId":"u"}')[:-6], {"Content-Encoding": "gzip"}, "invalid_gzip"),
        (b"{}", {"Content-Encoding": "br"}, "unsupported_content_encoding"),
        (b"{not json", {}, "invalid_json"),
        (b"[1,2]", {}, "message_not_object"),
        (b'{"event":"e"}', {}, "no_user_anon_id"),
        (b'{"userId":"u","event":"e","properties":"x"}', {}, "properties_not_object"),
        (b'{"userId":"u","event":"e","messageId":"' + b"m" * 101 + b'"}', {}, "message_id_too_long"),
        (b'{"userId":"u","event":"e","timestamp":"soon"}', {}, "timestamp_invalid"),
        (b'{"userId":"u","event":"' + b"x" * 33_000 + b'"}', {}, "message_too_large"),
    ],
)
async def test_bad_single_calls_are_400_with_a_code(gateway_app: App, body: bytes, headers: dict, code: str) -> None:
    status, answer, _ = await post(gateway_app, "/v1/track", body, headers)
    assert status == 400
    assert answer["success"] is False
    assert answer["code"] == code
    assert answer["message"] == answer["error"]
    assert (await stored(gateway_app)) == []


async def test_oversized_request_is_400_before_reading_it(gateway_app: App) -> None:
    huge = b'{"batch":[' + b" " * (gateway_app.config.server.max_request_bytes + 1) + b"]}"
    status, body, _ = await post(gateway_app, "/v1/batch", huge)
    assert (status, body["code"]) == (400, "payload_too_large")


async def test_node_client_sized_batch_is_accepted(gateway_app: App) -> None:
    # analytics-node really sends 1.2 MB batches (clients.md §3).
    batch = {
        "batch": [{"type": "track", "userId": "u", "event": "e", "properties": {"p": "x" * 30_000}} for _ in range(40)]
    }
    status, body, _ = await post(gateway_app, "/v1/batch", batch)
    assert (status, body) == (200, {"success": True})
    assert len(await stored(gateway_app)) == 40


async def test_wrong_method_and_path_are_json_4xx(gateway_app: App) -> None:
    client = gateway_app.client()
    response = await client.get("/v1/track")
    assert response.status_code == 405
    assert (await response.get_json())["code"] == "method_not_allowed"
    for path in ("/v1/nope", "/v2/track", "/"):
        response = await client.post(path, data=b"{}", headers=AUTH)
        assert response.status_code == 404
        assert (await response.get_json())["success"] is False


async def test_metrics_endpoint_is_accepted_and_discarded(gateway_app: App) -> None:
    series = {"series": [{"type": "Counter", "metric": "analytics_js.invoke", "value": 1}]}
    status, body, _ = await post(gateway_app, "/v1/m", series, {"Content-Type": "text/plain"})
    assert (status, body) == (200, {"success": True})
    assert (await stored(gateway_app)) == []


async def test_duplicate_message_ids_are_acknowledged_and_stored_once(gateway_app: App) -> None:
    message = {"userId": "u", "event": "e", "messageId": "dup-1"}
    assert (await post(gateway_app, "/v1/track", message))[0] == 200
    assert (await post(gateway_app, "/v1/batch", {"batch": [{**message, "type": "track"}] * 2}))[0] == 200
    assert len(await stored(gateway_app)) == 1


async def test_unwritable_log_is_503_with_retry_after(gateway_app: App) -> None:
    await gateway_app.log.aclose()  # type: ignore[attr-defined]
    status, body, headers = await post(gateway_app, "/v1/track", {"userId": "u", "event": "e"})
    assert status == 503
    assert body["code"] == "closed"
    assert headers["Retry-After"] == "5"


@pytest.mark.parametrize("fast_paths", [True, False])
async def test_a_log_that_refuses_writes_is_503_stores_nothing_and_recovers(
    tmp_path: Path, registry: Registry, fast_paths: bool
) -> None:
    config = parse_config(config_text(tmp_path, archive=False), registry)
    source_types = [t if fast_paths else dataclasses.replace(t, fast_path=None) for t in registry.sources.values()]
    async with open_memory_log(config.log) as log:
        hub = IngestHub(log, config, {})
        app = App(create_app(hub, source_types), hub, log, config)
        log.fail_commits("disk_full")
        for path, body in (
            ("/v1/track", {"userId": "u", "event": "e"}),
            ("/v1/batch", {"batch": [{"type": "page", "userId": "u"}]}),
        ):
            status, answer, headers = await post(app, path, body)
            assert (status, answer["code"], headers["Retry-After"]) == (503, "disk_full", "5"), path
        assert log.head() == 0 and not log.writable()
        log.fail_commits(None)
        await log.checkpoint()
        assert log.writable()
        assert (await post(app, "/v1/track", {"userId": "u", "event": "e"}))[0] == 200
        assert len(await stored(app)) == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
message_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "x"]) | json_values,
        "userId": st.text(max_size=5) | json_values,
        "anonymousId": json_values,
        "event": json_values,
        "properties": json_values,
        "traits": json_values,
        "context": json_values,
        "messageId": json_values,
        "timestamp": st.text(max_size=30) | json_values,
        "sentAt": json_values,
        "groupId": json_values,
        "previousId": json_values,
        "writeKey": json_values,
        "integrations": json_values,
    },
)
bodies = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v).encode())
    | message_like.map(lambda v: json.dumps(v).encode())
    | st.fixed_dictionaries(
        {"batch": st.lists(message_like | json_values, max_size=5)},
        optional={"sentAt": json_values, "context": json_values, "integrations": json_values, "writeKey": json_values},
    ).map(lambda v: json.dumps(v).encode())
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/v1/track", "/v1/identify", "/v1/alias", "/v1/batch", "/v1/b", "/v1/p", "/v1/m"]),
    body=bodies,
    gzipped=st.booleans(),
)
def test_random_bodies_never_cause_a_5xx(
    tmp_path: Path, registry: Registry, path: str, body: bytes, gzipped: bool
) -> None:
    # Synchronous, with one trio.run per example: each example gets a fresh app on the same log.
    async def check() -> None:
        async with open_app(tmp_path, registry) as app:
            headers = {**AUTH, "Content-Encoding": "gzip"} if gzipped else AUTH
            response = await app.client().post(path, data=gzip.compress(body) if gzipped else body, headers=headers)
            assert response.status_code in (200, 400, 401), await response.get_data()
            answer = await response.get_json()
            assert isinstance(answer, dict) and "success" in answer
            if response.status_code != 200:
                assert answer["code"] and answer["message"]

    trio.run(check)


GOOD = {"type": "track", "userId": "u", "event": "ok"}
TOO_DEEP = "nesting_too_deep"


@pytest.mark.parametrize(
    ("item", "code"),
    [
        (b'{"type":"track","userId":"u","event":"\xff"}', "invalid_json"),  # invalid UTF-8 in a string
        (b'{"type":"track","userId":"u","event":"e","properties":{"n":1e400}}', "invalid_json"),
        (b'{"type":"track","userId":"u","event":"e","properties":{"n":' + b"9" * 5000 + b"}}", "invalid_json"),
        (b'{"type":"track","userId":"u","event":"e","properties":' + b"[" * 5000 + b"]" * 5000 + b"}", TOO_DEEP),
        (b'{"type":"track","userId":"u","event":"e","timestamp":"0001-01-01T00:00:00+14:00"}', "timestamp_invalid"),
        (
            b'{"type":"track","userId":"u","event":"e","timestamp":"2024-01-01T00:00:00Z","sentAt":"9999-12-31T00:00:00Z"}',
            "timestamp_invalid",
        ),
    ],
)
async def test_values_a_decoder_chokes_on_are_the_clients_fault(gateway_app: App, item: bytes, code: str) -> None:
    """Found by an adversarial test: each of these was a 503 with Retry-After (clients retry it
    for ever) and a traceback, and in a batch it lost the valid items around it too."""
    single = item.replace(b'"type":"track",', b"")
    status, body, _ = await post(gateway_app, "/v1/track", single)
    assert (status, body["code"]) == (400, code), body
    batch = b'{"batch":[' + json.dumps(GOOD).encode() + b"," + item + b"]}"
    status, body, _ = await post(gateway_app, "/v1/batch", batch)
    if code == TOO_DEEP:  # too deep for the decoder to skip: the batch as a whole
        assert (status, body["code"]) == (400, code)
        return
    assert status == 200 and [(r["index"], r["code"]) for r in body["rejected"]] == [(1, code)]
    assert [m["event"] for m in (await stored(gateway_app))] == ["ok"]


async def test_a_batch_root_counts_in_every_items_size_and_depth(gateway_app: App) -> None:
    # The root context was merged into every item after the 32 KB check: a 3 KB gzip body
    # stored 200 copies of a 3 MB context (1.6 GB of RSS in an adversarial test).
    root = {"context": {"blob": "x" * 40_000}, "batch": [GOOD] * 200}
    status, body, _ = await post(gateway_app, "/v1/batch", root)
    assert status == 400 and body["code"] == "message_too_large" and len(body["rejected"]) == 200
    small = {"context": {"blob": "x" * 1000}, "batch": [GOOD]}
    assert (await post(gateway_app, "/v1/batch", small))[0] == 200
    deep: Any = {}
    for _ in range(98):  # 99 deep, so 100 with the item around it once merged: allowed
        deep = {"a": deep}
    assert (await post(gateway_app, "/v1/batch", {"integrations": deep, "batch": [GOOD]}))[0] == 200
    status, body, _ = await post(gateway_app, "/v1/batch", {"integrations": {"a": deep}, "batch": [GOOD]})
    assert (status, body["code"]) == (400, "nesting_too_deep")
    assert [len(m["context"]["blob"]) for m in (await stored(gateway_app)) if "blob" in m["context"]] == [1000]


def test_an_authorization_header_of_any_bytes_is_no_write_key() -> None:
    from gateway.http.app import write_key_of

    for value in ("Basic \xff\xfe", "Basic ÿÿÿÿ", "Basic " + base64.b64encode(b"\xff\xfe:").decode()):
        assert write_key_of(value) is None  # (the first raised ValueError: a 503)


# -- defects closed by the architecture issue (section 5) ----------------------------------


@pytest.mark.parametrize("tail", [b"garbage", gzip.compress(b'{"batch": []}')], ids=["garbage", "second member"])
async def test_a_gzip_body_with_data_after_its_stream_is_refused(gateway_app: App, tail: bytes) -> None:
    body = gzip.compress(json.dumps({"userId": "u", "event": "E", "messageId": "gz"}).encode()) + tail
    status, answer, _ = await post(gateway_app, "/v1/track", body, {"Content-Encoding": "gzip"})
    assert (status, answer["code"]) == (400, "invalid_gzip")
    assert await stored(gateway_app) == []


async def test_a_batch_roots_sent_at_is_merged_only_when_it_is_a_string(gateway_app: App) -> None:
    item = {"type": "track", "userId": "u", "event": "E"}
    for sent_at, prefix in (({"not": "a time"}, "obj"), (12345, "num"), ("2026-01-01T00:00:00Z", "str")):
        body = {"sentAt": sent_at, "batch": [{**item, "messageId": f"{prefix}-1"}]}
        assert (await post(gateway_app, "/v1/batch", body))[0] == 200
    by_id = {m["messageId"]: m for m in await stored(gateway_app)}
    assert "sentAt" not in by_id["obj-1"] and "sentAt" not in by_id["num-1"]
    assert by_id["str-1"]["sentAt"] == "2026-01-01T00:00:00Z"


async def test_a_message_id_with_nul_cannot_shadow_a_forwarded_key(gateway_app: App) -> None:
    forged = "\x00forwarded\x00web\x00m-1"
    status, answer, _ = await post(gateway_app, "/v1/track", {"userId": "u", "event": "E", "messageId": forged})
    assert (status, answer["code"]) == (400, "message_id_invalid")
    assert await stored(gateway_app) == []


async def test_a_batch_items_write_key_is_checked_before_its_type(tmp_path: Path, registry: Registry) -> None:
    # As before the core owned the sequence: an item's key, and the origin its source allows,
    # come before its type. A batch none of whose items has a known key is a 401 (the client
    # has a configuration problem, not bad events), and an item of a source that refuses the
    # page's origin refuses the whole batch, whatever else is wrong with the item.
    page = "https://blog.example.org"
    extra = (
        'allowed_origins = ["http://shop.example"]\n'
        f'[sources.other]\nwrite_key = "other-key"\nallowed_origins = ["{page}"]\n'
    )
    async with open_app(tmp_path, registry, extra) as app:
        untyped = {"userId": "u", "event": "E"}
        no_key = {"Authorization": ""}
        status, body, _ = await post(app, "/v1/batch", {"batch": [untyped, {**untyped, "type": "nope"}]}, no_key)
        assert (status, body["code"]) == (401, "invalid_write_key")
        mixed = [
            {**untyped, "type": "nope", "writeKey": WRITE_KEY},
            {**untyped, "type": "track", "writeKey": "other-key"},
        ]
        status, body, _ = await post(app, "/v1/batch", {"batch": mixed}, {**no_key, "Origin": page})
        assert (status, body["code"]) == (403, "origin_not_allowed")
        assert await stored(app) == []
        metrics = app.hub.metrics.render().decode()
        assert 'gateway_messages_rejected_total{code="invalid_write_key"} 2.0' in metrics
        assert "type_" not in metrics


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{not json", "the body is not valid JSON: "), (b"[1,2]", "the body must be a JSON object")],
)
async def test_a_single_calls_body_is_not_called_a_batch_item(gateway_app: App, body: bytes, message: str) -> None:
    # The developer reads the message: a /v1/track body is "the body", as before the core owned
    # decoding, not "the item" or "each batch item".
    status, answer, _ = await post(gateway_app, "/v1/track", body)
    assert status == 400
    assert answer["message"].startswith(message), answer["message"]


async def test_defaults_a_source_hands_to_check_count_in_every_messages_size(gateway_app: App) -> None:
    # Ingest.check's contract, for any source type: the defaults are merged into each message
    # and counted in its size, as the Tracking API's batch root is, or a small request stores
    # as many copies of a large root as it has messages.
    from gateway import Arrival, BatchDefaults, Candidate

    hub = gateway_app.hub
    web = hub.authenticate(WRITE_KEY, "tracking_api")
    big = BatchDefaults(context={"blob": "x" * 40_000})
    checked = hub.check([Candidate(dict(GOOD)), Candidate(dict(GOOD))], Arrival.now(None), source=web, defaults=big)
    assert checked is not None
    assert (checked.accepted, [r.code for r in checked.rejected]) == (0, ["message_too_large"] * 2)
    small = BatchDefaults(context={"blob": "x" * 1000})
    checked = hub.check([Candidate(dict(GOOD))], Arrival.now(None), source=web, defaults=small)
    assert checked is not None and (checked.accepted, checked.rejected) == (1, [])
