"""A quick validity check compiled from a rule's JSON Schema, tried before fastjsonschema.

Nearly every event on the hot path is valid. fastjsonschema's generated code still pays, on each
valid event, for bookkeeping it only needs to report errors (a key set per object, one removal per
known key, ``isinstance`` tuples). The quick check is plain Python generated once per rule that
only answers "valid?", with one dict lookup per declared key.

It is conservative: True means fastjsonschema finds no error, False means "not sure" and the
caller asks fastjsonschema, which names the errors. So it only understands keywords whose meaning
it mirrors exactly, only exact JSON types (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``,
``None``: anything else is "not sure"), and it may be stricter than the schema (an integer given as
``3.0`` is "not sure"). A schema with any other keyword (``format``, ``$ref``, ``oneOf``, ``not``,
``patternProperties`` ...) gets no quick check at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["compile_all_of", "compile_quick_check"]

QuickCheck = Callable[[Any], bool]

#: Keywords that do not constrain a value (fastjsonschema ignores them too; ``default`` because
#: plans are compiled with ``use_default=False``).
_ANNOTATIONS = frozenset(("title", "description", "$comment", "examples", "default", "$id"))
_OBJECT = frozenset(("properties", "required", "additionalProperties"))
_STRING = frozenset(("minLength", "maxLength", "pattern"))
_NUMBER = frozenset(("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))
_ARRAY = frozenset(("items", "minItems", "maxItems"))
_OTHER = frozenset(("type", "enum", "const", "anyOf", "allOf"))
_SUPPORTED = _ANNOTATIONS | _OBJECT | _STRING | _NUMBER | _ARRAY | _OTHER

#: JSON Schema type -> the exact Python types of its values (``bool`` is not an ``int`` here:
#: ``type(True) is bool``; ``3.0`` is not an integer: "not sure").
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}
_BOUNDS = {"minimum": "<", "maximum": ">", "exclusiveMinimum": "<=", "exclusiveMaximum": ">="}


class _Unsupported(Exception):
    """The schema uses something the quick check does not mirror."""


def compile_quick_check(schema: Any, regexes: Mapping[str, re.Pattern[str]]) -> QuickCheck | None:
    """A function that returns True only for messages valid against ``schema``, or None when the
    schema uses anything the quick check does not mirror.

    Args:
        schema: The rule's JSON Schema, already accepted by fastjsonschema.
        regexes: fastjsonschema's compiled ``pattern`` regexes by pattern text, so that a pattern
            means exactly what it means there; a pattern missing here gets no quick check.
    """
    return compile_all_of([schema], regexes)


def compile_all_of(
    schemas: Sequence[Any], regexes: Mapping[str, re.Pattern[str]], *, count_keys_of: Any = None
) -> QuickCheck | None:
    """One function that returns True only for messages valid against every schema of
    ``schemas`` (a rule and the plan's COMMON rule: a filter's fast pass), or None when one of
    them uses anything the quick check does not mirror.

    Args:
        schemas: JSON Schemas, each already accepted by fastjsonschema.
        regexes: The ``pattern`` regexes of all of them, by pattern text.
        count_keys_of: A sub-schema (the object itself, as found in one of ``schemas``) whose
            object must also hold no key its ``properties`` do not declare: the function counts
            the declared keys present where it checks them, and returns False ("not sure")
            when the object has others, or when the sub-schema is not where the check reaches.
    """
    writer = _Writer(regexes, count_keys_of)
    body: list[str] = []
    try:
        for schema in schemas:
            if isinstance(schema, dict) and "draft-04" in str(schema.get("$schema", "")):
                return None  # draft-04 numbers and integers differ; such plans are rare
            root = dict(schema) if isinstance(schema, dict) else schema
            if isinstance(root, dict):
                root.pop("$schema", None)
            writer.emit(root, "v", body, "    ")
    except _Unsupported:
        return None
    if count_keys_of is not None and not writer.counted:
        return None
    name = writer._name("_check")
    writer.lines += [f"def {name}(v):", *body, "    return True", ""]
    namespace = writer.namespace
    # Only our own code: values from the plan enter it as repr() of a str, as an int checked to be
    # one, or as a name bound in ``namespace``.
    exec(compile("\n".join(writer.lines), "<tracking plan quick check>", "exec"), namespace)
    check: QuickCheck = namespace[name]
    return check


class _Writer:
    """Python source for the checks: one function per schema that needs its own (the root,
    ``items``, ``anyOf`` branches); ``properties`` are inlined with a local per value."""

    def __init__(self, regexes: Mapping[str, re.Pattern[str]], count_keys_of: Any = None) -> None:
        self.regexes = regexes
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {"_MISSING": object(), "_JSON_TYPES": frozenset(_JSON_TYPES)}
        self._count = 0
        self._count_keys_of = count_keys_of
        #: Whether the key count of ``count_keys_of`` was written (in the root function: not
        #: in an ``anyOf`` branch, where a False would only reject that branch).
        self.counted = False
        self._depth = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def constant(self, value: Any) -> str:
        name = self._name("_c")
        self.namespace[name] = value
        return name

    def function(self, schema: Any) -> str:
        body: list[str] = []
        self._depth += 1
        try:
            self.emit(schema, "v", body, "    ")
        finally:
            self._depth -= 1
        name = self._name("_check")
        self.lines += [f"def {name}(v):", *body, "    return True", ""]
        return name

    def emit(self, schema: Any, v: str, out: list[str], indent: str) -> None:
        """Lines that ``return False`` unless ``v`` is valid against ``schema``."""
        if schema is True:
            return
        if not isinstance(schema, dict) or set(schema) - _SUPPORTED:
            raise _Unsupported
        if not schema.keys() - _ANNOTATIONS:
            return  # {} accepts anything
        types = schema.get("type")
        if types is None:
            if "enum" not in schema and "const" not in schema:  # (those admit only exact strings)
                out.append(f"{indent}if type({v}) not in _JSON_TYPES: return False")
            kinds = None
        else:
            kinds = [types] if isinstance(types, str) else types
            if not isinstance(kinds, list) or not kinds or any(kind not in _PYTHON_TYPES for kind in kinds):
                raise _Unsupported
            exact = {python for kind in kinds for python in _PYTHON_TYPES[kind]}
            if len(exact) == 1:
                test = f"type({v}) is {self.constant(exact.pop())}"
            else:
                test = f"type({v}) in {self.constant(frozenset(exact))}"
            out.append(f"{indent}if not ({test}): return False")
        if "enum" in schema:
            self._enum(schema["enum"], v, out, indent)
        if "const" in schema:
            self._enum([schema["const"]], v, out, indent)
        for keyword in ("anyOf", "allOf"):
            if keyword in schema:
                branches = schema[keyword]
                if not isinstance(branches, list) or not branches:
                    raise _Unsupported
                if keyword == "allOf":
                    for branch in branches:
                        self.emit(branch, v, out, indent)
                else:
                    tests = " or ".join(self._branch(branch, v) for branch in branches)
                    out.append(f"{indent}if not ({tests}): return False")
        self._guarded(schema, kinds, "object", _OBJECT, f"type({v}) is dict", self._object, v, out, indent)
        self._guarded(schema, kinds, "string", _STRING, f"type({v}) is str", self._string, v, out, indent)
        self._guarded(
            schema, kinds, "number", _NUMBER, f"(type({v}) is int or type({v}) is float)", self._number, v, out, indent
        )
        self._guarded(schema, kinds, "array", _ARRAY, f"type({v}) is list", self._array, v, out, indent)

    def _branch(self, schema: Any, v: str) -> str:
        """An ``anyOf`` branch as an expression of ``v``: a call to its own function, or for a
        branch that only names required keys (COMMON's "userId or anonymousId") the test
        :meth:`emit` would write, inline (a call costs more than the test)."""
        required = schema.get("required") if isinstance(schema, dict) else None
        if (
            isinstance(required, list)
            and required
            and all(type(key) is str for key in required)
            and not schema.keys() - _ANNOTATIONS - {"required"}
        ):
            present = " and ".join(f"{key!r} in {v}" for key in required)
            return f"(type({v}) in _JSON_TYPES and (type({v}) is not dict or ({present})))"
        return f"{self.function(schema)}({v})"

    def _guarded(
        self,
        schema: dict[str, Any],
        kinds: list[str] | None,
        kind: str,
        keywords: frozenset[str],
        test: str,
        emit: Callable[[dict[str, Any], str, list[str], str], None],
        v: str,
        out: list[str],
        indent: str,
    ) -> None:
        """Keywords of one JSON type apply only to values of that type: under an ``if`` unless
        ``type`` already allows nothing else."""
        if not keywords & schema.keys():
            return
        only = kinds == [kind] or (kind == "number" and kinds is not None and set(kinds) <= {"number", "integer"})
        if only:
            emit(schema, v, out, indent)
            return
        inner: list[str] = []
        emit(schema, v, inner, indent + "    ")
        if inner:
            out.append(f"{indent}if {test}:")
            out.extend(inner)

    def _enum(self, values: Any, v: str, out: list[str], indent: str) -> None:
        if not isinstance(values, list) or not values or any(type(value) is not str for value in values):
            raise _Unsupported
        out.append(f"{indent}if not (type({v}) is str and {v} in {self.constant(frozenset(values))}): return False")

    def _object(self, schema: dict[str, Any], v: str, out: list[str], indent: str) -> None:
        required = schema.get("required", [])
        if not isinstance(required, list) or any(type(key) is not str for key in required):
            raise _Unsupported
        if required:
            present = " and ".join(f"{key!r} in {v}" for key in required)
            out.append(f"{indent}if not ({present}): return False")
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise _Unsupported
        extra = schema.get("additionalProperties", True)
        if extra is False:
            out.append(f"{indent}if not {v}.keys() <= {self.constant(frozenset(properties))}: return False")
        elif extra is not True:
            raise _Unsupported
        # Counting the declared keys present costs one addition per optional one, where a key
        # set comparison costs a lookup per key of the object again.
        counter = self._name("n") if schema is self._count_keys_of and not self._depth else None
        if counter is not None:
            out.append(f"{indent}{counter} = {len(set(required) & properties.keys())}")
        for key, subschema in properties.items():
            value = self._name("v")
            if key in required:  # present: checked above
                inner: list[str] = []
                self.emit(subschema, value, inner, indent)
                if inner:
                    out.append(f"{indent}{value} = {v}[{key!r}]")
                    out.extend(inner)
                continue
            inner = []
            self.emit(subschema, value, inner, indent + "    ")
            if counter is not None:
                inner.insert(0, f"{indent}    {counter} += 1")
            if inner:
                out.append(f"{indent}{value} = {v}.get({key!r}, _MISSING)")
                out.append(f"{indent}if {value} is not _MISSING:")
                out.extend(inner)
        if counter is not None:
            out.append(f"{indent}if len({v}) != {counter}: return False")
            self.counted = True

    def _string(self, schema: dict[str, Any], v: str, out: list[str], indent: str) -> None:
        for keyword, fails in (("minLength", "<"), ("maxLength", ">")):
            if keyword in schema:
                limit = schema[keyword]
                if type(limit) is not int:
                    raise _Unsupported
                out.append(f"{indent}if len({v}) {fails} {limit}: return False")
        if "pattern" in schema:
            regex = self.regexes.get(schema["pattern"]) if isinstance(schema["pattern"], str) else None
            if regex is None:
                raise _Unsupported
            out.append(f"{indent}if not {self.constant(regex)}.search({v}): return False")

    def _number(self, schema: dict[str, Any], v: str, out: list[str], indent: str) -> None:
        for keyword, fails in _BOUNDS.items():
            if keyword in schema:
                limit = schema[keyword]
                if type(limit) is not int and type(limit) is not float:
                    raise _Unsupported
                # Written as "not (value passes)" so that NaN is "not sure", never "valid".
                passes = {"<": ">=", ">": "<=", "<=": ">", ">=": "<"}[fails]
                out.append(f"{indent}if not ({v} {passes} {self.constant(limit)}): return False")

    def _array(self, schema: dict[str, Any], v: str, out: list[str], indent: str) -> None:
        for keyword, fails in (("minItems", "<"), ("maxItems", ">")):
            if keyword in schema:
                limit = schema[keyword]
                if type(limit) is not int:
                    raise _Unsupported
                out.append(f"{indent}if len({v}) {fails} {limit}: return False")
        if "items" in schema:
            items = schema["items"]
            if isinstance(items, list):
                raise _Unsupported  # tuple validation
            inner: list[str] = []
            item = self._name("v")
            self.emit(items, item, inner, indent + "    ")
            if inner:
                out.append(f"{indent}for {item} in {v}:")
                out.extend(inner)


_JSON_TYPES = (dict, list, str, int, float, bool, type(None))
