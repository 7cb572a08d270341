"""FQL, table-driven: every operator and function, null handling, the documented examples."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from gateway_filter_fql import FQLEvaluationError, FQLSyntaxError, compile_expression
from gateway_filter_fql.text import _translate, compile_glob, kebabcase, literal_glob_code, snakecase, titlecase
from hypothesis import given, settings
from hypothesis import strategies as st

ERROR = "evaluation error"

# The example object of Segment's FQL reference (segment-api.md §5, public-api/fql.md).
DOC_EVENT = {
    "event": "Button Clicked",
    "type": "track",
    "context": {"library": {"name": "analytics.js", "version": "1.0"}},
    "properties": {"features": ["discounts", "dark-mode"]},
}

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u-42",
    "anonymousId": None,
    "context": {"library": {"name": "analytics-python", "version": "2.4.0"}, "ip": "10.0.0.1"},
    "properties": {
        "total": 42,
        "tax": 4.5,
        "coupon": "",
        "enabled": True,
        "disabled": False,
        "nothing": None,
        "title": "Über Ärger",
        "katakana": "ア",
        "tags": ["a", "b", 3, True, None],
        "products": [{"sku": "x1", "price": 10}, {"sku": "x2", "price": 20}],
        "dims": {"w": 1, "h": 2},
        "product 1": {"price": "19.99"},
        "a.b": "dotted",
        "in": "keyword-named",
        "true": "also",
        "url": "https://example.com/a/b/c",
        "glob": "ab*d",
    },
}

# (expression, expected result of matches() on EVENT: True, False or ERROR)
CONDITIONS: list[tuple[str, Any]] = [
    # paths: nested, missing, through a non-object, escapes, list index, keyword-like names
    ("type = 'track'", True),
    ("context.library.name = 'analytics-python'", True),
    ("context.library.missing = null", True),
    ("properties.total.deeper = null", True),
    ("nosuchfield = null", True),
    (r"properties.product\ 1.price = '19.99'", True),
    (r"properties.a\.b = 'dotted'", True),
    ("properties.products.1.sku = 'x2'", True),
    ("properties.products.7.sku = null", True),
    ("properties.in = 'keyword-named'", True),
    ("properties.true = 'also'", True),
    (r"\type = 'track'", True),
    ("context.library.version-x = null", True),
    # literals: both quote styles, escaped quotes, numbers in every form
    ('event = "Order Completed"', True),
    (r"'it\'s' = " + '"it\'s"', True),
    (r"'a\\b' = " + r'"a\\b"', True),
    ("properties.total = 42", True),
    ("properties.total = 42.0", True),
    ("properties.total = +42", True),
    ("properties.total = 4.2e1", True),
    ("properties.tax = 4.5", True),
    ("-1 < 0", True),
    # = and != are strict about types
    ("properties.total = '42'", False),
    ("properties.total != '42'", True),
    ("properties.enabled = true", True),
    ("properties.enabled = 1", False),
    ("properties.disabled = false", True),
    ("properties.disabled = 0", False),
    ("properties.disabled = null", False),
    ("properties.nothing = null", True),
    ("properties.nothing != null", False),
    ("anonymousId = null", True),
    ("properties.coupon = ''", True),
    ("properties.coupon = null", False),
    ("properties.tags = ['a', 'b', 3, true, null]", True),
    ("properties.tags = ['a', 'b', 3.0, true, null]", True),
    ("properties.tags = ['a', 'b', 3, 1, null]", False),
    ("properties.tags != ['b', 'a', 3, true, null]", True),
    ("properties.dims = properties.dims", True),
    ("properties.dims = properties.products.0", False),
    ("properties.total = properties.total", True),
    ("userId = anonymousId", False),
    ("null = null", True),
    # ordering: numbers only; anything else is false
    ("properties.total > 41", True),
    ("properties.total >= 42", True),
    ("properties.total < 42", False),
    ("properties.total <= 42", True),
    ("properties.tax < properties.total", True),
    ("41 < properties.total", True),
    ("42 >= properties.total", True),
    ("properties.total > '1'", False),
    ("event > 'A'", False),
    ("properties.nothing < 1", False),
    ("properties.nothing >= 0", False),
    ("properties.enabled > 0", False),
    ("missing > 0 or missing <= 0", False),
    # in
    ("type in ['track', 'identify']", True),
    ("type in ['page', 'screen']", False),
    ("properties.total in [1, 42]", True),
    ("properties.total in [1, 42.0]", True),
    ("properties.enabled in [1]", False),
    ("properties.enabled in [true]", True),
    ("properties.nothing in [null]", True),
    ("properties.nothing in ['null']", False),
    ("'a' in properties.tags", True),
    ("3 in properties.tags", True),
    ("true in properties.tags", True),
    ("null in properties.tags", True),
    ("'c' in properties.tags", False),
    ("'a' in properties.coupon", False),
    ("'a' in properties.missing", False),
    ("'x' in null", False),
    ("'a' in []", False),
    ("['a'] in [['a'], 'b']", True),
    ("properties.dims in [properties.dims]", True),
    ("type in [event, 'track']", True),
    ("!( type in ['track', 'identify'] )", False),
    # and / or / ! with null
    ("true and true", True),
    ("true and false", False),
    ("null and true", False),
    ("missing and true", False),
    ("null or true", True),
    ("null or false", False),
    ("missing or type = 'track'", True),
    ("!null", True),
    ("!missing", True),
    ("!true", False),
    ("!!true", True),
    ("properties.enabled", True),
    ("properties.disabled", False),
    ("properties.nothing", False),
    ("properties.enabled and properties.total > 1", True),
    # a value that is neither bool nor null where a condition is needed: fail closed
    ("event", ERROR),
    ("properties.total and true", ERROR),
    ("false or properties.tags", ERROR),
    ("!event", ERROR),
    ("false and event", False),  # short-circuit: the right side is never looked at
    ("true or event", True),
    # precedence: ! > comparisons > and > or
    ("type = 'track' or type = 'page' and event = 'nope'", True),
    ("(type = 'track' or type = 'page') and event = 'nope'", False),
    ("!properties.disabled = true", True),
    ("!true = false", True),
    ("false and false or true", True),
    ("false and (false or true)", False),
    # contains
    ("contains(event, 'Completed')", True),
    ("contains(event, 'completed')", False),
    ("contains(event, '')", True),
    ("contains(null, 'x')", False),
    ("contains(missing, 'x')", False),
    ("contains(properties.total, '4')", False),
    ("contains(event, properties.total)", False),
    # match: full-string glob, * crosses /, classes, escapes
    ("match('abcd', 'a*d')", True),
    ("match('', '*')", True),
    ("match('abc', 'ab')", False),
    ("match('abcd', 'a??d')", True),
    ("match('abcd', '*d')", True),
    (r"match('ab*d', 'ab\*d')", True),
    (r"match('abxd', 'ab\*d')", False),
    ("match('abCd', 'ab[cC]d')", True),
    ("match('abcd', 'ab[a-z]d')", True),
    ("match('abcd', 'ab[A-Z]d')", False),
    ("match('abcd', 'ab[^a-z]d')", False),
    ("match('ab1d', 'ab[^a-z]d')", True),
    ("match(properties.url, 'https://*')", True),
    ("match(properties.url, 'https://example.com/*/c')", True),
    ("match(properties.url, '*/b/*')", True),
    ("match(properties.title, '?ber *')", True),
    ("match(properties.glob, properties.glob)", True),
    ("match('abxyd', properties.glob)", True),
    ("match(properties.glob, 'ab\\*d')", True),
    ("match(null, '*')", False),
    ("match(missing, '*')", False),
    ("match(properties.total, '*')", False),
    ("match(event, null)", False),
    ("match(event, properties.coupon)", False),
    ("match(event, properties.url)", False),
    ("match('a\nb', 'a*b')", True),
    # length: bytes of a string, items of a list, 0 for null, not a number otherwise
    ("length(event) = 15", True),
    ("length(properties.katakana) = 3", True),
    ("length(properties.title) = 12", True),
    ("length(properties.tags) = 5", True),
    ("length(null) = 0", True),
    ("length(missing) = 0", True),
    ("length(userId) > 0", True),
    ("length(properties.dims) > 0", False),
    ("length(properties.dims) <= 0", False),
    ("length(properties.dims) = length(properties.dims)", False),
    ("typeof(length(properties.dims)) = 'number'", True),
    ("length(properties.total) > 0", False),
    # lowercase / uppercase
    ("lowercase(event) = 'order completed'", True),
    ("uppercase(event) = 'ORDER COMPLETED'", True),
    ("lowercase(properties.title) = 'über ärger'", True),
    ("lowercase(null) = null", True),
    ("lowercase(missing) = null", True),
    ("uppercase(null) = null", True),
    ("lowercase(properties.total) = null", True),
    # snakecase / kebabcase / titlecase
    ("snakecase(event) = 'order_completed'", True),
    ("snakecase('URLPath') = 'urlpath'", True),
    ("snakecase('iOSVersion') = 'i_osversion'", True),
    ("kebabcase(event) = 'order-completed'", True),
    ("kebabcase('test string') = 'test-string'", True),
    ("titlecase('test string') = 'Test String'", True),
    ("titlecase(lowercase(event)) = event", True),
    ("snakecase(null) = null", True),
    ("kebabcase(missing) = null", True),
    ("titlecase(null) = null", True),
    # typeof
    ("typeof(event) = 'string'", True),
    ("typeof(properties.total) = 'number'", True),
    ("typeof(properties.tax) = 'number'", True),
    ("typeof(properties.enabled) = 'bool'", True),
    ("typeof(properties.tags) = 'list'", True),
    ("typeof(properties.dims) = 'object'", True),
    ("typeof(null) = 'null'", True),
    ("typeof(missing) = 'null'", True),
    # bool / string / number
    ("bool(properties.enabled)", True),
    ("bool(properties.disabled)", False),
    ("bool(null)", False),
    ("bool(missing)", False),
    ("bool('true')", True),
    ("bool('1')", True),
    ("bool('false')", False),
    ("bool('yes')", False),
    ("bool(properties.total)", True),
    ("bool(0)", False),
    ("bool(properties.tags)", True),
    ("bool([])", False),
    ("string(properties.total) = '42'", True),
    ("string(properties.tax) = '4.5'", True),
    ("string(42.0) = '42'", True),
    ("string(true) = 'true'", True),
    ("string(null) = 'null'", True),
    ("string(event) = event", True),
    ('string(properties.tags) = \'["a","b",3,true,null]\'', True),
    ("number('42') = 42", True),
    ("number('4.5e1') > 44", True),
    ("number(properties.total) = 42", True),
    ("number('abc') = null", True),
    ("number(' 42') = null", True),
    ("number(null) = null", True),
    ("number(true) = null", True),
    ("number(string(properties.tax)) = properties.tax", True),
    # the match-all condition
    ("all", True),
    ("  all  ", True),
]


@pytest.mark.parametrize(("expression", "expected"), CONDITIONS, ids=[c[0] for c in CONDITIONS])
def test_condition(expression: str, expected: Any) -> None:
    program = compile_expression(expression)
    if expected == ERROR:
        with pytest.raises(FQLEvaluationError):
            program.matches(EVENT)
    else:
        assert program.matches(EVENT) is expected


DOC_EXAMPLES = [
    ("event = 'Button Clicked'", True),
    ("event = 'Screen Tapped'", False),
    ("context.path.path = '/login'", False),
    ("type = 'identify' or type = 'track'", True),
    ("event = 'Button Clicked' and type = 'track'", True),
    ("match( context.library.version, '1.*' )", True),
    ("match( context.library.version, '2.*' )", False),
    ("type = 'track' and ( event = 'Click' or match( event, 'Button *' ) )", True),
    ("!contains( context.library.name, 'js' )", False),
    ("'dark-mode' in properties.features", True),
    ("'blink' in properties.features", False),
    ("!( type in ['track', 'identify'] )", False),
    (
        "( type = 'track' or type = 'identify' ) and ( properties.enabled or match( traits.email, '*@company.com' ) )",
        False,
    ),
]


@pytest.mark.parametrize(("expression", "expected"), DOC_EXAMPLES, ids=[c[0] for c in DOC_EXAMPLES])
def test_documented_examples(expression: str, expected: bool) -> None:
    assert compile_expression(expression).matches(DOC_EVENT) is expected


# (expression, expected value of evaluate() on EVENT): functions' return values exactly
VALUES: list[tuple[str, Any]] = [
    ("lowercase(null)", None),
    ("length(null)", 0),
    ("typeof(null)", "null"),
    ("contains(null, 'x')", False),
    ("match(null, '*')", False),
    ("length('ア')", 3),
    ("length('a')", 1),
    ("length(properties.tags)", 5),
    ("uppercase('straße')", "STRASSE"),
    ("snakecase('sample text')", "sample_text"),
    ("titlecase('hELLO wORLD')", "HELLO WORLD"),
    ("string(1.5e-7)", "1.5e-7"),
    ("string(properties.dims)", '{"h":2,"w":1}'),
    ("number('1.50')", 1.5),
    ("properties.products.0", {"sku": "x1", "price": 10}),
    ("[1, 'a', null, [true]]", [1, "a", None, [True]]),
    ("properties.missing", None),
    ("'x'", "x"),
    ("-2.5", -2.5),
]


@pytest.mark.parametrize(("expression", "expected"), VALUES, ids=[c[0] for c in VALUES])
def test_value(expression: str, expected: Any) -> None:
    assert compile_expression(expression, condition=False).evaluate(EVENT) == expected


def test_length_of_an_object_is_not_a_number() -> None:
    assert math.isnan(compile_expression("length(properties.dims)", condition=False).evaluate(EVENT))


def test_a_malformed_pattern_from_the_event_is_an_evaluation_error() -> None:
    program = compile_expression("match(event, properties.pattern)")
    assert program.matches({"event": "a", "properties": {"pattern": "*"}}) is True
    with pytest.raises(FQLEvaluationError):
        program.matches({"event": "a", "properties": {"pattern": "[a"}})


def test_each_expression_is_compiled_once() -> None:
    assert compile_expression("type = 'track'") is compile_expression("type = 'track'")


# segmentio/go-snakecase's own test table, plus the acronym cases of segment-api.md §11.
SNAKE = [
    ("sample text", "sample_text"),
    ("sample-text", "sample_text"),
    ("sample_text", "sample_text"),
    ("sample___text", "sample_text"),
    ("sampleText", "sample_text"),
    ("inviteYourCustomersAddInvites", "invite_your_customers_add_invites"),
    ("sample 2 Text", "sample_2_text"),
    ("   sample   2    Text   ", "sample_2_text"),
    ("   $#$sample   2    Text   ", "sample_2_text"),
    ("SAMPLE 2 TEXT", "sample_2_text"),
    ("___$$Base64Encode", "base64_encode"),
    ("FOO:BAR$BAZ", "foo_bar_baz"),
    ("FOO#BAR#BAZ", "foo_bar_baz"),
    ("something.com", "something_com"),
    ("$something%", "something"),
    ("•¶§ƒ˚foo˙∆˚¬", "foo"),
    ("URLPath", "urlpath"),
    ("iOSVersion", "i_osversion"),
    ("", ""),
]


@pytest.mark.parametrize(("source", "expected"), SNAKE)
def test_snakecase(source: str, expected: str) -> None:
    assert snakecase(source) == expected
    assert kebabcase(source) == expected.replace("_", "-")


def test_titlecase_is_go_strings_title() -> None:
    assert titlecase("test string") == "Test String"
    assert titlecase("o'neil is_here x-ray") == "O'Neil Is_here X-Ray"
    assert titlecase("élan vital") == "Élan Vital"


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("a*", "ab/c", True),
        ("*", "", True),
        ("**", "x/y", True),
        ("*a*a*a*a*b", "a" * 200, False),
        ("*x*", "a" * 50 + "x", True),
        ("[]a]", None, "bad"),
        ("[a-", None, "bad"),
        ("[^]", None, "bad"),
        ("a\\", None, "bad"),
        ("[z-a]x", "bx", False),
        ("[^z-a]x", "bx", True),
        ("[\\]]", "]", True),
        ("[a\\-z]", "-", True),
        ("?", "ア", True),
        ("a]", "a]", True),
    ],
)
def test_glob(pattern: str, text: str | None, expected: Any) -> None:
    if expected == "bad":
        with pytest.raises(ValueError):
            compile_glob(pattern)
    else:
        assert compile_glob(pattern)(text) is expected


@pytest.mark.parametrize(
    ("expression", "column", "fragment"),
    [
        ("type = ", 8, "unexpected end of expression"),
        ("type == 'track'", 7, "unexpected '='"),
        ('userId = oops"', 14, "unterminated string"),
        ("type = 'track", 8, "unterminated string"),
        ("a = b = c", 7, "unexpected '='"),
        ("type = 'track' and", 19, "unexpected end"),
        ("properties.", 11, "unexpected character '.'"),
        ("type # 'x'", 6, "unexpected character '#'"),
        ("(type = 'a'", 12, "expected"),
        ("lenght(userId) > 0", 1, "unknown function 'lenght'"),
        ("x and contains(event)", 7, "contains() takes 2 arguments, got 1"),
        ("'track'", 1, "must be a condition"),
        ("type = 'a' or 42", 15, "an operand of 'or' must be a condition"),
        ("!lowercase('A')", 2, "the operand of '!' must be a condition"),
        ("length(x)", 1, "must be a condition"),
        ("type in 'track'", 9, "right side of 'in' must be a list"),
        ("match(event, 'ab[')", 14, "bad glob pattern"),
        ("match(event, 42)", 14, "must be a string"),
        ("", 1, "empty expression"),
        ("x = 1e999", 5, "out of range"),
        ("!" * 100 + "x", 66, "nests deeper"),
    ],
)
def test_syntax_errors_name_the_column(expression: str, column: int, fragment: str) -> None:
    with pytest.raises(FQLSyntaxError) as caught:
        compile_expression(expression)
    assert caught.value.column == column, str(caught.value)
    assert f"column {column}" in str(caught.value)
    assert fragment in str(caught.value)


def test_syntax_error_on_a_later_line_names_line_and_column() -> None:
    with pytest.raises(FQLSyntaxError, match="line 2, column 5"):
        compile_expression("type = 'track'\nand #")


@settings(max_examples=500, deadline=None)
@given(pattern=st.text(alphabet="ab*?\n", max_size=6), text=st.text(alphabet="ab*?\n", max_size=8))
def test_globs_of_literals_and_stars_answer_as_the_regex_does(pattern: str, text: str) -> None:
    """``test*``, ``*x*``, ``a*b`` and literals are answered with string methods: always what the
    pattern's regex answers."""
    regex = re.compile(_translate(pattern), re.DOTALL)
    assert compile_glob(pattern)(text) is (regex.fullmatch(text) is not None), (pattern, text)


@settings(max_examples=500, deadline=None)
@given(pattern=st.text(alphabet="ab*?'\n", max_size=6), text=st.text(alphabet="ab*?'\n", max_size=8))
def test_the_code_of_a_glob_of_literals_answers_as_the_regex_does(pattern: str, text: str) -> None:
    """What a generated condition writes for such a glob (string methods, no call of the
    predicate) answers what the pattern's regex answers; other patterns get no code."""
    code = literal_glob_code(pattern, "text")
    if code is None:
        assert any(char in pattern for char in "?[\\") or pattern.strip("*").count("*")
        return
    regex = re.compile(_translate(pattern), re.DOTALL)
    assert eval(code, {"text": text}) is (regex.fullmatch(text) is not None), (pattern, text)
