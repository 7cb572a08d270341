"""FQL, Segment's Filter Query Language: a lark grammar and a compiler to Python closures.

An expression is parsed once (LALR, so a syntax error names its column) and compiled into a tree
of closures, each taking the event and returning a value; constant sub-expressions are folded,
and the common shapes (``path = 'literal'``, ``path in [literals]``, numeric comparisons against
a literal, ``match`` with a literal pattern) get specialised closures. Evaluating never parses.

A condition is then also written out as the source of one Python function (``Program.matches``):
the common shapes above, paths of up to two keys and ``and``/``or``/``!`` become inline Python
(each node's ``code``); any other node is a call to its closure. It computes exactly what the
closures compute, in the same order, without a Python call per node; the closures stay the
reference (``Program.evaluate``) and the fallback when the source cannot be compiled.

Semantics (see the plugin README for the full table):

* A missing field, or a path through something that is not an object, is ``null``.
* ``=`` / ``!=`` are strict: same type and value (``1 = 1.0``; ``'1' != 1``; lists and objects
  element by element, object key order significant).
* ``<`` ``<=`` ``>`` ``>=`` are false unless both sides are numbers.
* ``in``: membership with ``=`` in a list; false when the right side is not a list.
* ``and`` / ``or`` / ``!`` take bools; ``null`` counts as false. Any other value where a condition
  is needed is an evaluation error (:class:`FQLEvaluationError`): the filter drops the event.
* Precedence: ``!`` binds tightest, then comparisons and ``in``, then ``and``, then ``or``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from gateway_filter_fql import text
from gateway_filter_fql.values import NUMBER_TYPES, format_number, go_json, strict_equal, type_name

if TYPE_CHECKING:  # lark is imported at the first expression compiled (issue 19: every start paid ~50 ms)
    from lark import Lark, Token, Tree

__all__ = [
    "FQLEvaluationError",
    "FQLSyntaxError",
    "Program",
    "compile_expression",
    "make_getter",
    "object_path_code",
    "parse_path",
]

Event = dict[str, Any]
Evaluator = Callable[[Event], Any]
#: Names a node's ``code`` uses, and their values.
Bindings = tuple[tuple[str, Any], ...]

#: Deeper nesting is refused at compile time (it would only recurse deeper at run time).
MAX_DEPTH = 64

_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: comparison (_AND comparison)*
?comparison: unary
    | unary COMPARE unary -> compare
    | unary _IN unary -> membership
?unary: BANG unary -> negate
    | primary
?primary: PATH -> path
    | STRING -> string
    | NUMBER -> number
    | TRUE -> true
    | FALSE -> false
    | NULL -> null
    | LSQB [or_expr (_COMMA or_expr)*] _RSQB -> list
    | PATH _LPAR [or_expr (_COMMA or_expr)*] _RPAR -> call
    | _LPAR or_expr _RPAR

_OR: "or"
_AND: "and"
_IN: "in"
TRUE: "true"
FALSE: "false"
NULL: "null"
BANG: "!"
COMPARE: /!=|<=|>=|=|<|>/
LSQB: "["
_RSQB: "]"
_LPAR: "("
_RPAR: ")"
_COMMA: ","
// A path: dot-separated names of [A-Za-z0-9_-]; a backslash escapes any character. The first
// name starts with a letter, `_` or an escape (so numbers and keywords stay what they are).
PATH: /(?:[A-Za-z_]|\\.)(?:[A-Za-z0-9_\-]|\\.)*(?:\.(?:[A-Za-z0-9_\-]|\\.)+)*/
STRING: /"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/s
NUMBER: /[+-]?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/
%ignore /[ \t\r\n]+/
"""


@lru_cache(maxsize=1)
def _parser() -> Lark:
    """The LALR parser, built at the first expression compiled: building it cost every gateway
    start 30-50 ms of CPU, with FQL filters configured or not (issue 19)."""
    from lark import Lark

    return Lark(_GRAMMAR, parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=False)


_TERMINALS = {
    "PATH": "a field path",
    "STRING": "a string",
    "NUMBER": "a number",
    "TRUE": "true",
    "FALSE": "false",
    "NULL": "null",
    "BANG": "'!'",
    "COMPARE": "a comparison (= != < <= > >=)",
    "LSQB": "'['",
    "_RSQB": "']'",
    "_LPAR": "'('",
    "_RPAR": "')'",
    "_COMMA": "','",
    "_OR": "'or'",
    "_AND": "'and'",
    "_IN": "'in'",
    "$END": "the end",
}

_ANY = frozenset(("string", "number", "bool", "null", "list", "object"))
_BOOL = frozenset(("bool",))
_CONDITION = frozenset(("bool", "null"))
_NO_CONSTANT: Any = object()


class FQLSyntaxError(ValueError):
    """The expression is not valid FQL. ``str()`` names the column (1-based)."""

    def __init__(self, reason: str, *, line: int, column: int) -> None:
        self.reason = reason
        self.line = line
        self.column = column
        where = f"line {line}, column {column}" if line > 1 else f"column {column}"
        super().__init__(f"FQL syntax error at {where}: {reason}")


class FQLEvaluationError(Exception):
    """The expression cannot be evaluated on this event (a non-bool where a condition is needed,
    a malformed glob pattern taken from the event). Filters drop such events."""


@dataclass(frozen=True, slots=True)
class _Node:
    fn: Evaluator
    types: frozenset[str]  # the FQL types it can evaluate to
    const: Any = _NO_CONSTANT  # its value, when it does not depend on the event
    line: int = 1
    column: int = 1
    keys: tuple[str, ...] | None = None  # the path, for a path node
    code: str | None = None  # a Python expression on ``event`` computing what ``fn`` computes
    bindings: Bindings = ()  # the names ``code`` uses

    @property
    def is_const(self) -> bool:
        return self.const is not _NO_CONSTANT


# --- Python source for the conditions ----------------------------------------------------------

_fresh_numbers = itertools.count()


def _fresh(prefix: str) -> str:
    """A name no other node uses (locals for ``:=`` and globals for bound values alike)."""
    return f"{prefix}{next(_fresh_numbers)}"


def _literal(value: Any) -> tuple[str, Bindings]:
    """Source for a constant: a literal when repr() gives one, else a bound name."""
    kind = type(value)
    if kind is str or kind is bool or value is None or (kind is int and abs(value) < 2**63):
        return repr(value), ()
    name = _fresh("_k")
    return name, ((name, value),)


def _code(node: _Node) -> tuple[str, Bindings]:
    """``node`` as a Python expression on ``event``: its code, its constant, or a call to its closure."""
    if node.code is not None:
        return node.code, node.bindings
    if node.is_const:
        return _literal(node.const)
    name = _fresh("_f")
    return f"{name}({_EVENT})", ((name, node.fn),)


def _truth_code(node: _Node, check: Evaluator) -> tuple[str, Bindings]:
    """Source for ``check``, the :func:`_truth` evaluator of ``node``."""
    if node.types == _BOOL:  # _truth returned node.fn itself
        return _code(node)
    name = _fresh("_f")
    return f"{name}({_EVENT})", ((name, check),)


def _bound(fn: Any) -> tuple[str, Bindings]:
    name = _fresh("_f")
    return name, ((name, fn),)


def object_path_code(keys: Sequence[str]) -> str | None:
    """Source reading the path ``keys`` from ``event`` as :func:`make_getter` does (None past a
    step that is not an object; no keys: the event itself), or None when a step after the
    first is numeric (it may index a list)."""
    if not keys:
        return _EVENT
    if any(key.isascii() and key.isdigit() for key in keys[1:]):
        return None
    code = f"{_EVENT}.get({keys[0]!r})"
    for key in keys[1:]:
        parent = _fresh("_v")
        code = f"({parent}.get({key!r}) if type({parent} := {code}) is dict else None)"
    return code


def _path_code(keys: tuple[str, ...], getter: Evaluator) -> tuple[str, Bindings]:
    """Paths of object keys inline (:func:`object_path_code`); a path with a numeric step calls
    the getter."""
    code = object_path_code(keys)
    if code is None:
        name, bindings = _bound(getter)
        return f"{name}({_EVENT})", bindings
    return code, ()


_EVENT = "event"
#: Python's parser refuses more than 200 nested parentheses. Counting all of them is a cheap,
#: safe bound: a condition with more keeps its closures (a SyntaxError would too).
_MAX_CODE_PARENTHESES = 600


def _function(code: str, bindings: Bindings, *, negate: bool = False) -> Callable[[Event], bool] | None:
    """``def matches(event): return <code>`` (``return not (<code>)`` when ``negate``), or None
    when Python will not compile it."""
    if code.count("(") > _MAX_CODE_PARENTHESES:
        return None
    namespace = _namespace(bindings)
    body = f"not ({code})" if negate else code
    try:
        # Only our own code: values from the expression enter as repr() of str/bool/None/int or as
        # bound names.
        exec(compile(f"def matches({_EVENT}):\n    return {body}\n", "<fql condition>", "exec"), namespace)
    except (SyntaxError, RecursionError):  # pragma: no cover - nesting beyond the parser
        return None
    matches: Callable[[Event], bool] = namespace["matches"]
    return matches


def _namespace(bindings: Bindings) -> dict[str, Any]:
    """The names generated code reads: its bound values, and the number types."""
    return {"_NUMBER_TYPES": NUMBER_TYPES, **dict(bindings)}


class Program:
    """A compiled FQL expression.

    Attributes:
        source: The expression text.
        evaluate: ``evaluate(event)`` returns the value of the expression (any JSON value).
        matches: ``matches(event)`` returns True only when the expression is true; ``null`` and
            false give False. Raises :class:`FQLEvaluationError` when the result, or an operand
            of ``and``/``or``/``!``, is neither a bool nor null.
        misses: ``not matches(event)``, in one call (a filter's fast pass: most events miss).
        misses_code: What ``misses`` returns as one Python expression of ``event`` and the
            names it uses (a filter chain writes it into its own code), or None when the
            condition is not compiled to code.
    """

    __slots__ = ("evaluate", "matches", "misses", "misses_code", "source")

    def __init__(
        self,
        source: str,
        evaluate: Evaluator,
        matches: Callable[[Event], bool],
        misses: Callable[[Event], bool] | None = None,
        misses_code: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        self.source = source
        self.evaluate = evaluate
        self.matches = matches
        self.misses = misses if misses is not None else (lambda event: not matches(event))
        self.misses_code = misses_code

    def __repr__(self) -> str:
        return f"Program({self.source!r})"


# --- paths -------------------------------------------------------------------------------------


def _token(tree: Tree, index: int = 0) -> Token:
    from lark import Token

    child = tree.children[index]
    assert isinstance(child, Token)
    return child


def _split_path(raw: str) -> tuple[str, ...]:
    """``a.b\\.c`` -> ``("a", "b.c")``: unescape a PATH token."""
    keys = []
    current: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\":
            current.append(raw[i + 1])
            i += 2
            continue
        if char == ".":
            keys.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    keys.append("".join(current))
    return tuple(keys)


def parse_path(path: str) -> tuple[str, ...]:
    """Parse an FQL field path (``context.library.version``, ``properties.product\\ 1.price``).

    Raises:
        FQLSyntaxError: it is not a path.
    """
    tree = _parse(path)
    if tree.data != "path":
        raise FQLSyntaxError("expected a field path", line=1, column=1)
    return _split_path(_token(tree).value)


def _list_step(value: Any, index: int | None) -> Any:
    if index is not None and type(value) is list and index < len(value):
        return value[index]
    return None


def make_getter(keys: Sequence[str]) -> Evaluator:
    """A function returning the value at ``keys`` in an event, or None when it is missing or a
    step is not an object. A numeric key also indexes a list (``products.0.price``)."""
    steps = tuple((key, int(key) if key.isascii() and key.isdigit() else None) for key in keys)
    if len(steps) == 1:
        key = steps[0][0]

        def get1(event: Event) -> Any:
            return event.get(key)

        return get1
    if len(steps) == 2:
        (k0, _), (k1, i1) = steps

        def get2(event: Event) -> Any:
            value = event.get(k0)
            if type(value) is dict:
                return value.get(k1)
            return _list_step(value, i1)

        return get2
    if len(steps) == 3:
        (k0, _), (k1, i1), (k2, i2) = steps

        def get3(event: Event) -> Any:
            value = event.get(k0)
            value = value.get(k1) if type(value) is dict else _list_step(value, i1)
            if type(value) is dict:
                return value.get(k2)
            return _list_step(value, i2)

        return get3
    first = steps[0][0]
    rest = steps[1:]

    def get_n(event: Event) -> Any:
        value = event.get(first)
        for key, index in rest:
            if type(value) is dict:
                value = value.get(key)
            elif index is not None and type(value) is list and index < len(value):
                value = value[index]
            else:
                return None
        return value

    return get_n


# --- functions ---------------------------------------------------------------------------------


def _fn_length(value: Any) -> int | float:
    kind = type(value)
    if kind is str:
        return len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    if kind is list:
        return len(value)
    if value is None:
        return 0
    return math.nan  # objects, numbers, bools: "not a number"; every comparison with it is false


def _string_function(convert: Callable[[str], str], *, cached: bool = False) -> Callable[[Any], str | None]:
    """``convert`` for strings, null for anything else. ``cached``: remember the results for
    short strings (event names and the like repeat endlessly; the Python case conversions are
    slow next to a dict lookup)."""
    if cached:
        remembered = lru_cache(maxsize=4096)(convert)

        def apply_cached(value: Any) -> str | None:
            if type(value) is not str:
                return None
            return remembered(value) if len(value) <= 256 else convert(value)

        return apply_cached

    def apply(value: Any) -> str | None:
        return convert(value) if type(value) is str else None

    return apply


_TRUE_STRINGS = frozenset(("1", "t", "T", "true", "TRUE", "True"))


def _fn_bool(value: Any) -> bool:
    kind = type(value)
    if kind is bool:
        return value
    if kind is str:
        return value in _TRUE_STRINGS  # Go's strconv.ParseBool; anything else is false
    if kind is int or kind is float:
        return value != 0 and value == value
    if kind is list or kind is dict:
        return len(value) > 0
    return False


def _fn_string(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return format_number(value)
    return go_json(value).decode()


_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def _fn_number(value: Any) -> int | float | None:
    kind = type(value)
    if kind is int or kind is float:
        return value
    if kind is str and _NUMBER_TEXT.fullmatch(value):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _fn_contains(s: Any, sub: Any) -> bool:
    return type(s) is str and type(sub) is str and sub in s


def _fn_match(s: Any, pattern: Any) -> bool:
    if type(s) is not str or type(pattern) is not str:
        return False
    try:
        matcher = text.compile_glob(pattern)
    except text.GlobError as error:
        raise FQLEvaluationError(f"match: bad pattern {pattern!r}: {error}") from None
    return matcher(s)


@dataclass(frozen=True, slots=True)
class _Function:
    arity: int
    impl: Callable[..., Any]
    types: frozenset[str]


_FUNCTIONS = {
    "contains": _Function(2, _fn_contains, _BOOL),
    "match": _Function(2, _fn_match, _BOOL),
    "length": _Function(1, _fn_length, frozenset(("number",))),
    "lowercase": _Function(1, _string_function(str.lower), frozenset(("string", "null"))),
    "uppercase": _Function(1, _string_function(str.upper), frozenset(("string", "null"))),
    "snakecase": _Function(1, _string_function(text.snakecase, cached=True), frozenset(("string", "null"))),
    "kebabcase": _Function(1, _string_function(text.kebabcase, cached=True), frozenset(("string", "null"))),
    "titlecase": _Function(1, _string_function(text.titlecase, cached=True), frozenset(("string", "null"))),
    "typeof": _Function(1, type_name, frozenset(("string",))),
    "bool": _Function(1, _fn_bool, _BOOL),
    "string": _Function(1, _fn_string, frozenset(("string",))),
    "number": _Function(1, _fn_number, frozenset(("number", "null"))),
}


# --- the compiler ------------------------------------------------------------------------------


def _unquote(raw: str) -> str:
    """A string literal's value: ``\\\\`` is a backslash and ``\\'`` / ``\\"`` a quote; any other
    backslash is kept, so glob escapes such as ``'ab\\*d'`` reach ``match`` unchanged."""
    body = raw[1:-1]
    if "\\" not in body:
        return body
    out = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body) and body[i + 1] in "\\'\"":
            out.append(body[i + 1])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def _position(item: Tree | Token) -> tuple[int, int]:
    from lark import Token, Tree

    if isinstance(item, Token):
        return item.line or 1, item.column or 1
    if not item.meta.empty:
        return item.meta.line, item.meta.column
    for child in item.children:
        if isinstance(child, Tree | Token):
            return _position(child)
    return 1, 1


def _error(node: _Node | Tree | Token, reason: str) -> FQLSyntaxError:
    if isinstance(node, _Node):
        line, column = node.line, node.column
    else:
        line, column = _position(node)
    return FQLSyntaxError(reason, line=line, column=column)


def _describe(types: frozenset[str]) -> str:
    return " or ".join(sorted(types))


def _constant(value: Any, types: frozenset[str], at: Tree | Token) -> _Node:
    line, column = _position(at)
    return _Node(lambda event: value, types, value, line, column)


def _folded(
    fn: Evaluator,
    types: frozenset[str],
    children: Sequence[_Node],
    at: Tree | Token,
    source: tuple[str, Bindings] | None = None,
) -> _Node:
    """A node; evaluated now when every child is constant. ``source``: its code, if any."""
    line, column = _position(at)
    if children and all(child.is_const for child in children):
        try:
            value = fn({})
        except FQLEvaluationError as error:
            raise FQLSyntaxError(str(error), line=line, column=column) from None
        return _Node(lambda event: value, types, value, line, column)
    code, bindings = source if source is not None else (None, ())
    return _Node(fn, types, _NO_CONSTANT, line, column, None, code, bindings)


def _truth(node: _Node, role: str) -> Evaluator:
    """An evaluator of ``node`` as a condition: True, False (for false and null), or an
    evaluation error for any other value. Refuses, at compile time, a node that can never be a
    bool or null."""
    if not node.types & _CONDITION:
        raise _error(node, f"{role} must be a condition (a bool), not a {_describe(node.types)}")
    if node.is_const and node.const is not None and type(node.const) is not bool:
        raise _error(node, f"{role} must be a condition (a bool), not a {type_name(node.const)}")
    fn = node.fn
    if node.types == _BOOL:
        return fn

    def truth(event: Event) -> bool:
        value = fn(event)
        if value is True:
            return True
        if value is False or value is None:
            return False
        raise FQLEvaluationError(f"{role} is a {type_name(value)}, not a bool")

    return truth


def _compile_logic(tree: Tree, depth: int, is_and: bool) -> _Node:
    role = "an operand of 'and'" if is_and else "an operand of 'or'"
    nodes = [_compile(child, depth + 1) for child in tree.children]
    checks = [_truth(node, role) for node in nodes]
    if all(node.is_const for node in nodes):
        return _folded(_logic(checks, is_and), _BOOL, nodes, tree)
    # Drop constant operands that cannot change the result; a decisive one decides it all.
    kept = []
    codes = []
    for node, check in zip(nodes, checks, strict=True):
        if node.is_const:
            value = check({})
            if value is not is_and:  # false in 'and', true in 'or'
                return _constant(value, _BOOL, tree)
            continue
        kept.append(check)
        codes.append(_truth_code(node, check))
    line, column = _position(tree)
    if len(kept) == 1:
        code, bindings = codes[0]
        return _Node(kept[0], _BOOL, _NO_CONSTANT, line, column, None, code, bindings)
    joined = (" and " if is_and else " or ").join(code for code, _ in codes)
    bindings = tuple(pair for _, pairs in codes for pair in pairs)
    return _Node(_logic(kept, is_and), _BOOL, _NO_CONSTANT, line, column, None, f"({joined})", bindings)


def _logic(checks: Sequence[Evaluator], is_and: bool) -> Evaluator:
    if len(checks) == 2:
        a, b = checks
        if is_and:
            return lambda event: a(event) and b(event)
        return lambda event: a(event) or b(event)
    if len(checks) == 3:
        a, b, c = checks
        if is_and:
            return lambda event: a(event) and b(event) and c(event)
        return lambda event: a(event) or b(event) or c(event)
    checks = tuple(checks)
    if is_and:

        def all_of(event: Event) -> bool:
            for check in checks:  # noqa: SIM110 - a plain loop is faster than all() over a generator
                if not check(event):
                    return False
            return True

        return all_of

    def any_of(event: Event) -> bool:
        for check in checks:  # noqa: SIM110 - a plain loop is faster than any() over a generator
            if check(event):
                return True
        return False

    return any_of


def _path_equals_string(keys: tuple[str, ...] | None, constant: Any) -> Evaluator | None:
    """``path = 'text'`` for a path of one or two object keys, the most common condition, with
    the lookups inlined; None when it does not apply."""
    if keys is None or type(constant) is not str or any(key.isdigit() for key in keys[1:]):
        return None
    if len(keys) == 1:
        key = keys[0]
        return lambda event: event.get(key) == constant
    if len(keys) == 2:
        k0, k1 = keys

        def nested_equals(event: Event) -> bool:
            parent = event.get(k0)
            return type(parent) is dict and parent.get(k1) == constant

        return nested_equals
    return None


def _equals_constant(fn: Evaluator, constant: Any) -> Evaluator:
    kind = type(constant)
    if kind is str:
        return lambda event: fn(event) == constant  # only a str equals a str
    if constant is None:
        return lambda event: fn(event) is None
    if kind is bool:
        return lambda event: fn(event) is constant
    if kind is int or kind is float:

        def equals_number(event: Event) -> bool:
            value = fn(event)
            return type(value) in NUMBER_TYPES and value == constant

        return equals_number
    return lambda event: strict_equal(fn(event), constant)


_ORDER = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
_MIRROR = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "=": "=", "!=": "!="}


def _compile_compare(tree: Tree, depth: int) -> _Node:
    left_tree, _, right_tree = tree.children
    left = _compile(left_tree, depth + 1)
    right = _compile(right_tree, depth + 1)
    op = _token(tree, 1).value
    if left.is_const and not right.is_const:  # keep the constant on the right
        left, right, op = right, left, _MIRROR[op]
    a = left.fn
    b = right.fn
    fn: Evaluator
    source: tuple[str, Bindings] | None = None
    if op in ("=", "!="):
        if right.is_const:
            fn = _path_equals_string(left.keys, right.const) or _equals_constant(a, right.const)
            source = _equals_constant_code(left, right.const)
        else:
            fn = lambda event: strict_equal(a(event), b(event))  # noqa: E731
        if op == "!=":
            equals = fn
            fn = lambda event: not equals(event)  # noqa: E731
            if source is not None:
                source = (f"(not {source[0]})", source[1])
        return _folded(fn, _BOOL, (left, right), tree, source)
    order = _ORDER[op]
    if right.is_const and type(right.const) in NUMBER_TYPES:
        constant = right.const
        if op == "<":
            fn = lambda event: type(v := a(event)) in NUMBER_TYPES and v < constant  # noqa: E731
        elif op == "<=":
            fn = lambda event: type(v := a(event)) in NUMBER_TYPES and v <= constant  # noqa: E731
        elif op == ">":
            fn = lambda event: type(v := a(event)) in NUMBER_TYPES and v > constant  # noqa: E731
        else:
            fn = lambda event: type(v := a(event)) in NUMBER_TYPES and v >= constant  # noqa: E731
        value_code, bindings = _code(left)
        constant_code, constant_bindings = _literal(constant)
        value = _fresh("_v")
        source = (
            f"(type({value} := {value_code}) in _NUMBER_TYPES and {value} {op} {constant_code})",
            bindings + constant_bindings,
        )
    else:

        def fn(event: Event) -> bool:
            x = a(event)
            y = b(event)
            return type(x) in NUMBER_TYPES and type(y) in NUMBER_TYPES and order(x, y)

    return _folded(fn, _BOOL, (left, right), tree, source)


def _equals_constant_code(left: _Node, constant: Any) -> tuple[str, Bindings] | None:
    """Source for ``left = constant``, as :func:`_equals_constant` computes it."""
    value_code, bindings = _code(left)
    kind = type(constant)
    if kind is str:
        return f"({value_code} == {constant!r})", bindings
    if constant is None or kind is bool:
        return f"({value_code} is {constant!r})", bindings
    if kind is int or kind is float:
        constant_code, constant_bindings = _literal(constant)
        value = _fresh("_v")
        return (
            f"(type({value} := {value_code}) in _NUMBER_TYPES and {value} == {constant_code})",
            bindings + constant_bindings,
        )
    return None


def _in_constant_list(fn: Evaluator, items: list[Any]) -> Evaluator:
    strings = frozenset(item for item in items if type(item) is str)
    numbers = frozenset(item for item in items if type(item) in NUMBER_TYPES and item == item)
    bools = frozenset(item for item in items if type(item) is bool)
    has_null = any(item is None for item in items)
    others = tuple(item for item in items if type(item) in (list, dict))
    if not (numbers or bools or has_null or others):

        def in_strings(event: Event) -> bool:
            value = fn(event)
            return type(value) is str and value in strings

        return in_strings

    def in_list(event: Event) -> bool:
        value = fn(event)
        kind = type(value)
        if kind is str:
            return value in strings
        if kind is int or kind is float:
            return value in numbers
        if kind is bool:
            return value in bools
        if value is None:
            return has_null
        return any(strict_equal(value, other) for other in others)

    return in_list


def _compile_membership(tree: Tree, depth: int) -> _Node:
    left = _compile(tree.children[0], depth + 1)
    right = _compile(tree.children[1], depth + 1)
    if not right.types & {"list", "null"}:
        raise _error(right, f"the right side of 'in' must be a list, not a {_describe(right.types)}")
    a = left.fn
    b = right.fn
    fn: Evaluator
    source: tuple[str, Bindings] | None = None
    if right.is_const:
        fn = _in_constant_list(a, right.const) if right.const is not None else (lambda event: False)
        if right.const is None:
            source = ("False", ())
        elif all(type(item) is str for item in right.const):  # what _in_constant_list's in_strings does
            value_code, bindings = _code(left)
            strings, set_bindings = _bound(frozenset(right.const))
            value = _fresh("_v")
            source = (f"(type({value} := {value_code}) is str and {value} in {strings})", bindings + set_bindings)
    else:

        def fn(event: Event) -> bool:
            items = b(event)
            if type(items) is not list:
                return False
            value = a(event)
            return any(strict_equal(value, item) for item in items)

    return _folded(fn, _BOOL, (left, right), tree, source)


def _compile_call(tree: Tree, depth: int) -> _Node:
    name_token = _token(tree)
    name = name_token.value
    function = _FUNCTIONS.get(name)
    if function is None:
        known = ", ".join(sorted(_FUNCTIONS))
        raise _error(name_token, f"unknown function {name!r} (known: {known})")
    args = [_compile(child, depth + 1) for child in tree.children[1:]]
    if len(args) != function.arity:
        plural = "s" if function.arity > 1 else ""
        raise _error(name_token, f"{name}() takes {function.arity} argument{plural}, got {len(args)}")
    impl = function.impl
    fn: Evaluator
    if name == "match" and args[1].is_const and args[1].const is not None:
        pattern = args[1].const
        if type(pattern) is not str:
            raise _error(args[1], f"the pattern of match() must be a string, not a {type_name(pattern)}")
        try:
            matcher = text.compile_glob(pattern)
        except text.GlobError as error:
            raise _error(args[1], f"bad glob pattern {pattern!r}: {error}") from None
        a = args[0].fn

        def fn(event: Event) -> bool:
            value = a(event)
            return type(value) is str and matcher(value)

        value_code, bindings = _code(args[0])
        value = _fresh("_v")
        test = text.literal_glob_code(pattern, value)
        if test is None:
            test, matcher_bindings = _bound(matcher)
            test = f"{test}({value})"
            bindings += matcher_bindings
        source = (f"(type({value} := {value_code}) is str and {test})", bindings)
    else:
        if function.arity == 1:
            a = args[0].fn
            fn = lambda event: impl(a(event))  # noqa: E731
        else:
            a, b = args[0].fn, args[1].fn
            fn = lambda event: impl(a(event), b(event))  # noqa: E731
        source = _inline_call_code(name, args)
        if source is None:
            impl_name, bindings = _bound(impl)
            arg_codes = [_code(arg) for arg in args]
            source = (
                f"{impl_name}({', '.join(code for code, _ in arg_codes)})",
                bindings + tuple(pair for _, pairs in arg_codes for pair in pairs),
            )
    return _folded(fn, function.types, args, name_token, source)


def _inline_call_code(name: str, args: Sequence[_Node]) -> tuple[str, Bindings] | None:
    """Source computing what the function ``name`` computes of ``args``, without calling it,
    for the functions conditions use most (a call costs about what the rest of a condition
    does); None for the others."""
    value_code, bindings = _code(args[0])
    value = _fresh("_v")
    if name == "contains" and args[1].is_const and type(args[1].const) is str:  # _fn_contains
        return f"(type({value} := {value_code}) is str and {args[1].const!r} in {value})", bindings
    if name == "lowercase" or name == "uppercase":  # _string_function(str.lower / str.upper)
        method = "lower" if name == "lowercase" else "upper"
        return f"({value}.{method}() if type({value} := {value_code}) is str else None)", bindings
    if name == "length":  # _fn_length's common cases; it decides the others
        impl_name, impl_bindings = _bound(_fn_length)
        return (
            f"(len({value}) if type({value} := {value_code}) is list or (type({value}) is str and {value}.isascii())"
            f" else 0 if {value} is None else {impl_name}({value}))",
            bindings + impl_bindings,
        )
    return None


def _compile_list(tree: Tree, depth: int) -> _Node:
    items = [_compile(child, depth + 1) for child in tree.children[1:]]
    if not items:
        return _constant([], frozenset(("list",)), tree)
    fns = tuple(item.fn for item in items)
    return _folded(lambda event: [fn(event) for fn in fns], frozenset(("list",)), items, tree)


def _compile_negate(tree: Tree, depth: int) -> _Node:
    operand = _compile(tree.children[1], depth + 1)
    check = _truth(operand, "the operand of '!'")
    code, bindings = _truth_code(operand, check)
    return _folded(lambda event: not check(event), _BOOL, (operand,), _token(tree), (f"(not {code})", bindings))


def _number(raw: str) -> int | float:
    if re.fullmatch(r"[+-]?\d+", raw):
        return int(raw)
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _compile(tree: Tree, depth: int) -> _Node:
    if depth > MAX_DEPTH:
        raise _error(tree, f"the expression nests deeper than {MAX_DEPTH} levels")
    kind = tree.data
    if kind == "path":
        token = _token(tree)
        line, column = _position(token)
        keys = _split_path(token.value)
        getter = make_getter(keys)
        code, bindings = _path_code(keys, getter)
        return _Node(getter, _ANY, _NO_CONSTANT, line, column, keys, code, bindings)
    if kind == "string":
        return _constant(_unquote(_token(tree).value), frozenset(("string",)), tree)
    if kind == "number":
        token = _token(tree)
        try:
            return _constant(_number(token.value), frozenset(("number",)), tree)
        except ValueError:
            raise _error(token, f"number {token.value} is out of range") from None
    if kind == "true":
        return _constant(True, _BOOL, tree)
    if kind == "false":
        return _constant(False, _BOOL, tree)
    if kind == "null":
        return _constant(None, frozenset(("null",)), tree)
    if kind == "or_expr":
        return _compile_logic(tree, depth, is_and=False)
    if kind == "and_expr":
        return _compile_logic(tree, depth, is_and=True)
    if kind == "compare":
        return _compile_compare(tree, depth)
    if kind == "membership":
        return _compile_membership(tree, depth)
    if kind == "negate":
        return _compile_negate(tree, depth)
    if kind == "call":
        return _compile_call(tree, depth)
    if kind == "list":
        return _compile_list(tree, depth)
    raise AssertionError(f"unexpected FQL node {kind!r}")  # pragma: no cover - grammar and compiler disagree


def _end_position(source: str) -> tuple[int, int]:
    lines = source.split("\n")
    return len(lines), len(lines[-1]) + 1


def _expected(names: set[str] | frozenset[str] | None) -> str:
    if not names:
        return ""
    described = sorted({_TERMINALS.get(name, name) for name in names})
    return "; expected " + ", ".join(described)


def _parse(source: str) -> Tree:
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

    try:
        return _parser().parse(source)
    except UnexpectedCharacters as error:
        offset = error.pos_in_stream or 0
        char = source[offset] if offset < len(source) else ""
        if char in "'\"":
            reason = "unterminated string"
        elif char == "\\":
            reason = "a backslash must be followed by the character it escapes"
        else:
            reason = f"unexpected character {char!r}"
        raise FQLSyntaxError(reason, line=error.line, column=error.column) from None
    except UnexpectedToken as error:
        token = error.token
        if token.type == "$END":
            line, column = _end_position(source)
            reason = "unexpected end of expression" + _expected(error.expected)
        else:
            line, column = error.line, error.column
            reason = f"unexpected {token.value!r}" + _expected(error.expected)
        raise FQLSyntaxError(reason, line=line, column=column) from None
    except UnexpectedEOF as error:
        line, column = _end_position(source)
        raise FQLSyntaxError(
            "unexpected end of expression" + _expected(set(error.expected)), line=line, column=column
        ) from None
    except UnexpectedInput as error:  # pragma: no cover - the three above are all lark raises
        raise FQLSyntaxError(str(error), line=error.line, column=error.column) from None


@lru_cache(maxsize=1024)
def compile_expression(source: str, *, condition: bool = True) -> Program:
    """Parse and compile an FQL expression. Cached: the same text compiles once per process.

    Args:
        source: The expression. ``all`` (alone) is the match-all condition of the Public API.
        condition: Require an expression that can be a condition (refuse e.g. ``'text'`` or
            ``length(x)`` at the top); False accepts any value (``Program.evaluate``).

    Raises:
        FQLSyntaxError: the text is not valid FQL, with the column.
    """
    if source.strip() == "all":
        return Program(source, lambda event: True, lambda event: True)
    if not source.strip():
        raise FQLSyntaxError("empty expression", line=1, column=1)
    node = _compile(_parse(source), 0)
    evaluate = node.fn
    misses = None
    misses_code = None
    if condition:
        matches = _truth(node, "the expression")
        if not node.is_const:
            code, bindings = _truth_code(node, matches)
            compiled = _function(code, bindings)
            if compiled is not None:
                matches = compiled
                misses = _function(code, bindings, negate=True)
                if misses is not None:
                    misses_code = (f"not ({code})", _namespace(bindings))
    else:

        def matches(event: Event) -> bool:
            value = evaluate(event)
            if value is True:
                return True
            if value is False or value is None:
                return False
            raise FQLEvaluationError(f"the expression is a {type_name(value)}, not a bool")

    return Program(source, evaluate, matches, misses, misses_code)
