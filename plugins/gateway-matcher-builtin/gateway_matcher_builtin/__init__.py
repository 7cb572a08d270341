"""Built-in privacy matchers: Segment's default Privacy Portal list, plus IBAN.

Registered under the ``gateway`` entry-point group as ``builtin_matchers``; the core collects the
matchers through the ``gateway_matcher_types`` hook. See README.md for the key-matching rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gateway import CustomMatcher, MatcherType, hookimpl
from gateway_matcher_builtin.catalog import SPECS, KeyIndex, MatcherSpec, build_matchers
from gateway_matcher_builtin.similarity import (
    SIMILARITY_THRESHOLD,
    KeyMatch,
    KeyTerms,
    dice_coefficient,
    is_similar,
    key_similarity,
    normalize_key,
)
from gateway_matcher_builtin.values import normalize_email, normalize_phone

__all__ = [
    "SIMILARITY_THRESHOLD",
    "SPECS",
    "KeyIndex",
    "KeyMatch",
    "KeyTerms",
    "MatcherSpec",
    "build_matchers",
    "dice_coefficient",
    "gateway_custom_matcher",
    "gateway_matcher_types",
    "is_similar",
    "key_similarity",
    "normalize_email",
    "normalize_key",
    "normalize_phone",
]


@hookimpl
def gateway_matcher_types() -> list[MatcherType]:
    return build_matchers()


def _full_match(pattern: re.Pattern[str]) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return isinstance(value, str) and pattern.fullmatch(value) is not None

    return check


@hookimpl
def gateway_custom_matcher(name: str, config: CustomMatcher) -> MatcherType:
    """A ``[privacy.matchers.<name>]`` entry: its keys by Segment's rule (``exact`` after
    normalisation, or ``similar``), its ``pattern`` matching a whole string value."""
    return MatcherType(
        name=name,
        default_class=config.class_,
        match_key=KeyTerms(config.keys, similar=config.precision == "similar") if config.keys else None,
        match_value=_full_match(re.compile(config.pattern)) if config.pattern is not None else None,
        description="custom matcher from [privacy.matchers]",
    )
