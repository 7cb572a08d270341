"""Rule.unplanned: the keys a rule does not plan, found with one set operation when all are planned."""

from __future__ import annotations

from gateway_filter_tracking_plan import compile_plan


def test_unplanned_keys_keep_their_order_and_honour_pattern_properties() -> None:
    schema = {"properties": {"properties": {"properties": {"a": {}, "b": {}}, "patternProperties": {"^x_": {}}}}}
    rule = compile_plan({"rules": [{"type": "TRACK", "key": "E", "jsonSchema": schema}]}).track["E"].oldest
    assert rule.unplanned({"b": 1, "a": 2}) == []
    assert rule.unplanned({"z": 1, "a": 2, "x_1": 3, "c": 4}) == ["z", "c"]
