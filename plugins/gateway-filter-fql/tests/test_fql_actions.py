"""The filter's actions: sample (random and deterministic), drop, drop/allow properties."""

from __future__ import annotations

import copy
import hashlib
import math
from typing import Any

import gateway_filter_fql.filter as filter_module
import msgspec
import pytest
from gateway_filter_fql import FQLFilter, FQLFilterConfig
from gateway_filter_fql.actions import consistent_fraction
from gateway_filter_fql.values import go_json


def make_filter(**options: Any) -> FQLFilter:
    return FQLFilter(msgspec.convert(options, FQLFilterConfig))


def track(user: str = "u1", **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": user,
        "messageId": f"m-{user}",
        "context": {"ip": "10.0.0.1", "traits": {"email": "a@b.c", "name": "A"}},
        "properties": {"email": "a@b.c", "total": 10, **properties},
    }


def test_events_the_condition_does_not_match_pass_untouched() -> None:
    f = make_filter(**{"if": "event = 'Other'", "drop": True})
    event = track()
    before = copy.deepcopy(event)
    assert f.process(event) is event
    assert event == before
    assert (f.matched, f.dropped, f.errors) == (0, 0, 0)


def test_drop() -> None:
    f = make_filter(**{"if": "type = 'track' and properties.total > 5", "drop": True})
    assert f.process(track()) is None
    assert f.process(track(total=1)) is not None
    assert (f.matched, f.dropped) == (1, 1)


def test_only_send_is_a_drop_of_the_negation() -> None:
    f = make_filter(**{"if": "!(event in ['Order Completed', 'Signed Up'])", "drop": True})
    assert f.process(track()) is not None
    assert f.process({**track(), "event": "Page Scrolled"}) is None


def test_drop_properties_top_level_nested_and_in_arrays() -> None:
    f = make_filter(
        **{
            "if": "all",
            "drop_properties": {
                "": ["userId", "absent"],
                "properties": ["email"],
                "context.traits": ["email"],
                "properties.products": ["price"],
                "properties.nothing_here": ["x"],
                "properties.total": ["x"],  # not an object: nothing to do
            },
        }
    )
    event = track(products=[{"sku": "a", "price": 1}, {"sku": "b", "price": 2}, "not-an-object"])
    out = f.process(event)
    assert out is not None
    assert "userId" not in out
    assert out["properties"] == {"total": 10, "products": [{"sku": "a"}, {"sku": "b"}, "not-an-object"]}
    assert out["context"] == {"ip": "10.0.0.1", "traits": {"name": "A"}}


def test_allow_properties_keeps_only_the_named_keys_of_the_named_parents() -> None:
    f = make_filter(
        **{
            "if": "type = 'track'",
            "allow_properties": {
                "properties": ["total", "products"],
                "properties.products": ["sku"],
                "context.traits": [],
            },
        }
    )
    event = track(products=[{"sku": "a", "price": 1}, {"sku": "b", "colour": "red"}], extra=1)
    out = f.process(event)
    assert out is not None
    assert out["properties"] == {"total": 10, "products": [{"sku": "a"}, {"sku": "b"}]}
    assert out["context"] == {"ip": "10.0.0.1", "traits": {}}  # other parents left alone
    assert out["userId"] == "u1"


def test_allow_properties_at_the_top_level() -> None:
    f = make_filter(**{"if": "all", "allow_properties": {"": ["type", "event", "messageId"]}})
    assert f.process(track()) == {"type": "track", "event": "Order Completed", "messageId": "m-u1"}


def test_drop_properties_runs_before_allow_properties() -> None:
    f = make_filter(
        **{
            "if": "all",
            "drop_properties": {"properties": ["email"]},
            "allow_properties": {"properties": ["email", "total"]},
        }
    )
    out = f.process(track())
    assert out is not None
    assert out["properties"] == {"total": 10}


def test_sample_with_a_path_is_deterministic_per_user_and_near_the_rate() -> None:
    f = make_filter(**{"if": "type = 'track'", "sample": {"percent": 0.25, "path": "userId"}})
    users = [f"user-{i}" for i in range(20_000)]
    kept = {user for user in users if f.process(track(user)) is not None}
    assert abs(len(kept) / len(users) - 0.25) < 0.015
    again = make_filter(**{"if": "type = 'track'", "sample": {"percent": 0.25, "path": "userId"}})
    assert {user for user in users if again.process(track(user)) is not None} == kept
    # the same user is always in or always out, whatever else the event holds
    for user in users[:200]:
        assert (f.process(track(user, total=99)) is not None) == (user in kept)
    # a larger percent keeps a superset: users stay in as the rate grows
    wider = make_filter(**{"if": "type = 'track'", "sample": {"percent": 0.5, "path": "userId"}})
    assert kept <= {user for user in users if wider.process(track(user)) is not None}


def test_sample_only_applies_to_matching_events() -> None:
    f = make_filter(**{"if": "event = 'Other'", "sample": {"percent": 0.0}})
    assert f.process(track()) is not None


def test_sample_without_a_path_draws_per_event() -> None:
    f = make_filter(**{"if": "all", "sample": {"percent": 0.3}})
    kept = sum(f.process(track("same-user")) is not None for _ in range(20_000))
    assert abs(kept / 20_000 - 0.3) < 0.015
    assert f.dropped == 20_000 - kept


@pytest.mark.parametrize(("percent", "kept"), [(0, 0), (0.0, 0), (1, 100), (1.0, 100)])
def test_sample_bounds(percent: float, kept: int) -> None:
    f = make_filter(**{"if": "all", "sample": {"percent": percent, "path": "userId"}})
    assert sum(f.process(track(f"u{i}")) is not None for i in range(100)) == kept


def test_sample_then_property_actions() -> None:
    f = make_filter(
        **{"if": "all", "sample": {"percent": 0.5, "path": "userId"}, "drop_properties": {"properties": ["email"]}}
    )
    outs = [f.process(track(f"u{i}")) for i in range(200)]
    kept = [out for out in outs if out is not None]
    assert 0 < len(kept) < 200
    assert all("email" not in out["properties"] for out in kept)


def test_consistent_fraction_is_the_md5_mapping() -> None:
    # Recompute by hand: significand = first 8 digest bytes big-endian; leading zero bits shift in
    # bits from the last 8 bytes and lower the exponent; the lowest bit is set; ldexp(s, -64 - shift).
    for value in ["u1", "user-42", "", 123, None, {"b": 1, "a": 2}, "a<b"]:
        data = go_json(value)
        digest = hashlib.md5(data).digest()
        high = int.from_bytes(digest[:8], "big")
        low = int.from_bytes(digest[8:], "big")
        shift = 64 - high.bit_length()
        significand = (((high << shift) & (2**64 - 1)) | (low >> (64 - shift) if shift else 0)) | 1
        assert consistent_fraction(data) == math.ldexp(float(significand), -64 - shift)
        assert 0.0 <= consistent_fraction(data) <= 1.0
    assert go_json("u1") == b'"u1"'
    assert go_json({"b": 1, "a": [1.0, "<&>"]}) == b'{"a":[1,"\\u003c\\u0026\\u003e"],"b":1}'


def test_events_without_the_sample_field_share_one_fate() -> None:
    f = make_filter(**{"if": "all", "sample": {"percent": 0.5, "path": "properties.cohort"}})
    results = {f.process(track(f"u{i}")) is None for i in range(50)}
    assert len(results) == 1


class _RecordingLog:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


def test_evaluation_errors_drop_the_event_are_counted_and_warned_at_most_once_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder = _RecordingLog()
    monkeypatch.setattr(filter_module, "log", recorder)
    f = make_filter(**{"if": "properties.total and true", "drop_properties": {"properties": ["email"]}})
    for _ in range(5):
        assert f.process(track()) is None
    assert f.process(track(total=None)) is not None  # null counts as false: no error, no match
    assert len(recorder.warnings) == 1
    f.warn_interval_secs = 0.0
    assert f.process(track()) is None
    assert f.errors == 6
    assert f.statistics() == {"matched": 0, "dropped": 0, "errors": 6}
    assert [event for event, _ in recorder.warnings] == ["fql_evaluation_failed"] * 2
    first, second = (fields for _, fields in recorder.warnings)
    assert first["errors"] == 1
    assert "not a bool" in first["error"]
    assert first["message_id"] == "m-u1"
    assert first["condition"] == "properties.total and true"
    assert second["errors_since_last_warning"] == 5


def test_a_message_that_is_not_an_object_is_dropped_not_raised() -> None:
    f = make_filter(**{"if": "type = 'track'", "drop": True})
    assert f.process(["not", "a", "dict"]) is None  # type: ignore[arg-type]
    assert f.errors == 1


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"if": "type = 'track'", "drop": True}, "filtered_by_rules"),
        ({"if": "type = 'track'", "sample": {"percent": 0.0}}, "sampled"),
        ({"if": "properties.total and true", "drop": True}, "filter_evaluation_error"),
    ],
)
def test_each_way_of_dropping_is_counted_with_its_own_reason(options: dict[str, Any], reason: str) -> None:
    from gateway import FilterContext
    from gateway.testing import run_filters as apply_filters

    outcome = apply_filters([("f", make_filter(**options))], track(), FilterContext("web", "crm"))
    assert (outcome.message, outcome.reason, outcome.failure) == (None, reason, None)
