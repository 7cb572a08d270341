"""The actions of a destination filter: sample, drop_properties, allow_properties.

Paths here (the sample ``path`` and the keys of a ``fields`` map) are plain dot-separated, like
Segment's (``context.traits``); ``""`` is the top level of the event. A numeric step indexes a
list, as in FQL paths.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway_filter_fql.fql import make_getter
from gateway_filter_fql.values import go_json

__all__ = [
    "FieldRule",
    "allow_fields",
    "compile_fields",
    "consistent_fraction",
    "drop_fields",
    "drop_items",
    "make_sampler",
    "split_field_path",
]

Event = dict[str, Any]
_MASK64 = (1 << 64) - 1


def split_field_path(path: str) -> tuple[str, ...]:
    """``"context.traits"`` -> ``("context", "traits")``; ``""`` -> ``()`` (the top level).

    Raises:
        ValueError: a step is empty (``"a..b"``, ``".a"``, ``"a."``).
    """
    if path == "":
        return ()
    keys = tuple(path.split("."))
    if any(key == "" for key in keys):
        raise ValueError(f"{path!r} is not a dot-separated path (an empty step)")
    return keys


def consistent_fraction(data: bytes) -> float:
    """Map bytes to a float in [0, 1], uniformly and deterministically: Segment's sampler (Go
    ``segmentio/sampler``, after Campbell's ``random_real``) with the MD5 digest as its random
    bits. The first 8 digest bytes (big-endian) are the significand; each leading zero bit lowers
    the exponent and pulls one bit in from the last 8 bytes; the lowest bit is set."""
    digest = hashlib.md5(data, usedforsecurity=False).digest()
    significand = int.from_bytes(digest[:8], "big")
    exponent = -64
    shift = 64 - significand.bit_length()
    if shift:
        exponent -= shift
        significand = ((significand << shift) & _MASK64) | (int.from_bytes(digest[8:], "big") >> (64 - shift))
    significand |= 1
    return math.ldexp(float(significand), exponent)


def make_sampler(percent: float, path: str | None) -> Callable[[Event], bool]:
    """A predicate: True keeps the event. ``percent`` is a fraction (0.1 keeps 10%). Without a
    ``path`` every event draws afresh; with one, the JSON encoding of the value at ``path`` decides,
    so one user (``path = "userId"``) is always in or always out. Events without the field all
    hash ``null`` and share one fate."""
    if percent <= 0:
        return lambda event: False
    if percent >= 1:
        return lambda event: True
    if path is None:
        draw = random.random
        return lambda event: draw() < percent
    get = make_getter(split_field_path(path))
    return lambda event: consistent_fraction(go_json(get(event))) < percent


#: (getter of the parent, the keys named for it)
FieldRule = tuple[Callable[[Event], Any], frozenset[str]]


def _top_level(event: Event) -> Event:
    return event


def compile_fields(fields: Mapping[str, Sequence[str]]) -> tuple[FieldRule, ...]:
    """Turn a ``fields`` map (``{"properties": ["email"], "": ["userId"]}``) into rules.

    Raises:
        ValueError: a key is not a dot-separated path.
    """
    rules = []
    for parent, names in fields.items():
        keys = split_field_path(parent)
        rules.append((make_getter(keys) if keys else _top_level, frozenset(names)))
    return tuple(rules)


def drop_fields(event: Event, rules: Sequence[FieldRule]) -> None:
    """Delete the named keys of each parent (of each element, when the parent is a list)."""
    for get, names in rules:
        parent = get(event)
        if type(parent) is dict:
            for name in names:
                parent.pop(name, None)
        elif type(parent) is list:
            drop_items(parent, names)


def drop_items(parent: list[Any], names: frozenset[str]) -> None:
    """Delete the named keys of each element of ``parent`` that is an object."""
    for item in parent:
        if type(item) is dict:
            for name in names:
                item.pop(name, None)


def _keep_only(target: dict[str, Any], names: frozenset[str]) -> None:
    for key in [key for key in target if key not in names]:
        del target[key]


def allow_fields(event: Event, rules: Sequence[FieldRule]) -> None:
    """Delete every key of each parent (of each element, when it is a list) but the named ones.
    Parents not named are left alone."""
    for get, names in rules:
        parent = get(event)
        if type(parent) is dict:
            _keep_only(parent, names)
        elif type(parent) is list:
            for item in parent:
                if type(item) is dict:
                    _keep_only(item, names)
