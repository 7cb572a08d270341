"""The privacy matcher contract: what a matcher type provides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MatcherType:
    """A kind of privacy matcher: recognises personal data by key name or by value.

    Attributes:
        name: The matcher's name, e.g. ``email``.
        default_class: ``red``, ``yellow`` or ``green``: the class of a field it matches.
        match_key: ``match_key(key)`` is true when a field's name identifies this data; None
            for a matcher that goes by value only.
        match_value: ``match_value(value)`` is true when a value has this data's shape.
        description: One line for ``gateway plugins``.
    """

    name: str
    default_class: str
    match_key: Callable[[str], bool] | None
    match_value: Callable[[Any], bool] | None = None
    description: str = ""
