"""Tracking plan enforcement: every option, versions, COMMON, traits, annotations, plan errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from gateway_filter_tracking_plan import PlanError, TrackingPlanConfig, TrackingPlanFilter, load_plan

from gateway import ConfigError
from gateway.testing import check_config, plugin_registry

ORDER_V1 = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "properties": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "total": {"type": "number"},
                "currency": {"enum": ["EUR", "USD"]},
            },
            "required": ["order_id"],
        }
    },
    "required": ["properties"],
}
ORDER_V2 = {
    "type": "object",
    "properties": {
        "properties": {
            "type": "object",
            "properties": {"order_id": {"type": "integer"}, "coupon": {"type": "string"}},
            "required": ["order_id", "coupon"],
        }
    },
}
PLAN: dict[str, Any] = {
    "name": "Web",
    "rules": [
        {"type": "TRACK", "key": "Order Completed", "version": 1, "jsonSchema": ORDER_V1},
        {"type": "TRACK", "key": "Order Completed", "version": 2, "jsonSchema": ORDER_V2},
        {"type": "TRACK", "key": "Signed Up", "jsonSchema": {}},
        {
            "type": "IDENTIFY",
            "key": None,
            "jsonSchema": {
                "properties": {
                    "traits": {
                        "type": "object",
                        "properties": {"email": {"type": "string", "format": "email"}, "age": {"type": "integer"}},
                    }
                }
            },
        },
        {
            "type": "GROUP",
            "jsonSchema": {"properties": {"traits": {"properties": {"plan": {"enum": ["free", "pro"]}}}}},
        },
        {
            "type": "PAGE",
            "jsonSchema": {"properties": {"properties": {"properties": {"path": {"type": "string"}}}}},
        },
        {
            "type": "COMMON",
            "jsonSchema": {
                "properties": {"context": {"properties": {"ip": {"type": "string", "format": "ipv4"}}}},
                "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
            },
        },
    ],
}


def write_plan(tmp_path: Path, plan: Any = PLAN, name: str = "plan.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(plan) if isinstance(plan, dict) else plan)
    return path


def make(tmp_path: Path, **options: Any) -> TrackingPlanFilter:
    return TrackingPlanFilter(TrackingPlanConfig(plan=str(write_plan(tmp_path)), **options))


def order(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "track", "event": "Order Completed", "userId": "u1", "properties": properties, **extra}


def protocols(message: dict[str, Any] | None) -> dict[str, Any]:
    assert message is not None
    return message.get("context", {}).get("protocols", {})


GOOD = {"order_id": "o1", "total": 10.5, "currency": "EUR"}


def test_a_valid_planned_event_passes_unannotated(tmp_path: Path) -> None:
    f = make(tmp_path, unplanned_events="block", unplanned_properties="omit", violations="block")
    message = order(dict(GOOD))
    assert f.process(message) == order(GOOD)


def test_unplanned_events_allow_and_block(tmp_path: Path) -> None:
    unplanned = {"type": "track", "event": "order completed", "userId": "u1"}  # names are exact
    assert make(tmp_path).process(dict(unplanned)) == unplanned
    blocking = make(tmp_path, unplanned_events="block")
    assert blocking.process(dict(unplanned)) is None
    assert blocking.process({"type": "track", "userId": "u1"}) is None  # no event name: unplanned
    assert blocking.statistics()["blocked_unplanned"] == 2
    # only track calls can be unplanned events
    assert blocking.process({"type": "alias", "userId": "u1", "previousId": "a"}) is not None


def test_unplanned_properties_allow_and_omit(tmp_path: Path) -> None:
    message = order({**GOOD, "newProperty": 1, "other": "x"})
    assert make(tmp_path).process(json.loads(json.dumps(message))) == message
    original = json.loads(json.dumps(message))
    result = make(tmp_path, unplanned_properties="omit").process(original)
    assert result is not None and result["properties"] == GOOD
    assert protocols(result) == {"omitted": ["newProperty", "other"]}
    assert original == message  # the input is never changed in place


def test_violations_allow_annotates_in_segment_shape(tmp_path: Path) -> None:
    result = make(tmp_path).process(order({"total": "12", "currency": "GBP"}))
    assert result is not None and result["properties"] == {"total": "12", "currency": "GBP"}
    assert protocols(result)["violations"] == [
        {"type": "Required", "field": "properties", "description": "order_id is required"},
        {
            "type": "Invalid Type",
            "field": "properties.total",
            "description": "Invalid type. Expected: number, given: string",
        },
        {
            "type": "Enum",
            "field": "properties.currency",
            "description": 'properties.currency must be one of the following: "EUR", "USD"',
        },
    ]


def test_violations_block(tmp_path: Path) -> None:
    f = make(tmp_path, violations="block")
    assert f.process(order({"order_id": 5})) is None
    assert f.process(order({})) is None
    assert f.process(order({"order_id": "ok"})) is not None
    assert f.statistics()["blocked_violation"] == 2


def test_violations_omit_removes_offending_properties_only(tmp_path: Path) -> None:
    f = make(tmp_path, violations="omit")
    result = f.process(order({"order_id": "o1", "total": "12", "currency": "GBP", "note": "kept"}))
    assert result is not None
    assert result["properties"] == {"order_id": "o1", "note": "kept"}
    assert protocols(result)["omitted_on_violation"] == ["total", "currency"]
    assert [v["field"] for v in protocols(result)["violations"]] == ["properties.total", "properties.currency"]
    # a missing required property cannot be omitted: reported, the event passes
    result = f.process(order({"total": 1}))
    assert result is not None and result["properties"] == {"total": 1}
    assert "omitted_on_violation" not in protocols(result)
    assert protocols(result)["violations"][0]["type"] == "Required"


def test_unplanned_omit_and_violation_omit_together(tmp_path: Path) -> None:
    f = make(tmp_path, unplanned_properties="omit", violations="omit")
    result = f.process(order({"order_id": "o1", "total": "x", "extra": 1}))
    assert result is not None and result["properties"] == {"order_id": "o1"}
    assert protocols(result)["omitted"] == ["extra"] and protocols(result)["omitted_on_violation"] == ["total"]


def test_event_versions_by_context_protocols_event_version(tmp_path: Path) -> None:
    f = make(tmp_path, violations="block")
    v1 = {"order_id": "o1"}
    v2 = {"order_id": 7, "coupon": "C"}

    def with_version(properties: dict[str, Any], version: Any) -> dict[str, Any]:
        return order(properties, context={"protocols": {"event_version": version}})

    assert f.process(with_version(v2, 2)) is not None
    assert f.process(with_version(v1, 2)) is None
    assert f.process(with_version(v1, 1)) is not None
    assert f.process(with_version(v2, 1)) is None
    # missing or invalid versions use the oldest
    assert f.process(order(v1)) is not None
    assert f.process(with_version(v1, "2")) is not None
    assert f.process(with_version(v1, 9)) is not None
    assert f.process(with_version(v1, True)) is not None
    # unplanned properties follow the selected version too
    omit = make(tmp_path, unplanned_properties="omit")
    result = omit.process(with_version({"order_id": 7, "coupon": "C", "total": 1}, 2))
    assert result is not None and result["properties"] == {"order_id": 7, "coupon": "C"}
    assert result["context"]["protocols"] == {"event_version": 2, "omitted": ["total"]}


def test_identify_and_group_traits(tmp_path: Path) -> None:
    f = make(tmp_path, unplanned_traits="omit", violations="omit")
    identify = {"type": "identify", "userId": "u1", "traits": {"email": "x@y.io", "age": 3, "ssn": "1"}}
    result = f.process(identify)
    assert result is not None and result["traits"] == {"email": "x@y.io", "age": 3}
    assert protocols(result) == {"omitted": ["ssn"]}
    result = f.process({"type": "identify", "userId": "u1", "traits": {"email": "nope", "age": 3}})
    assert result is not None and result["traits"] == {"age": 3}
    assert protocols(result)["violations"] == [
        {"type": "Format", "field": "traits.email", "description": "Does not match format 'email'"}
    ]
    group = {"type": "group", "userId": "u1", "groupId": "g", "traits": {"plan": "gold", "name": "Acme"}}
    result = f.process(group)
    assert result is not None and result["traits"] == {}
    assert protocols(result)["omitted"] == ["name"] and protocols(result)["omitted_on_violation"] == ["plan"]
    # unplanned traits allowed: kept; per-call violation modes
    keep = make(tmp_path, identify_violations="block", group_violations="allow", violations="omit")
    assert keep.process({"type": "identify", "userId": "u1", "traits": {"age": "x", "ssn": "1"}}) is None
    result = keep.process(dict(group))
    assert result is not None and result["traits"] == group["traits"]


def test_page_rules_and_unplanned_properties(tmp_path: Path) -> None:
    f = make(tmp_path, unplanned_properties="omit", violations="block")
    page = {"type": "page", "userId": "u", "name": "Home", "properties": {"path": "/", "title": "Home"}}
    result = f.process(page)
    assert result is not None and result["properties"] == {"path": "/"}
    assert f.process({**page, "properties": {"path": 1}}) is None
    screen = {"type": "screen", "userId": "u", "name": "Home", "properties": {"x": 1}}  # no SCREEN rule
    assert f.process(dict(screen)) == screen


def test_common_is_checked_after_the_standard_controls(tmp_path: Path) -> None:
    anonymous = {"type": "track", "event": "Signed Up", "properties": {}}
    # allow: annotated with a (root) violation
    result = make(tmp_path).process(dict(anonymous))
    assert protocols(result)["violations"] == [
        {"type": "Number Any Of", "field": "(root)", "description": "Must validate at least one schema (anyOf)"}
    ]
    blocking = make(tmp_path, common_violations="block")
    assert blocking.process(dict(anonymous)) is None
    assert blocking.statistics()["blocked_common"] == 1
    # COMMON applies to every call, unplanned events and aliases included
    assert blocking.process({"type": "track", "event": "Nope", "userId": "u"}) is not None
    assert blocking.process({"type": "alias", "previousId": "p"}) is None
    # omit removes the offending field wherever it is
    omitting = make(tmp_path, common_violations="omit")
    message = {"type": "identify", "userId": "u", "context": {"ip": "not an ip", "locale": "fr"}}
    result = omitting.process(message)
    assert result is not None and result["context"]["locale"] == "fr" and "ip" not in result["context"]
    assert protocols(result)["omitted_on_violation"] == ["context.ip"]
    assert message["context"]["ip"] == "not an ip"
    # after the standard controls: a property omitted by the standard control is not checked again
    f = make(tmp_path, unplanned_properties="omit", common_violations="block")
    plan = PLAN | {
        "rules": [
            *PLAN["rules"][:-1],
            {
                "type": "COMMON",
                "jsonSchema": {"properties": {"properties": {"properties": {"debug": {"type": "boolean"}}}}},
            },
        ]
    }
    f = TrackingPlanFilter(
        TrackingPlanConfig(
            plan=str(write_plan(tmp_path, plan, "p2.json")), unplanned_properties="omit", common_violations="block"
        )
    )
    assert f.process(order({"order_id": "o", "debug": "yes"})) is not None
    assert (
        TrackingPlanFilter(TrackingPlanConfig(plan=str(tmp_path / "p2.json"), common_violations="block")).process(
            order({"order_id": "o", "debug": "yes"})
        )
        is None
    )


def test_existing_context_protocols_are_kept(tmp_path: Path) -> None:
    message = order({"order_id": 1}, context={"protocols": {"sourceId": "s", "violations": [{"type": "x"}]}})
    result = make(tmp_path).process(message)
    assert protocols(result)["sourceId"] == "s"
    assert [v["type"] for v in protocols(result)["violations"]] == ["x", "Invalid Type"]


def test_never_raises_fail_policy(tmp_path: Path) -> None:
    class Boom(dict[str, Any]):
        def get(self, *args: Any) -> Any:
            raise RuntimeError("boom")

    message = Boom(type="track")
    assert make(tmp_path).process(message) is None  # on_error = "block" by default
    f = make(tmp_path, on_error="allow")
    assert f.process(message) is message
    assert f.statistics()["errors"] == 1


def test_legacy_shape_and_toml(tmp_path: Path) -> None:
    toml = """
name = "Legacy"

[[rules.events]]
name = "Order Completed"
version = 1
[rules.events.rules.properties.properties]
type = "object"
required = ["order_id"]
[rules.events.rules.properties.properties.properties.order_id]
type = "string"

[rules.global.properties.context]
type = "object"

[rules.identify.properties.traits.properties.email]
type = "string"
"""
    plan = load_plan(write_plan(tmp_path, toml, "plan.toml"))
    assert plan.name == "Legacy" and plan.rule_count == 3
    assert set(plan.track) == {"Order Completed"} and plan.common is not None and plan.identify is not None
    f = TrackingPlanFilter(TrackingPlanConfig(plan=str(tmp_path / "plan.toml"), violations="block"))
    assert f.process(order({"order_id": 1})) is None
    assert f.process(order({"order_id": "1"})) is not None
    public_toml = """
[[rules]]
type = "TRACK"
key = "Signed Up"
[rules.jsonSchema.properties.properties]
required = ["plan"]
"""
    f = TrackingPlanFilter(
        TrackingPlanConfig(plan=str(write_plan(tmp_path, public_toml, "public.toml")), violations="block")
    )
    assert f.process({"type": "track", "event": "Signed Up", "properties": {}}) is None


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("plan.json", "{not json", "not valid JSON"),
        ("plan.toml", "rules = [", "not valid TOML"),
        ("plan.yaml", "rules: []", "must end in .json or .toml"),
        ("plan.json", '{"name": "x"}', 'an object with "rules"'),
        ("plan.json", '{"rules": [{"type": "TRACK", "jsonSchema": {}}]}', "rules[0].key: a TRACK rule needs"),
        ("plan.json", '{"rules": [{"type": "EVENT", "key": "x", "jsonSchema": {}}]}', "rules[0].type: must be one of"),
        ("plan.json", '{"rules": [{"type": "IDENTIFY", "key": "x", "jsonSchema": {}}]}', "must be null for IDENTIFY"),
        ("plan.json", '{"rules": [{"type": "TRACK", "key": "x", "version": 0, "jsonSchema": {}}]}', "version"),
        ("plan.json", '{"rules": [{"type": "TRACK", "key": "x"}]}', "jsonSchema: missing"),
        ("plan.json", '{"rules": [{"type": "TRACK", "key": "x", "jsonschema": {}}]}', "unknown keys"),
        (
            "plan.json",
            json.dumps({"rules": [{"type": "TRACK", "key": "A", "jsonSchema": {}}] * 2}),
            "duplicate rule",
        ),
        (
            "plan.json",
            '{"rules": [{"type": "TRACK", "key": "A", "jsonSchema": {"type": "String"}}]}',
            "rules[0] (TRACK 'A' v1): invalid JSON Schema",
        ),
        ("plan.json", '{"rules": [{"type": "COMMON", "jsonSchema": {"pattern": "(?!x"}}]}', "invalid JSON Schema"),
        (
            "plan.json",
            '{"rules": [{"type": "COMMON", "jsonSchema": {"$ref": "https://example.com/s.json"}}]}',
            "remote $ref",
        ),
        ("plan.toml", "[rules]\nevents = [{ version = 1 }]", "rules.events[0].name"),
        ("plan.toml", "[rules]\nsurprise = {}", "unknown keys ['surprise']"),
        (
            "plan.toml",
            "[[rules]]\ntype = 'TRACK'\nkey = 'A'\njsonSchema = { type = 'object', required = 'x' }",
            "invalid JSON Schema",
        ),
    ],
)
def test_plan_file_errors(tmp_path: Path, name: str, content: str, expected: str) -> None:
    path = write_plan(tmp_path, content, name)
    with pytest.raises(PlanError) as raised:
        load_plan(path)
    assert expected in str(raised.value) and str(path) in str(raised.value)


def test_missing_plan_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read"):
        load_plan(tmp_path / "absent.json")


@pytest.fixture(scope="module")
def registry() -> Any:
    return plugin_registry()


def source_config(plan: Path) -> str:
    return f"""
[sources.web]
write_key = "k"
filters = ["web_plan"]

[filters.web_plan]
type = "tracking_plan"
plan = "{plan}"
unplanned_events = "block"
violations = "omit"
"""


def test_found_through_the_entry_point_and_compiled_once(tmp_path: Path, registry: Any) -> None:
    assert registry.provided_by[("filter", "tracking_plan")] == "tracking_plan"
    config = check_config(source_config(write_plan(tmp_path)))
    options = config.filters["web_plan"].options
    assert isinstance(options, TrackingPlanConfig) and options.unplanned_events == "block"
    built = registry.filters["tracking_plan"].factory(options)
    assert isinstance(built, TrackingPlanFilter)
    assert built.plan is options.compiled_plan()  # the plan compiled at config load, not a second one
    assert built.process({"type": "track", "event": "Unplanned", "userId": "u"}) is None


@pytest.mark.parametrize(
    ("content", "expected"),
    [("{", "not valid JSON"), ('{"rules": [{"type": "PAGE", "jsonSchema": {"type": 3}}]}', "invalid JSON Schema")],
)
def test_a_broken_plan_rejects_the_config_naming_the_filter(
    tmp_path: Path, registry: Any, content: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        check_config(source_config(write_plan(tmp_path, content)))
    assert raised.value.where == "filters.web_plan"
    assert "plan:" in str(raised.value) and expected in str(raised.value)


def test_bad_option_values_are_config_errors(tmp_path: Path, registry: Any) -> None:
    text = source_config(write_plan(tmp_path)).replace('violations = "omit"', 'violations = "drop"')
    with pytest.raises(ConfigError) as raised:
        check_config(text)
    assert "filters.web_plan" in raised.value.where
