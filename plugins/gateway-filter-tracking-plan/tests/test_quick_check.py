"""The quick check never calls a message valid that fastjsonschema finds invalid, and it does call
the usual valid messages valid (else it would be no quicker)."""

from __future__ import annotations

import re
from typing import Any

import fastjsonschema
import pytest
from gateway_filter_tracking_plan import compile_plan
from gateway_filter_tracking_plan.quick import QuickCheck, compile_quick_check
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def both(schema: Any) -> tuple[QuickCheck, Any]:
    validate = fastjsonschema.compile(schema, use_default=False, fast_fail=False)
    check = compile_quick_check(schema, validate.__globals__.get("REGEX_PATTERNS", {}))
    assert check is not None, schema
    return check, validate


def is_valid(validate: Any, value: Any) -> bool:
    try:
        validate(value)
    except (fastjsonschema.JsonSchemaValueException, fastjsonschema.JsonSchemaValuesException):
        return False
    return True


ORDER = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "properties": {
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "pattern": "^ORD-[0-9]+$"},
                "total": {"type": "number", "minimum": 0, "exclusiveMaximum": 1e6},
                "coupon": {"type": ["string", "null"], "maxLength": 8},
                "currency": {"enum": ["EUR", "USD"]},
                "quantity": {"type": "integer", "minimum": 1},
                "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 3},
                "kind": {"const": "web"},
                "meta": {"type": "object", "additionalProperties": False, "properties": {"a": {}}},
            },
            "required": ["order_id", "total"],
        },
        "context": {},
    },
    "required": ["properties"],
    "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
    "allOf": [{"properties": {"userId": {"type": "string"}}}],
}


@pytest.mark.parametrize(
    ("properties", "valid"),
    [
        ({"order_id": "ORD-1", "total": 3}, True),
        ({"order_id": "ORD-1", "total": 3.5, "coupon": None, "currency": "EUR", "quantity": 2}, True),
        ({"order_id": "ORD-1", "total": 0, "tags": ["a", "b"], "kind": "web", "meta": {"a": [1]}}, True),
        ({"order_id": "ORD-1\n", "total": 3}, False),  # fastjsonschema's "$" is the very end
        ({"order_id": "ORD-1"}, False),
        ({"order_id": "ORD-1", "total": -1}, False),
        ({"order_id": "ORD-1", "total": 1e6}, False),
        ({"order_id": "ORD-1", "total": True}, False),
        ({"order_id": "ORD-1", "total": 3, "coupon": "x" * 9}, False),
        ({"order_id": "ORD-1", "total": 3, "currency": "JPY"}, False),
        ({"order_id": "ORD-1", "total": 3, "quantity": 0}, False),
        ({"order_id": "ORD-1", "total": 3, "tags": ["a", ""]}, False),
        ({"order_id": "ORD-1", "total": 3, "tags": ["a"] * 4}, False),
        ({"order_id": "ORD-1", "total": 3, "kind": "app"}, False),
        ({"order_id": "ORD-1", "total": 3, "meta": {"b": 1}}, False),
    ],
)
def test_agrees_with_fastjsonschema_on_typical_messages(properties: dict[str, Any], valid: bool) -> None:
    check, validate = both(ORDER)
    message = {"userId": "u1", "properties": properties, "context": {"ip": "1.2.3.4"}}
    assert is_valid(validate, message) is valid
    assert check(message) is valid


def test_without_user_or_anonymous_id_it_is_not_valid() -> None:
    check, _ = both(ORDER)
    assert check({"properties": {"order_id": "ORD-1", "total": 3}}) is False
    assert check({"anonymousId": "a", "properties": {"order_id": "ORD-1", "total": 3}}) is True
    assert check({"userId": 7, "properties": {"order_id": "ORD-1", "total": 3}}) is False


def test_it_is_only_sure_about_exact_json_types() -> None:
    """A float integer, a tuple or a dict subclass is "not sure": fastjsonschema decides."""
    check, validate = both({"properties": {"n": {"type": "integer"}, "l": {"type": "array"}, "o": {"required": ["a"]}}})
    assert is_valid(validate, {"n": 3.0}) and not check({"n": 3.0})
    assert is_valid(validate, {"l": (1,)}) and not check({"l": (1,)})

    class Sub(dict[str, Any]):
        pass

    assert not is_valid(validate, {"o": Sub()}) and not check({"o": Sub()})
    assert check({"n": 3, "l": [1], "o": {"a": 1}})


@pytest.mark.parametrize(
    "schema",
    [
        {"properties": {"email": {"type": "string", "format": "email"}}},
        {"properties": {"a": {"$ref": "#/definitions/x"}}, "definitions": {"x": {"type": "string"}}},
        {"oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
        {"not": {"required": ["a"]}},
        {"patternProperties": {"^x": {"type": "string"}}},
        {"additionalProperties": {"type": "string"}},
        {"items": [{"type": "string"}]},
        {"enum": [1, 2]},
        {"$schema": "http://json-schema.org/draft-04/schema#", "properties": {"a": {"type": "integer"}}},
        False,
    ],
)
def test_schemas_it_does_not_mirror_get_no_quick_check(schema: Any) -> None:
    validate = fastjsonschema.compile(schema, use_default=False, fast_fail=False)
    assert compile_quick_check(schema, validate.__globals__.get("REGEX_PATTERNS", {})) is None


def test_a_pattern_fastjsonschema_did_not_compile_gets_no_quick_check() -> None:
    assert compile_quick_check({"pattern": "^a$"}, {}) is None
    assert compile_quick_check({"pattern": "^a$"}, {"^a$": re.compile(r"^a\Z")}) is not None


def test_plan_rules_carry_a_quick_check_when_their_schema_allows() -> None:
    plan = compile_plan(
        {
            "rules": [
                {"type": "TRACK", "key": "A", "jsonSchema": ORDER},
                {"type": "TRACK", "key": "B", "jsonSchema": {"properties": {"e": {"format": "email"}}}},
            ]
        }
    )
    assert plan.track["A"].oldest.quick_check is not None
    assert plan.track["B"].oldest.quick_check is None
    assert plan.track["A"].oldest.errors({"userId": "u", "properties": {"order_id": "ORD-1", "total": 1}}) == []
    assert plan.track["A"].oldest.errors({"userId": "u", "properties": {"order_id": "x", "total": 1}})


# --- the property: "valid" from the quick check implies valid for fastjsonschema ----------------

KEYS = ["a", "b", "c", "n", "s"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-4, 4)  # on and around the schemas' limits
    | st.sampled_from([-1.0, 0.5, 2.0, 3.0])
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_infinity=True, allow_nan=True)
    | st.text(max_size=6)
    | st.sampled_from(["ab", "a\n", "EUR", "x-1"])
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS), children, max_size=4),
    max_leaves=12,
)
numbers = st.integers(-3, 3) | st.floats(-3, 3)
#: One keyword each (several together rarely admit any value); allOf and properties combine them.
KEYWORDS: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(["string", "number", "integer", "boolean", "null", "object", "array"])
    | st.lists(st.sampled_from(["string", "number", "integer", "null", "object"]), min_size=1, max_size=3),
    "minimum": numbers,
    "maximum": numbers,
    "exclusiveMinimum": numbers,
    "exclusiveMaximum": numbers,
    "minLength": st.integers(0, 3),
    "maxLength": st.integers(0, 3),
    "pattern": st.sampled_from(["^a", "b$", "^[a-z]+$", "\\d"]),
    "enum": st.lists(st.sampled_from(["ab", "EUR", "", "a"]), min_size=1, max_size=3),
    "const": st.sampled_from(["ab", "a"]),
    "minItems": st.integers(0, 2),
    "maxItems": st.integers(0, 2),
    "title": st.just("annotation"),
    "required": st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True),  # anyOf branches inline these
}
leaf_schemas = st.one_of(
    [st.builds(lambda value, keyword=keyword: {keyword: value}, strategy) for keyword, strategy in KEYWORDS.items()]
)
schemas = st.recursive(
    leaf_schemas | st.just(True),
    lambda children: st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["object", "array"]),
            "properties": st.dictionaries(st.sampled_from(KEYS), children, max_size=3),
            "required": st.lists(st.sampled_from(KEYS), max_size=2, unique=True),
            "additionalProperties": st.booleans(),
            "items": children,
            "anyOf": st.lists(children, min_size=1, max_size=2),
            "allOf": st.lists(children, min_size=1, max_size=2),
        },
    ),
    max_leaves=8,
)


#: Values on and around the limits the schemas above use, tried against every schema.
PROBES: list[Any] = [
    *(None, True, False, -4, -3, -1, 0, 1, 2, 3, 4, -3.0, 0.5, 2.0, 3.0, 2**70, float("nan"), float("inf")),
    *("", "a", "ab", "abc", "abcd", "b", "EUR", "a\n", "1", "x1"),
    *([], [1], ["a", "b"], [None, None, None], {}, {"a": 1}, {"a": "ab", "b": None}),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas, value=values, data=st.data())
def test_quick_valid_implies_fastjsonschema_valid(schema: Any, value: Any, data: st.DataObject) -> None:
    try:
        validate = fastjsonschema.compile(schema, use_default=False, fast_fail=False)
    except fastjsonschema.JsonSchemaDefinitionException:
        return  # the plan loader refuses it before any quick check
    check = compile_quick_check(schema, validate.__globals__.get("REGEX_PATTERNS", {}))
    assert check is not None, schema
    # Also values shaped by the schema's own keys, so that nested checks are reached.
    shaped = data.draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=5))
    candidates = [value, shaped, [shaped], *PROBES, *({key: probe} for key in KEYS for probe in PROBES)]
    for candidate in candidates:
        if check(candidate):
            assert is_valid(validate, candidate), (schema, candidate)
