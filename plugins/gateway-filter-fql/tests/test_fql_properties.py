"""Property tests: a compiled expression never raises on arbitrary JSON events (other than the
designed FQLEvaluationError), and the filter never raises at all (it fails closed)."""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path
from typing import Any

import msgspec
from gateway_filter_fql import FQLEvaluationError, FQLFilter, FQLFilterConfig, FQLSyntaxError, compile_expression
from gateway_filter_fql.text import snakecase
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st


def _language_tables() -> list[tuple[str, Any]]:
    """The expressions of the table-driven test (test modules cannot import each other here)."""
    path = Path(__file__).with_name("test_fql_language.py")
    spec = importlib.util.spec_from_file_location("_fql_language_cases", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CONDITIONS + module.DOC_EXAMPLES


KEYS = ["a", "b", "c", "0", "1", "x", "in", "properties", "context", "userId", "type"]
PATHS = [
    "a",
    "b",
    "a.b",
    "a.0",
    "a.b.c",
    "a.0.b",
    "properties.x",
    "properties.a.b.c.x",
    "context.0.1",
    "userId",
    "type",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.just(10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "a", "track", "ア", "a*b", "[", "\\", "true", "1", "42", "1e3", "a/b"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=25,
)
events = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), json_values, max_size=6)


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


literals = (
    st.sampled_from(["true", "false", "null", "0", "-1", "2.5", "1e3", "'track'", "'*'", "'a*'", "'[a-z]*'"])
    | st.text(max_size=8).map(quote)
    | st.integers(-1000, 1000).map(str)
)
paths = st.sampled_from(PATHS)
FUNCTIONS_1 = [
    "length",
    "lowercase",
    "uppercase",
    "snakecase",
    "kebabcase",
    "titlecase",
    "typeof",
    "bool",
    "string",
    "number",
]


def values(depth: int = 2) -> st.SearchStrategy[str]:
    base = paths | literals
    if depth == 0:
        return base
    inner = values(depth - 1)
    return (
        base
        | st.tuples(st.sampled_from(FUNCTIONS_1), inner).map(lambda t: f"{t[0]}({t[1]})")
        | st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
    )


def conditions(depth: int = 2) -> st.SearchStrategy[str]:
    value = values(1)
    base = (
        paths
        | st.sampled_from(["true", "false", "null"])
        | st.tuples(value, st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), value).map(" ".join)
        | st.tuples(value, paths | st.lists(value, max_size=3).map(lambda i: "[" + ", ".join(i) + "]")).map(
            lambda t: f"{t[0]} in {t[1]}"
        )
        | st.tuples(st.sampled_from(["contains", "match"]), value, value).map(lambda t: f"{t[0]}({t[1]}, {t[2]})")
        | st.tuples(value).map(lambda t: f"bool({t[0]})")
    )
    if depth == 0:
        return base
    inner = conditions(depth - 1)
    return (
        base
        | inner.map(lambda c: f"!({c})")
        | st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(lambda t: f"({t[0]}) {t[1]} ({t[2]})")
    )


KNOWN = sorted(
    {expression for expression, _ in _language_tables()}
    | {
        "properties.total > 100 and context.library.name = 'analytics.js'",
        "userId in ['a', 'b'] or length(properties.items) > 3",
        "match(context.page.path, '/checkout/*') and !contains(lowercase(event), 'test')",
        "typeof(properties.revenue) = 'number' and number(string(properties.revenue)) >= 0",
        "snakecase(event) = kebabcase(event) or titlecase(event) = event",
    }
)


def check(program_text: str, event: dict[str, Any]) -> None:
    program = compile_expression(program_text)
    try:
        result = program.matches(event)
    except FQLEvaluationError:
        pass
    else:
        assert type(result) is bool
    with contextlib.suppress(FQLEvaluationError):
        program.evaluate(event)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KNOWN), events)
def test_known_expressions_never_raise_on_arbitrary_events(expression: str, event: dict[str, Any]) -> None:
    check(expression, event)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(conditions(), events)
def test_generated_expressions_never_raise_on_arbitrary_events(expression: str, event: dict[str, Any]) -> None:
    try:
        compile_expression(expression)
    except FQLSyntaxError as error:
        # Only the compile-time checks (types, literal glob patterns) may refuse a generated
        # expression, never the grammar.
        assert "must be" in error.reason or "bad glob pattern" in error.reason, (expression, str(error))
        assume(False)
    check(expression, event)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KNOWN), events)
def test_the_filter_never_raises_and_fails_closed(expression: str, event: dict[str, Any]) -> None:
    config = msgspec.convert(
        {
            "if": expression,
            "drop_properties": {"": ["b"], "a": ["x"], "a.0": ["1"]},
            "sample": {"percent": 0.5, "path": "a"},
        },
        FQLFilterConfig,
    )
    f = FQLFilter(config)
    out = f.process(event)
    assert out is None or out is event
    assert f.matched + f.errors <= 1


@given(st.text(max_size=30))
def test_string_literals_round_trip(text: str) -> None:
    assert compile_expression(quote(text), condition=False).evaluate({}) == text


@given(json_values)
def test_a_value_equals_itself_and_is_in_a_list_of_itself(value: Any) -> None:
    event = {"a": value, "b": [0, value]}
    assert compile_expression("a = a").matches(event) is True
    assert compile_expression("a != a").matches(event) is False
    assert compile_expression("a in b").matches(event) is True


def go_snakecase_reference(s: str) -> str:
    """A line-by-line port of segmentio/go-snakecase's Snakecase, to check the regex version."""

    def lower(c: str) -> bool:
        return "a" <= c <= "z"

    def upper(c: str) -> bool:
        return "A" <= c <= "Z"

    def digit(c: str) -> bool:
        return "0" <= c <= "9"

    n = len(s)
    idx = 0
    while idx < n and (
        lower(s[idx]) or digit(s[idx]) or (s[idx] == "_" and idx < n - 1 and (lower(s[idx + 1]) or digit(s[idx + 1])))
    ):
        idx += 1
    if idx == n:
        return s
    if idx > 0 and digit(s[idx - 1]):
        idx -= 1
    b = s[:idx]
    while idx < n:
        if not (lower(s[idx]) or upper(s[idx]) or digit(s[idx])):
            idx += 1
            continue
        if b:
            b += "_"
        while idx < n and (upper(s[idx]) or digit(s[idx])):
            b += s[idx].lower()
            idx += 1
        while idx < n and (lower(s[idx]) or digit(s[idx])):
            b += s[idx]
            idx += 1
    return b


@settings(max_examples=500)
@given(st.text(alphabet=st.sampled_from("aZb9_ -.Xy0é$"), max_size=20) | st.text(max_size=20))
def test_snakecase_matches_the_go_algorithm(text: str) -> None:
    assert snakecase(text) == go_snakecase_reference(text)
