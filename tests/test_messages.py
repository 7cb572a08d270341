"""Validation codes and server-side fields of the Segment wire format (segment-api.md §1.7-1.10)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from gateway.messages import (
    Arrival,
    BatchDefaults,
    Invalid,
    apply_server_fields,
    batch_item_type,
    decode_batch,
    decode_item,
    decode_single,
    format_time,
    validate,
)

RECEIVED = datetime(2026, 11, 28, 16, 33, 26, 158000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("call_type", "message", "code"),
    [
        ("track", {"event": "x"}, "no_user_anon_id"),
        ("track", {"userId": None, "anonymousId": None, "event": "x"}, "no_user_anon_id"),
        ("track", {"userId": 42, "event": "x"}, "id_not_string"),
        ("track", {"userId": "", "event": "x"}, "id_not_string"),
        ("identify", {"anonymousId": ["a"]}, "id_not_string"),
        ("track", {"userId": "u"}, "event_not_defined"),
        ("track", {"userId": "u", "event": 5}, "event_not_string"),
        ("track", {"userId": "u", "event": ""}, "event_not_string"),
        ("track", {"userId": "u", "event": "x", "properties": []}, "properties_not_object"),
        ("identify", {"userId": "u", "traits": "rich"}, "traits_not_object"),
        ("group", {"userId": "u"}, "group_id_required"),
        ("group", {"userId": "u", "groupId": 7}, "group_id_not_string"),
        ("group", {"userId": "u", "groupId": "g", "traits": 1}, "traits_not_object"),
        ("alias", {"userId": "u"}, "previous_id_required"),
        ("alias", {"anonymousId": "a", "previousId": "p"}, "user_id_required"),
        ("page", {"userId": "u", "name": 3}, "name_not_string"),
        ("screen", {"userId": "u", "category": {}}, "category_not_string"),
        ("track", {"userId": "u", "event": "x", "messageId": "m" * 101}, "message_id_too_long"),
        ("track", {"userId": "u", "event": "x", "messageId": 12}, "message_id_not_string"),
        ("track", {"userId": "u", "event": "x", "context": "web"}, "context_not_object"),
        ("track", {"userId": "u", "event": "x", "integrations": [1]}, "integrations_not_object"),
    ],
)
def test_validate_rejects_with_segment_code(call_type: str, message: dict, code: str) -> None:
    with pytest.raises(Invalid) as raised:
        validate(message, call_type)
    assert raised.value.code == code


@pytest.mark.parametrize(
    ("call_type", "message"),
    [
        ("identify", {"userId": "u", "anonymousId": None, "traits": {"email": "a@b.c"}}),
        ("track", {"anonymousId": "a", "event": "Clicked", "properties": {}}),
        ("page", {"userId": "u", "name": None, "category": None}),
        ("screen", {"userId": "u", "name": "Home"}),
        ("group", {"userId": "u", "groupId": "g1"}),
        # analytics.js sends alias with userId == previousId after identify (clients.md §4.2).
        ("alias", {"userId": "u", "previousId": "u"}),
        ("track", {"userId": "u", "event": "x", "messageId": "m" * 100}),
    ],
)
def test_validate_accepts_what_real_clients_send(call_type: str, message: dict) -> None:
    validate(message, call_type)


def test_server_fields_correct_clock_skew_as_documented() -> None:
    # The worked example of segment-api.md §1.8.
    message = {
        "userId": "u",
        "event": "x",
        "timestamp": "2026-11-28T16:33:26.060Z",
        "sentAt": "2026-11-28T16:33:26.060Z",
        "writeKey": "secret",
    }
    apply_server_fields(message, "track", Arrival(at=RECEIVED, text=format_time(RECEIVED), client_ip="10.1.2.3"))
    assert message["timestamp"] == "2026-11-28T16:33:26.158Z"
    assert message["originalTimestamp"] == "2026-11-28T16:33:26.060Z"
    assert message["receivedAt"] == "2026-11-28T16:33:26.158Z"
    assert "writeKey" not in message
    assert message["context"] == {"ip": "10.1.2.3"}
    assert message["type"] == "track"
    assert len(message["messageId"]) == 36


def test_server_fields_skew_with_offsets_and_microseconds() -> None:
    # Python's client: offsets, and sentAt in microseconds; the device clock is 1 h behind.
    sent = RECEIVED - timedelta(hours=1, seconds=2)
    message = {
        "userId": "u",
        "timestamp": (sent - timedelta(seconds=10)).isoformat(),
        "sentAt": sent.isoformat(timespec="microseconds"),
    }
    apply_server_fields(message, "identify", Arrival(at=RECEIVED, text=format_time(RECEIVED), client_ip=None))
    assert message["timestamp"] == "2026-11-28T16:33:16.158Z"
    assert "context" not in message


def test_server_fields_without_timestamp_or_sent_at() -> None:
    no_time = {"userId": "u"}
    apply_server_fields(no_time, "identify", Arrival(at=RECEIVED, text=format_time(RECEIVED), client_ip=None))
    assert no_time["timestamp"] == no_time["originalTimestamp"] == no_time["receivedAt"]
    no_sent_at = {"userId": "u", "timestamp": "2020-01-01T00:00:00Z"}
    apply_server_fields(no_sent_at, "identify", Arrival(at=RECEIVED, text=format_time(RECEIVED), client_ip=None))
    assert no_sent_at["timestamp"] == "2020-01-01T00:00:00.000Z"


def test_server_fields_reject_an_unreadable_timestamp() -> None:
    with pytest.raises(Invalid) as raised:
        apply_server_fields(
            {"userId": "u", "timestamp": "yesterday"},
            "identify",
            Arrival(at=RECEIVED, text=format_time(RECEIVED), client_ip=None),
        )
    assert raised.value.code == "timestamp_invalid"


def test_batch_root_fields_fill_in_without_overriding_items() -> None:
    defaults = BatchDefaults(
        sent_at="2026-11-28T16:33:26.000Z",
        context={"library": {"name": "root"}, "locale": "en-US"},
        integrations={"All": False},
    )
    item = {"userId": "u", "context": {"locale": "fr-FR", "ip": "1.1.1.1"}, "integrations": {"Mixpanel": True}}
    apply_server_fields(
        item, "identify", Arrival(at=RECEIVED, text=format_time(RECEIVED), client_ip="9.9.9.9"), defaults=defaults
    )
    assert item["context"] == {"library": {"name": "root"}, "locale": "fr-FR", "ip": "1.1.1.1"}
    assert item["integrations"] == {"All": False, "Mixpanel": True}
    assert item["sentAt"] == "2026-11-28T16:33:26.000Z"
    assert defaults.context == {"library": {"name": "root"}, "locale": "en-US"}  # not shared/mutated


def test_an_explicit_message_id_is_kept() -> None:
    message = {"userId": "u", "messageId": "ajs-next-1795901259626-6fd2c836"}
    apply_server_fields(message, "identify", Arrival(at=RECEIVED, text=format_time(RECEIVED), client_ip=None))
    assert message["messageId"] == "ajs-next-1795901259626-6fd2c836"


@pytest.mark.parametrize(
    ("body", "code"), [(b"{", "invalid_json"), (b"[]", "message_not_object"), (b"", "invalid_json")]
)
def test_decode_single_errors(body: bytes, code: str) -> None:
    with pytest.raises(Invalid) as raised:
        decode_single(body)
    assert raised.value.code == code


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"batch": {}}', "invalid_batch"),
        (b"[1]", "invalid_batch"),
        (b'{"nobatch": 1}', "invalid_batch"),
        (b'{"batch": [', "invalid_json"),
    ],
)
def test_decode_batch_errors(body: bytes, code: str) -> None:
    with pytest.raises(Invalid) as raised:
        decode_batch(body)
    assert raised.value.code == code


def test_decode_batch_keeps_items_raw_with_their_sizes() -> None:
    body = decode_batch(b'{"batch": [{"type": "track"}, 3], "writeKey": "k"}')
    assert [bytes(raw) for raw in body.batch] == [b'{"type": "track"}', b"3"]
    assert body.writeKey == "k"


@pytest.mark.parametrize(("item", "code"), [({}, "type_required"), ({"type": "Track"}, "type_invalid")])
def test_batch_items_need_a_valid_type(item: dict, code: str) -> None:
    with pytest.raises(Invalid) as raised:
        batch_item_type(item)
    assert raised.value.code == code


def test_messages_nested_deeper_than_the_limit_are_refused_per_item() -> None:
    from gateway.messages import MAX_NESTING, check_nesting

    deep: dict = {"type": "track"}
    node = deep
    for _ in range(MAX_NESTING):
        node["a"] = {}
        node = node["a"]
    raw = msgspec.Raw(msgspec.json.encode(deep))  # as decode_batch hands items over
    with pytest.raises(Invalid) as refused:
        decode_item(raw)
    assert refused.value.code == "nesting_too_deep"
    shallow = msgspec.json.encode({"a": [{"b": [1, 2]}] * 200})  # many brackets, little depth
    check_nesting(msgspec.json.decode(shallow), shallow)
