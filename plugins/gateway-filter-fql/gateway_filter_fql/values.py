"""FQL's view of JSON values: type names, strict equality, and Go-compatible JSON text.

Events are decoded JSON, so a value is one of ``None``, ``bool``, ``int``, ``float``, ``str``,
``list`` or ``dict``. Python's ``bool`` is an ``int`` and ``1 == True``; FQL is strict about
types, so every comparison here checks the type first.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

#: The Python types FQL calls ``number`` (``bool`` deliberately not among them).
NUMBER_TYPES = frozenset((int, float))

_TYPE_NAMES: dict[type, str] = {
    str: "string",
    int: "number",
    float: "number",
    bool: "bool",
    type(None): "null",
    list: "list",
    dict: "object",
}

_encode = msgspec.json.encode
# Go's encoding/json escapes these inside strings (HTML safety, JS line terminators); msgspec
# writes them raw. They can only occur inside strings, so a byte replace is exact.
_GO_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


def type_name(value: Any) -> str:
    """The FQL type of a value: string, number, bool, null, list or object."""
    return _TYPE_NAMES.get(type(value), "object")


def strict_equal(a: Any, b: Any) -> bool:
    """FQL ``=``: same type and same value. Numbers compare by value (``1 = 1.0``), lists
    element by element, objects key by key *in order* (Segment compares serialised forms, so
    key order is significant)."""
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta is list:
            return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
        if ta is dict:
            return len(a) == len(b) and all(
                ka == kb and strict_equal(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
            )
        return bool(a == b)
    if ta in NUMBER_TYPES and tb in NUMBER_TYPES:
        return bool(a == b)
    return False


def format_number(number: int | float) -> str:
    """A number as Go's ``encoding/json`` writes a float64: ``42`` not ``42.0``, plain digits
    between 1e-6 and 1e21, ``1e+21`` / ``1e-7`` style outside."""
    if type(number) is int and abs(number) < 2**53:
        return str(number)
    try:
        value = float(number)
    except OverflowError:  # an integer beyond float64 (Go could not have decoded it either)
        return str(number)
    if value != value or value in (float("inf"), float("-inf")):
        return "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
    magnitude = abs(value)
    if magnitude == 0:
        return "0" if str(value)[0] != "-" else "-0"
    if 1e-6 <= magnitude < 1e21:
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    text = repr(value)  # shortest round-trip digits, exponent form here
    mantissa, _, exponent = text.partition("e")
    sign = exponent[0] if exponent[0] in "+-" else "+"
    digits = exponent.lstrip("+-").lstrip("0") or "0"
    return f"{mantissa}e{sign}{digits}"


def go_json(value: Any) -> bytes:
    """``value`` encoded the way Go's ``json.Marshal`` encodes the same decoded JSON: compact,
    object keys sorted, numbers as float64, ``<``, ``>``, ``&``, U+2028 and U+2029 escaped.

    This is the input of the deterministic sampler, which must agree with Segment's Go one.
    """
    kind = type(value)
    if kind is str:
        data = _encode(value)
        for raw, escaped in _GO_ESCAPES:
            if raw in data:
                data = data.replace(raw, escaped)
        return data
    if value is None or kind is bool:
        return _encode(value)
    if kind is int or kind is float:
        return format_number(value).encode()
    if kind is list:
        return b"[" + b",".join(go_json(item) for item in value) + b"]"
    if kind is dict:
        return b"{" + b",".join(go_json(str(key)) + b":" + go_json(value[key]) for key in sorted(value, key=str)) + b"}"
    return go_json(str(value))
