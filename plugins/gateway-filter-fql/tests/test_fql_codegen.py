"""The generated condition functions compute exactly what the closures compute: the same result,
or the same evaluation error, on arbitrary events."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import msgspec
import pytest
from gateway_filter_fql import FQLEvaluationError, FQLSyntaxError, compile_expression, fql
from gateway_filter_fql.filter import FQLFilter, FQLFilterConfig
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway import FilterContext, Verdict
from gateway.testing import run_filters


def _properties_module() -> Any:
    """The strategies of the property tests (test modules cannot import each other here)."""
    path = Path(__file__).with_name("test_fql_properties.py")
    spec = importlib.util.spec_from_file_location("_fql_property_strategies", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_strategies = _properties_module()


def outcome(matches: Any, event: dict[str, Any]) -> Any:
    try:
        return matches(event)
    except FQLEvaluationError:
        return FQLEvaluationError


def assert_same(expression: str, event: dict[str, Any]) -> None:
    generated = compile_expression(expression).matches
    reference = fql._truth(fql._compile(fql._parse(expression), 0), "the expression")
    assert outcome(generated, event) == outcome(reference, event), expression


@pytest.mark.parametrize(
    "expression",
    [
        "event = 'Order Completed'",
        "context.library.name = 'analytics.js' and properties.total > 10",
        "userId in ['a', 'b'] or !(type = 'track')",
        "match(context.library.name, 'test*')",
        "properties.total < 0 or length(properties.coupon) > 64",
    ],
)
def test_common_conditions_become_one_generated_function(expression: str) -> None:
    matches = compile_expression(expression).matches
    assert matches.__code__.co_filename == "<fql condition>"


VALUES: list[Any] = [None, True, False, 0, 1, 1.0, 1.5, -1, 2**70, "", "1", "x", "xa", "true", [], [1], {}, {"b": "x"}]
STRICT = [
    "a = true",
    "a != false",
    "a = null",
    "a = 1",
    "a = 1.5",
    "a = 'x'",
    "a < 1",
    "a >= 0",
    "a in ['1', 'x']",
    "a in [1, true, null]",
    "a.b = 'x'",
    "a.0 = 1",
    "match(a, 'x*')",
    "!(a = 1) and a != null",
    "a or false",
]


@pytest.mark.parametrize("expression", STRICT)
def test_types_stay_strict_in_generated_code(expression: str) -> None:
    """FQL's ``=`` is strict about types where Python's is not (``1 == True``, ``1 == 1.0``)."""
    assert (
        compile_expression(expression).matches.__code__.co_filename == "<fql condition>"
    )  # generated, not the closure
    for value in VALUES:
        assert_same(expression, {"a": value})


@pytest.mark.parametrize(
    "expression",
    [
        "context.library.name = 'x'",
        "properties.a.b.c.x = 1",
        "match(context.library.name, 'test*')",
        "match(a, '*bot*') or match(a, 'x*y')",
        "contains(properties.email, '@')",
        "lowercase(context.locale) = 'xx-xx' or uppercase(a) = 'X'",
        "length(properties.coupon) > 64",
    ],
)
def test_object_paths_literal_globs_and_common_functions_are_written_in(expression: str) -> None:
    """No call per path step, glob or function (length() calls only for what it does not
    write in: a string that is not ASCII, a number, an object)."""
    matches = compile_expression(expression).matches
    called = [name for name in matches.__code__.co_names if name.startswith("_f")]
    assert len(called) == (1 if "length(" in expression else 0), (expression, called)
    for value in [*VALUES, "ア", "Test-Bot", "XX-XX", "a@b", "x" * 65]:
        for event in (
            {"a": value},
            {"context": {"library": {"name": value}, "locale": value}},
            {"properties": {"coupon": value, "email": value, "a": {"b": {"c": {"x": value}}}}},
        ):
            assert_same(expression, event)


def test_a_constant_condition_keeps_its_closure() -> None:
    assert compile_expression("1 = 1").matches({}) is True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_strategies.KNOWN), _strategies.events)
def test_known_expressions_agree_with_the_closures(expression: str, event: dict[str, Any]) -> None:
    assume(expression.strip() != "all")  # the match-all condition is no compiled expression
    assert_same(expression, event)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(_strategies.conditions(), _strategies.events)
def test_generated_expressions_agree_with_the_closures(expression: str, event: dict[str, Any]) -> None:
    try:
        compile_expression(expression)
    except FQLSyntaxError:
        assume(False)
    assert_same(expression, event)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("!(" * 60 + "a.b" + ")" * 60, [FQLEvaluationError, True, False, False]),
        ("(" * 63 + "a = 1" + ")" * 63, [False, False, True, False]),
        # Too long to generate: it keeps its closure (agreeing with itself), so check the answers.
        (" or ".join(f"a.b{i} = {i}" for i in range(1000)), [True, False, False, False]),
    ],
)
def test_deep_or_long_conditions_still_agree(expression: str, expected: list[Any]) -> None:
    events = ({"a": {"b": "x", "b5": 5}}, {"a": {"b": True}}, {"a": 1}, {})
    for event in events:
        assert_same(expression, event)
    assert [outcome(compile_expression(expression).matches, event) for event in events] == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(_strategies.conditions() | st.sampled_from(_strategies.KNOWN), _strategies.events)
def test_the_fast_pass_is_the_negation_of_matches(expression: str, event: dict[str, Any]) -> None:
    """``misses`` (the filter's fast pass) says True exactly where ``matches`` says False, and
    fails where it fails."""
    try:
        program = compile_expression(expression)
    except FQLSyntaxError:
        assume(False)
    matched = outcome(program.matches, event)
    missed = outcome(program.misses, event)
    assert missed == (FQLEvaluationError if matched is FQLEvaluationError else not matched), expression


def test_a_generated_condition_has_a_generated_fast_pass() -> None:
    program = compile_expression("event = 'Order Completed'")
    assert program.misses.__code__.co_filename == "<fql condition>"
    assert (
        program.misses_code is not None and program.misses_code[0] == "not ((event.get('event') == 'Order Completed'))"
    )
    assert program.misses({"event": "Signed Up"}) is True
    assert program.misses({"event": "Order Completed"}) is False
    assert compile_expression("all").misses({}) is False


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    st.lists(_strategies.conditions() | st.sampled_from(_strategies.KNOWN), min_size=1, max_size=4), _strategies.events
)
def test_a_chain_that_writes_the_fast_passes_in_gives_what_the_filters_give(
    expressions: list[str], event: dict[str, Any]
) -> None:
    """A filter chain writes each filter's fast pass into its own code: what it makes of an
    event is what the filters' ``apply`` make of it one after the other (each filter drops its
    own marker key when its condition matches, so the result shows which ones did)."""
    try:
        filters = [
            (f"f{n}", FQLFilter(msgspec.convert({"if": e, "drop_properties": {"": [f"k{n}"]}}, FQLFilterConfig)))
            for n, e in enumerate(expressions)
        ]
    except (FQLSyntaxError, msgspec.ValidationError):
        assume(False)
    markers = {f"k{n}": n for n in range(len(filters))}
    message: dict[str, Any] | None = {**event, **markers, "messageId": "m1"}
    reason = None
    for _, fql_filter in filters:
        result = fql_filter.apply(copy.deepcopy(message))
        if isinstance(result, Verdict):
            message, reason = None, result.reason
            break
        message = result
    chained = run_filters(filters, {**event, **markers, "messageId": "m1"})
    assert (chained.message, chained.reason) == (message, reason), expressions


def drops(parents: list[str]) -> st.SearchStrategy[dict[str, list[str]]]:
    """``drop_properties`` tables: parents (numeric steps among them) and the keys dropped."""
    keys = st.lists(st.sampled_from(["a", "b", "c", "ip", "x", "0"]), min_size=1, max_size=3)
    return st.dictionaries(st.sampled_from(parents), keys, min_size=1, max_size=3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    _strategies.conditions() | st.sampled_from(_strategies.KNOWN),
    drops(["", "a", "a.b", "a.b.c", "context", "properties", "a.0"]),
    _strategies.events,
)
def test_a_generated_apply_does_what_the_filter_does(
    expression: str, drop: dict[str, list[str]], event: dict[str, Any]
) -> None:
    """A filter that only drops keys gets a generated apply (condition, parents and drops
    written in): it returns and changes what FQLFilter.apply does, and counts the same."""
    try:
        generated = FQLFilter(msgspec.convert({"if": expression, "drop_properties": drop}, FQLFilterConfig))
        reference = FQLFilter(msgspec.convert({"if": expression, "drop_properties": drop}, FQLFilterConfig))
    except (FQLSyntaxError, msgspec.ValidationError):
        assume(False)
    if "a.0" not in drop and generated.program.misses_code is not None:
        assert generated.apply.__code__.co_filename == "<fql filter>"
    mine, theirs = copy.deepcopy(event), copy.deepcopy(event)
    result, expected = generated.apply(mine), FQLFilter.apply(reference, theirs)
    assert (result is mine) == (expected is theirs) and result == expected
    assert mine == theirs
    assert generated.statistics() == reference.statistics()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(
    _strategies.conditions() | st.sampled_from(_strategies.KNOWN),
    drops(["", "a", "a.b", "context", "properties"]),
    _strategies.events,
)
def test_in_place_does_what_apply_does_or_nothing(
    expression: str, drop: dict[str, list[str]], event: dict[str, Any]
) -> None:
    """A filter that only drops keys applies itself in place in a chain's code: True where
    apply returns the very event (changed and counted the same), False with nothing done or
    counted where apply would not return it (the condition raised)."""
    try:
        in_place_filter = FQLFilter(msgspec.convert({"if": expression, "drop_properties": drop}, FQLFilterConfig))
        reference = FQLFilter(msgspec.convert({"if": expression, "drop_properties": drop}, FQLFilterConfig))
    except (FQLSyntaxError, msgspec.ValidationError):
        assume(False)
    in_place = in_place_filter.in_place()
    assume(in_place is not None)
    assert in_place is not None
    mine, theirs = copy.deepcopy(event), copy.deepcopy(event)
    applied, expected = in_place(mine), FQLFilter.apply(reference, theirs)
    if applied:
        assert expected is theirs and mine == theirs
        assert in_place_filter.statistics() == reference.statistics()
    else:
        assert expected is not theirs and mine == event
        assert in_place_filter.statistics() == {"matched": 0, "dropped": 0, "errors": 0}


def test_only_a_filter_that_drops_keys_applies_in_place() -> None:
    dropping = FQLFilterConfig(condition="event = 'Order Completed'", drop_properties={"context": ["ip"]})
    assert FQLFilter(dropping).in_place() is not None
    assert FQLFilter(FQLFilterConfig(condition="event = 'x'", drop=True)).in_place() is None
    message = {"messageId": "m1", "type": "track", "event": "Order Completed", "context": {"ip": "1.2.3.4"}}
    outcome = run_filters([("ip", FQLFilter(dropping))], message)  # a chain, as the core runs it
    assert outcome.message is message and message["context"] == {}


def test_a_condition_on_a_path_nested_past_what_python_compiles_in_a_chain_still_filters() -> None:
    # Each key of an inline path nests two parentheses; the chain writes the fast pass into
    # its own code in one more pair, past Python's 200: the chain calls the pass instead
    # (building it raised SyntaxError for a config validation accepted). Found by review.
    path = ".".join(["a"] + [f"k{i}" for i in range(98)])
    fql_filter = FQLFilter(FQLFilterConfig(condition=f"{path} = 'x' and b = 'y'", drop=True))
    message = {"messageId": "m1", "type": "track", "b": "z"}
    assert run_filters([("deep", fql_filter)], message).message is message  # a chain, as the core runs it
    deep: Any = "x"
    for key in reversed(path.split(".")):
        deep = {key: deep}
    dropped = {"messageId": "m2", "type": "track", "b": "y", **deep}
    assert run_filters([("deep", fql_filter)], dropped).message is None


def test_drop_properties_of_a_parent_nested_past_what_python_compiles_still_drops() -> None:
    # The generated apply writes each parent as nested guarded lookups: past Python's limit,
    # the filter keeps its written apply (constructing it raised SyntaxError). Found by review.
    keys = ["a"] + [f"k{i}" for i in range(100)]
    config = FQLFilterConfig(condition="type = 'track'", drop_properties={".".join(keys): ["secret"]})
    fql_filter = FQLFilter(config)
    leaf: dict[str, Any] = {"secret": 1, "kept": 2}
    message: dict[str, Any] = {"messageId": "m1", "type": "track"}
    node = message
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = leaf
    result = fql_filter.apply(message, FilterContext("s"))
    assert isinstance(result, dict)
    node = result
    for key in keys:
        node = node[key]
    assert node == {"kept": 2}
