"""Built-in privacy matchers: Segment's default Privacy Portal list, plus IBAN.

Registered under the ``gateway`` entry-point group as ``builtin_matchers``; the core collects the
matchers through the ``gateway_matcher_types`` hook. See README.md for the key-matching rule.
"""

from __future__ import annotations

from gateway import MatcherType, hookimpl
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
