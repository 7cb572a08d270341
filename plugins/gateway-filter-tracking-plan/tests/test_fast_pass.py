"""The filter's fast pass (one generated check per rule, with the COMMON rule and the unplanned
keys) says True only for messages the plan lets through as they are: on generated plans, options
and messages, the filter then returns the very message, unchanged, and counts nothing; and a
chain run with fast passes gives exactly what the filter alone gives."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from gateway_filter_tracking_plan import TrackingPlanConfig, TrackingPlanFilter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import Filter, FilterContext
from gateway.testing import run_filters

KEYS = ["a", "b", "n", "s"]
LEAVES: list[Any] = [
    {},
    {"type": "string"},
    {"type": "string", "pattern": "^a"},
    {"type": ["string", "null"], "maxLength": 2},
    {"type": "number", "minimum": 0},
    {"type": "integer", "exclusiveMaximum": 3},
    {"enum": ["a", "b"]},
    {"type": "array", "items": {"type": "string"}, "maxItems": 2},
    {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
    {"type": "string", "format": "email"},  # no quick check: the rule gets no fast pass
]


@st.composite
def container_schemas(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "properties": draw(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(LEAVES), max_size=4))
    }
    if draw(st.booleans()):
        schema["type"] = draw(st.sampled_from(["object", ["object", "null"]]))
    closed = draw(st.booleans())
    if closed:
        schema["additionalProperties"] = draw(st.booleans())
    required_from = sorted(schema["properties"]) if schema.get("additionalProperties") is False else KEYS
    if required_from and draw(st.booleans()):
        schema["required"] = draw(st.lists(st.sampled_from(required_from), min_size=1, max_size=2, unique=True))
    return schema


def rule_schema(container: str, section: Any, required: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": {container: section}}
    if required:
        schema["required"] = [container]
    return schema


COMMON: list[Any] = [
    None,
    {"properties": {"context": {"type": "object"}}},
    {"anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}]},
    {"properties": {"context": {"type": "object", "properties": {"locale": {"type": "string"}}}}},
]


@st.composite
def plans(draw: st.DrawFn) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    for version in range(1, draw(st.integers(1, 2)) + 1):  # two versions: no fast pass for the event
        section = draw(container_schemas())
        rules.append(
            {
                "type": "TRACK",
                "key": "E",
                "version": version,
                "jsonSchema": rule_schema("properties", section, draw(st.booleans())),
            }
        )
    rules.append({"type": "IDENTIFY", "jsonSchema": rule_schema("traits", draw(container_schemas()), False)})
    rules.append(
        {"type": "PAGE", "key": "Home", "jsonSchema": rule_schema("properties", draw(container_schemas()), False)}
    )
    if draw(st.booleans()):
        rules.append({"type": "PAGE", "jsonSchema": rule_schema("properties", draw(container_schemas()), False)})
    common = draw(st.sampled_from(COMMON))
    if common is not None:
        rules.append({"type": "COMMON", "jsonSchema": common})
    return {"name": "Generated", "rules": rules}


options = st.fixed_dictionaries(
    {
        "unplanned_events": st.sampled_from(["allow", "block"]),
        "unplanned_properties": st.sampled_from(["allow", "omit"]),
        "unplanned_traits": st.sampled_from(["allow", "omit"]),
        "violations": st.sampled_from(["allow", "block", "omit"]),
        "common_violations": st.sampled_from(["allow", "block", "omit"]),
    }
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-2, 4)
    | st.sampled_from([0.5, -1.0, 3.0])
    | st.sampled_from(["", "a", "ab", "abc", "b", "x"])
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=2) | st.dictionaries(st.sampled_from(["x", "y"]), children, max_size=2)
    ),
    max_leaves=4,
)
#: Values that satisfy most leaf schemas, so that many generated messages are valid.
likely = st.sampled_from(["a", "ab", 1, 0, 0.5, None, ["a"], {"x": 1}])
containers = st.dictionaries(st.sampled_from([*KEYS, "z"]), values, max_size=5) | st.dictionaries(
    st.sampled_from(KEYS), likely, max_size=4
)
messages = st.fixed_dictionaries(
    {"messageId": st.just("m-1")},
    optional={
        "type": st.sampled_from(["track", "identify", "page", "screen", "alias", None, 3]),
        "event": st.sampled_from(["E", "F", 1]),
        "name": st.sampled_from(["Home", "Other", None]),
        "properties": containers | scalars,
        "traits": containers,
        "userId": st.just("u-1"),
        "anonymousId": st.just("a-1"),
        "context": st.sampled_from([{}, {"locale": "en-US"}, {"locale": 1}, "x"]),
    },
)


def build(plan: dict[str, Any], config: dict[str, Any], directory: str) -> TrackingPlanFilter:
    path = Path(directory) / "plan.json"
    path.write_text(json.dumps(plan))
    return TrackingPlanFilter(msgspec.convert({"plan": str(path), **config}, TrackingPlanConfig))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans(), config=options, batch=st.lists(messages, min_size=1, max_size=8))
def test_what_the_fast_pass_passes_the_filter_returns_unchanged(
    plan: dict[str, Any], config: dict[str, Any], batch: list[dict[str, Any]]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        plan_filter = build(plan, config, directory)
    fast_pass = plan_filter.fast_pass()
    context = FilterContext("web")
    for message in batch:
        seen = copy.deepcopy(message)
        passed = fast_pass(seen)
        assert seen == message  # the fast pass changes nothing
        before = plan_filter.statistics()
        result = plan_filter.apply(seen, context)
        if passed:
            assert result is seen
            assert seen == message
            assert plan_filter.statistics() == before
        # The core's chain with the fast pass and the filter alone give the same outcome.
        with_fast_pass = run_filters([("plan", plan_filter)], copy.deepcopy(message), context)
        plain = run_filters([("plan", _ApplyOnly(plan_filter))], copy.deepcopy(message), context)
        assert with_fast_pass == plain


class _ApplyOnly(Filter):
    """The same filter without its fast pass: what the core ran before fast passes existed."""

    def __init__(self, inner: TrackingPlanFilter) -> None:
        self.inner = inner
        self.drop_reason = inner.drop_reason

    def apply(self, message: dict[str, Any], context: FilterContext) -> Any:
        return self.inner.apply(message, context)


ORDER_RULE = rule_schema(
    "properties",
    {
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "pattern": "^ORD-"},
            "total": {"type": "number", "minimum": 0},
            "coupon": {},
        },
        "required": ["order_id"],
    },
    True,
)
PLAN = {
    "rules": [
        {"type": "TRACK", "key": "Order Completed", "jsonSchema": ORDER_RULE},
        {"type": "COMMON", "jsonSchema": {"anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}]}},
    ]
}
OMIT = {
    "unplanned_events": "block",
    "unplanned_properties": "omit",
    "violations": "block",
    "common_violations": "block",
}


@pytest.mark.parametrize(
    ("message", "passes"),
    [
        (
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "u",
                "properties": {"order_id": "ORD-1", "total": 2},
            },
            True,
        ),
        (
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "u",
                "properties": {"order_id": "ORD-1", "coupon": None},
            },
            True,
        ),
        ({"type": "identify", "anonymousId": "a", "traits": {"email": "x"}}, True),  # no rule: COMMON only
        (
            {
                "type": "track",
                "event": "Order Completed",
                "userId": "u",
                "properties": {"order_id": "ORD-1", "extra": 1},
            },
            False,
        ),
        ({"type": "track", "event": "Order Completed", "userId": "u", "properties": {"order_id": "X"}}, False),
        ({"type": "track", "event": "Order Completed", "properties": {"order_id": "ORD-1"}}, False),  # no user
        ({"type": "track", "event": "Signed Up", "userId": "u"}, False),  # unplanned, blocked
    ],
)
def test_the_usual_messages_take_the_fast_pass(tmp_path: Path, message: dict[str, Any], passes: bool) -> None:
    plan_filter = build(PLAN, OMIT, str(tmp_path))
    assert plan_filter.fast_pass()(message) is passes
    assert (plan_filter.apply(message, FilterContext("web")) is message) is passes


def test_without_unplanned_key_omission_extra_keys_pass(tmp_path: Path) -> None:
    plan_filter = build(PLAN, {**OMIT, "unplanned_properties": "allow"}, str(tmp_path))
    message = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u",
        "properties": {"order_id": "ORD-1", "extra": 1},
    }
    assert plan_filter.fast_pass()(message) is True
    assert plan_filter.apply(message, FilterContext("web")) is message
